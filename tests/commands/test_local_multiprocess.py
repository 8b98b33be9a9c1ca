"""medssl-jax local-multiprocess: N local processes as N hosts."""
import io
import pathlib
import subprocess
import sys

import pytest

from medssl_jax.commands import local_multiprocess

REPO = pathlib.Path(__file__).resolve().parents[2]


FAKE_MAIN = """
import os, sys, time
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
print("pid", flags["process_id"], "of", flags["num_processes"],
      "coord", flags["coordinator_address"], "xla", os.environ["XLA_FLAGS"],
      "platform", os.environ["JAX_PLATFORMS"], "extra", flags.get("config.x"))
if flags.get("fail_id") == flags["process_id"]:
  sys.exit(3)
if flags.get("sleep"):
  time.sleep(float(flags["sleep"]))
"""


@pytest.fixture
def fake_modules(tmp_path, monkeypatch):
  """Writes fake_main.py (and friends) in tmp_path and puts it on PYTHONPATH."""
  (tmp_path / "fake_main.py").write_text(FAKE_MAIN)
  monkeypatch.setenv("PYTHONPATH", str(tmp_path))
  return tmp_path


def test_local_multiprocess_runs_all(fake_modules):
  out = io.StringIO()
  code = local_multiprocess.launch(["--config.x=7"], num_processes=2, devices_per_process=4,
                                   port=0, module="fake_main", out=out)
  text = out.getvalue()
  assert code == 0, text
  for i in range(2):
    [line] = [l for l in text.splitlines() if l.startswith(f"[p{i}] pid")]
    assert f"pid {i} of 2" in line
    assert "--xla_force_host_platform_device_count=4" in line
    assert "platform cpu" in line and "extra 7" in line
    assert "coord localhost:" in line


def test_local_multiprocess_failure_stops_others(fake_modules):
  out = io.StringIO()
  code = local_multiprocess.launch(["--fail_id=1", "--sleep=60"], 2, 2, 0, "fake_main",
                                   out=out)
  assert code == 3, out.getvalue()
  assert "[launcher] process 1 exited with code 3" in out.getvalue()


def test_local_multiprocess_cli(fake_modules):
  r = subprocess.run([
      sys.executable, "-m", "medssl_jax", "local-multiprocess", "--num_processes", "3",
      "--devices_per_process", "2", "--port", "0", "--module", "fake_main", "--",
      "--config.x=1"
  ], capture_output=True, text=True, timeout=60)
  assert r.returncode == 0, r.stdout + r.stderr
  assert sorted(l[:4] for l in r.stdout.splitlines() if " pid " in l) == [
      "[p0]", "[p1]", "[p2]"]


def test_child_env_replaces_device_count():
  env = local_multiprocess.child_env(
      3, {"XLA_FLAGS": "--xla_foo=1 --xla_force_host_platform_device_count=8"})
  assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_force_host_platform_device_count=3"
  assert env["JAX_PLATFORMS"] == "cpu"


JAX_MAIN = """
import sys
import jax
import jax.numpy as jnp
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
jax.distributed.initialize(coordinator_address=flags["coordinator_address"],
                           num_processes=int(flags["num_processes"]),
                           process_id=int(flags["process_id"]))
total = jax.pmap(lambda x: jax.lax.psum(x, "i"), axis_name="i")(
    jnp.ones(jax.local_device_count()))
print("devices", jax.process_index(), jax.local_device_count(), jax.device_count(),
      float(total[0]))
"""


def test_local_multiprocess_with_jax_distributed(fake_modules):
  """Two processes x 2 CPU devices form one 4-device JAX system (a cross-process psum)."""
  (fake_modules / "jax_main.py").write_text(JAX_MAIN)
  out = io.StringIO()
  code = local_multiprocess.launch([], 2, 2, 0, "jax_main", out=out)
  text = out.getvalue()
  assert code == 0, text
  assert "[p0] devices 0 2 4 4.0" in text and "[p1] devices 1 2 4 4.0" in text, text




def test_local_multiprocess_refusals(fake_modules):
  def run(*args):
    return subprocess.run([sys.executable, "-m", "medssl_jax", "local-multiprocess", *args],
                          capture_output=True, text=True, timeout=60)

  r = run("--num_processes=0", "--module=fake_main")
  assert (r.returncode, r.stderr) == (2, "error: --num_processes=0: pass a number of processes >= 1\n")
  r = run("--port=0", "stray", "--", "--config.x=1")
  assert r.returncode == 2 and r.stderr == (
      "error: unexpected argument(s) 'stray' for medssl-jax local-multiprocess before `--` (the arguments for the "
      "module go after it); medssl-jax local-multiprocess --help lists its flags\n")
  r = run("--help")  # the children's flags after `--` are not the launcher's
  assert r.returncode == 0 and "--devices_per_process=INT" in r.stdout
