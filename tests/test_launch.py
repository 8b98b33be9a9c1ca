"""Tests of launch/tpu_vm.sh, the Cloud TPU VM launcher, against a fake gcloud."""
import json
import os
import pathlib
import shlex
import shutil
import socket
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU_VM = REPO / "launch" / "tpu_vm.sh"
BASH = shutil.which("bash")
LIBTPU_URL = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"


# ---- tpu_vm.sh ------------------------------------------------------------------------------

FAKE_GCLOUD = """#!{python}
import json, os, sys
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
  f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def gcloud(tmp_path, monkeypatch):
  """Puts a fake gcloud first on PATH; returns a function giving the recorded calls."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  fake = bin_dir / "gcloud"
  fake.write_text(FAKE_GCLOUD.format(python=sys.executable))
  fake.chmod(0o755)
  log = tmp_path / "gcloud_calls.jsonl"
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  monkeypatch.setenv("FAKE_GCLOUD_LOG", str(log))

  def calls():
    if not log.exists():
      return []
    return [json.loads(line) for line in log.read_text().splitlines()]

  return calls


def tpu_vm(*args, env=None):
  return subprocess.run([BASH, str(TPU_VM), *args], capture_output=True, text=True,
                        env=env, timeout=60)


def test_create(gcloud):
  r = tpu_vm("create", "--name", "my-tpu", "--zone", "us-central2-b", "--type", "v4-32",
             "--project", "proj")
  assert r.returncode == 0, r.stderr
  assert gcloud() == [[
      "compute", "tpus", "tpu-vm", "create", "my-tpu", "--zone=us-central2-b",
      "--project=proj", "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base"
  ]]
  assert "+ gcloud compute tpus tpu-vm create my-tpu" in r.stdout


# The Cloud TPU software versions by family (Cloud TPU docs, "TPU software versions").
RUNTIMES = {"v2-8": "tpu-ubuntu2204-base", "v3-32": "tpu-ubuntu2204-base",
            "v4-32": "tpu-ubuntu2204-base", "v5litepod-16": "v2-alpha-tpuv5-lite",
            "v5e-8": "v2-alpha-tpuv5-lite", "v5p-128": "v2-alpha-tpuv5",
            "v6e-64": "v2-alpha-tpuv6e"}


def test_runtime_version_follows_the_accelerator_type(gcloud):
  for accelerator, runtime in RUNTIMES.items():
    assert tpu_vm("create", "--name=t", "--zone=z", f"--type={accelerator}").returncode == 0
  assert [c[-1] for c in gcloud()] == [f"--version={v}" for v in RUNTIMES.values()]
  # --version overrides the mapping; an unknown family needs it.
  assert tpu_vm("create", "--name=t", "--zone=z", "--type=v5p-8",
                "--version=v2-alpha-tpuv5-custom").returncode == 0
  assert gcloud()[-1][-1] == "--version=v2-alpha-tpuv5-custom"
  r = tpu_vm("create", "--name=t", "--zone=z", "--type=v9-8")
  assert r.returncode != 0 and "--version" in r.stderr
  assert len(gcloud()) == len(RUNTIMES) + 1


def test_spot_goes_through_a_queued_resource(gcloud):
  sa = "runner@proj.iam.gserviceaccount.com"
  r = tpu_vm("create", "--name", "t", "--zone", "z", "--type", "v5litepod-16", "--spot",
             "--service-account", sa)
  assert r.returncode == 0, r.stderr
  assert tpu_vm("create", "--name=q", "--zone=z", "--type=v6e-8", "--queued",
                f"--service-account={sa}", "--scopes=a,b").returncode == 0
  assert tpu_vm("delete", "--name=t", "--zone=z", "--spot").returncode == 0
  assert tpu_vm("delete", "--name=q", "--zone=z", "--queued", "--project=p").returncode == 0
  assert gcloud() == [
      ["compute", "tpus", "queued-resources", "create", "t", "--node-id=t", "--zone=z",
       "--accelerator-type=v5litepod-16", "--runtime-version=v2-alpha-tpuv5-lite", "--spot",
       f"--service-account={sa}", "--scopes=https://www.googleapis.com/auth/cloud-platform"],
      ["compute", "tpus", "queued-resources", "create", "q", "--node-id=q", "--zone=z",
       "--accelerator-type=v6e-8", "--runtime-version=v2-alpha-tpuv6e",
       f"--service-account={sa}", "--scopes=a,b"],
      ["compute", "tpus", "queued-resources", "delete", "t", "--zone=z", "--force", "--quiet"],
      ["compute", "tpus", "queued-resources", "delete", "q", "--zone=z", "--project=p",
       "--force", "--quiet"],
  ]
  assert "queued-resources describe t" in r.stdout
  # A plain TPU VM with a service account; --scopes alone and --preemptible in a queue are refused.
  assert tpu_vm("create", "--name=t", "--zone=z", "--type=v4-8",
                f"--service-account={sa}").returncode == 0
  assert gcloud()[-1][3] == "create" and gcloud()[-1][2] == "tpu-vm"
  assert gcloud()[-1][-2:] == [f"--service-account={sa}",
                               "--scopes=https://www.googleapis.com/auth/cloud-platform"]
  r = tpu_vm("create", "--name=t", "--zone=z", "--type=v4-8", "--scopes=x")
  assert r.returncode != 0 and "--service-account" in r.stderr
  r = tpu_vm("create", "--name=t", "--zone=z", "--type=v4-8", "--queued", "--preemptible")
  assert r.returncode != 0 and "--spot" in r.stderr
  assert len(gcloud()) == 5


def test_create_preemptible_and_version(gcloud):
  r = tpu_vm("create", "--name=t", "--zone=z", "--type=v4-8", "--version=v2-alpha",
             "--preemptible")
  assert r.returncode == 0, r.stderr
  assert gcloud() == [[
      "compute", "tpus", "tpu-vm", "create", "t", "--zone=z", "--accelerator-type=v4-8",
      "--version=v2-alpha", "--preemptible"
  ]]
  r = tpu_vm("create", "--name=t", "--zone=z", "--type=v4-8", "--spot", "--preemptible")
  assert r.returncode != 0 and "exclusive" in r.stderr


def test_install_from_local_checkout(gcloud):
  r = tpu_vm("install", "--name", "t", "--zone", "z")
  assert r.returncode == 0, r.stderr
  calls = gcloud()
  assert len(calls) == 4
  scp, unpack, venv, pip = calls
  assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"]
  assert scp[4].endswith("medssl-jax.tar.gz") and scp[5] == "t:~/"
  assert "--worker=all" in scp and "--zone=z" in scp
  assert unpack[:5] == ["compute", "tpus", "tpu-vm", "ssh", "t"]
  assert "--worker=all" in unpack
  assert "tar -xzf medssl-jax.tar.gz -C medssl-jax" in unpack[-1]
  assert pip[:-1] == ["compute", "tpus", "tpu-vm", "ssh", "t", "--zone=z", "--worker=all",
                      "--command"]
  # A Python 3.12 environment from uv (the image's python3 is 3.10), the repo installed into it.
  assert venv[-1] == ("python3 -m pip install --user --upgrade uv && rm -rf ~/medssl-venv && "
                      "~/.local/bin/uv venv --seed --python 3.12 ~/medssl-venv")
  assert pip[-1] == ("cd medssl-jax && ~/medssl-venv/bin/python -m pip install -e . 'jax[tpu]' -f "
                     f"{LIBTPU_URL}")
  assert "+ tar -czf" in r.stdout


def test_install_from_git(gcloud):
  r = tpu_vm("install", "--name", "t", "--zone", "z", "--project", "p", "--repo",
             "https://github.com/org/medssl-jax.git", "--branch", "dev")
  assert r.returncode == 0, r.stderr
  clone, venv, pip = gcloud()
  prefix = ["compute", "tpus", "tpu-vm", "ssh", "t", "--zone=z", "--project=p",
            "--worker=all", "--command"]
  assert clone[:-1] == prefix and venv[:-1] == prefix and pip[:-1] == prefix
  assert clone[-1] == ("rm -rf medssl-jax && git clone --branch dev "
                       "https://github.com/org/medssl-jax.git medssl-jax")
  assert "uv venv --seed --python 3.12 ~/medssl-venv" in venv[-1]
  assert "~/medssl-venv/bin/python -m pip install -e . 'jax[tpu]'" in pip[-1]
  assert tpu_vm("install", "--name=t", "--zone=z", "--repo=https://x/y.git",
                "--python-version=3.13").returncode == 0
  assert "uv venv --seed --python 3.13 ~/medssl-venv" in gcloud()[-2][-1]


def test_install_branch_with_local_path_fails(gcloud):
  r = tpu_vm("install", "--name", "t", "--zone", "z", "--repo", str(REPO), "--branch", "x")
  assert r.returncode != 0 and "--branch" in r.stderr
  assert gcloud() == []


def test_run(gcloud):
  r = tpu_vm("run", "--name", "t", "--zone", "z", "--config", "configs/base.py:simclr",
             "--workdir", "gs://bucket/dir", "--", "--config.train.num_steps=100",
             "--config.data.path=a b")
  assert r.returncode == 0, r.stderr
  [call] = gcloud()
  assert call[:-1] == ["compute", "tpus", "tpu-vm", "ssh", "t", "--zone=z", "--worker=all",
                       "--command"]
  words = shlex.split(call[-1])
  assert words[:6] == ["cd", "medssl-jax", "&&", "nohup", "bash", "-c"]
  assert words[7:] == [">", "/dev/null", "2>&1", "<", "/dev/null", "&"]
  script = words[6]  # what runs on each worker
  assert ("~/medssl-venv/bin/python -m medssl_jax train --multihost --config=configs/base.py:simclr "
          "--workdir=gs://bucket/dir --config.train.num_steps=100 "
          "'--config.data.path=a b' > ~/run.log 2>&1") in script
  assert "gcloud storage cp ~/run.log gs://bucket/dir/logs/$(hostname).log" in script
  assert "warning" not in r.stderr


def test_run_script_copies_the_log_into_the_workdir(gcloud, tmp_path):
  """The worker-side script, run here: training's output lands in ~/run.log and in
  <workdir>/logs/<hostname>.log, and the script exits with training's exit code."""
  workdir = tmp_path / "work dir"
  assert tpu_vm("run", "--name=t", "--zone=z", "--config=c.py", f"--workdir={workdir}", "--",
                "--config.x=1").returncode == 0
  script = shlex.split(gcloud()[0][-1])[6]
  home = tmp_path / "home"
  python = home / "medssl-venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text("#!/bin/sh\necho trained \"$@\"\necho oops >&2\nexit 3\n")
  python.chmod(0o755)
  with open(tmp_path / "out.txt", "w") as out:  # not a pipe: the sync loop's sleep may outlive bash
    code = subprocess.run([BASH, "-c", script], env=dict(os.environ, HOME=str(home)), cwd=tmp_path,
                          stdout=out, stderr=subprocess.STDOUT, timeout=60).returncode
  assert code == 3
  log = (home / "run.log").read_text()
  assert log.startswith("trained -m medssl_jax train --multihost --config=c.py") and "oops" in log
  assert f"--workdir={workdir} --config.x=1" in log
  assert (workdir / "logs" / f"{socket.gethostname()}.log").read_text() == log


def test_run_warns_on_local_workdir_for_multi_host(gcloud):
  r = tpu_vm("run", "--name", "t", "--zone", "z", "--type", "v4-32", "--config",
             "configs/base.py", "--workdir", "/tmp/run1")
  assert r.returncode == 0, r.stderr
  assert "multi-host" in r.stderr and "gs://" in r.stderr
  assert len(gcloud()) == 1


def test_run_needs_config_and_workdir(gcloud):
  r = tpu_vm("run", "--name", "t", "--zone", "z", "--workdir", "gs://b/d")
  assert r.returncode != 0 and "--config" in r.stderr
  r = tpu_vm("run", "--name", "t", "--zone", "z", "--config", "configs/base.py")
  assert r.returncode != 0 and "--workdir" in r.stderr
  assert gcloud() == []


def test_logs_and_delete(gcloud):
  assert tpu_vm("logs", "--name", "t", "--zone", "z").returncode == 0
  assert tpu_vm("logs", "--name", "t", "--zone", "z", "--worker", "2").returncode == 0
  assert tpu_vm("delete", "--name", "t", "--zone", "z", "--project", "p").returncode == 0
  assert gcloud() == [
      ["compute", "tpus", "tpu-vm", "ssh", "t", "--zone=z", "--worker=0", "--command",
       "tail -f ~/run.log"],
      ["compute", "tpus", "tpu-vm", "ssh", "t", "--zone=z", "--worker=2", "--command",
       "tail -f ~/run.log"],
      ["compute", "tpus", "tpu-vm", "delete", "t", "--zone=z", "--project=p", "--quiet"],
  ]


def test_tensorboard_dry_run(gcloud):
  r = tpu_vm("--dry-run", "tensorboard", "--workdir", "gs://b/d", "--port", "7007")
  assert r.returncode == 0, r.stderr
  assert "+ tensorboard --logdir gs://b/d --port 7007" in r.stdout
  assert "http://localhost:7007/" in r.stdout


def test_missing_gcloud(tmp_path):
  empty = tmp_path / "empty_bin"
  empty.mkdir()
  r = tpu_vm("delete", "--name", "t", "--zone", "z", env={"PATH": str(empty)})
  assert r.returncode != 0
  assert "gcloud" in r.stderr and "not found" in r.stderr


def test_missing_zone(gcloud):
  r = tpu_vm("create", "--name", "t", "--type", "v4-32")
  assert r.returncode != 0 and "--zone" in r.stderr
  r = tpu_vm("delete", "--name", "t")
  assert r.returncode != 0 and "--zone" in r.stderr
  assert gcloud() == []


def test_dry_run_records_nothing(gcloud):
  for args in (["create", "--name", "t", "--zone", "z", "--type", "v4-32"],
               ["install", "--name", "t", "--zone", "z"],
               ["run", "--name", "t", "--zone", "z", "--config", "c.py", "--workdir",
                "gs://b/d"], ["logs", "--name", "t", "--zone", "z"],
               ["delete", "--name", "t", "--zone", "z"]):
    r = tpu_vm(*args, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "+ gcloud compute tpus tpu-vm" in r.stdout
  assert gcloud() == []


def test_help_and_bad_usage():
  r = tpu_vm("help")
  assert r.returncode == 0
  for sub in ("create", "install", "run", "logs", "tensorboard", "delete"):
    assert f"bash launch/tpu_vm.sh {sub} " in r.stdout
  assert tpu_vm().returncode != 0
  r = tpu_vm("frobnicate")
  assert r.returncode != 0 and "unknown subcommand" in r.stderr
  r = tpu_vm("create", "--name", "t", "--zone", "z", "--type", "v4-8", "--colour", "x")
  assert r.returncode != 0 and "unknown option --colour" in r.stderr
