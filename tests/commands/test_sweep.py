"""medssl-jax sweep: grids of runs."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from medssl_jax.commands import common, sweep

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_grid_trials_product():
  trials = sweep.grid_trials(["optim.base_lr=0.001,0.01", "optim.weight_decay=0,1e-4,1e-3"])
  assert len(trials) == 6
  assert trials[0] == {"optim.base_lr": "0.001", "optim.weight_decay": "0"}
  assert trials[-1] == {"optim.base_lr": "0.01", "optim.weight_decay": "1e-3"}
  assert {(t["optim.base_lr"], t["optim.weight_decay"]) for t in trials} == {
      (a, b) for a in ("0.001", "0.01") for b in ("0", "1e-4", "1e-3")}
  assert sweep.grid_trials([]) == [{}]
  assert sweep.grid_trials(["--config.a=1"]) == [{"a": "1"}]
  for bad in (["lr"], ["lr="], ["a=1", "a=2"], ["=1"]):
    with pytest.raises(ValueError):
      sweep.grid_trials(bad)


def test_trial_command_and_dirname():
  overrides = {"optim.base_lr": "0.01", "data.path": "/data/x y"}
  name = sweep.trial_dirname(overrides)
  assert name == "optim.base_lr=0.01,data.path=_data_x_y"
  cmd = sweep.trial_command("configs/x.py", "/root/" + name, overrides,
                            ["--config.train.num_steps=5"])
  assert cmd == ["python", "-m", "medssl_jax", "train", "--config=configs/x.py",
                 f"--workdir=/root/{name}", "--config.optim.base_lr=0.01",
                 "--config.data.path=/data/x y", "--config.train.num_steps=5"]
  assert len(sweep.trial_dirname({"k": "v" * 500})) <= sweep.MAX_DIRNAME


def test_azizi_preset():
  trials = sweep.grid_trials(sweep.PRESETS["azizi_finetune"]())
  assert len(trials) == 28
  lrs = sorted({float(t["optim.base_lr"]) for t in trials})
  np.testing.assert_allclose(lrs, 10**np.linspace(-3.5, -0.5, 7), rtol=1e-5)
  assert sorted({float(t["optim.weight_decay"]) for t in trials}) == [0.0, 1e-5, 1e-4, 1e-3]
  assert all("." in t["optim.weight_decay"] or "e" in t["optim.weight_decay"]
             for t in trials)  # Parsed as floats, not ints.


def test_sweep_print_mode(tmp_path, capsys):
  root = tmp_path / "sweep"
  code = common.call(sweep.cli, [
      "medssl-jax sweep", "--config=configs/x.py", f"--workdir_root={root}", "--grid",
      "optim.base_lr=0.001,0.01", "--grid", "optim.weight_decay=0,1e-4", "--extra",
      "--config.train.num_steps=100", "--mode", "print"
  ])
  assert code == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 4
  assert lines[0] == (f"python -m medssl_jax train --config=configs/x.py "
                      f"--workdir={root}/optim.base_lr=0.001,optim.weight_decay=0 "
                      "--config.optim.base_lr=0.001 --config.optim.weight_decay=0 "
                      "--config.train.num_steps=100")
  record = json.loads((root / "sweep.json").read_text())
  assert [t["command"] for t in record["trials"]] == lines
  assert {t["status"] for t in record["trials"]} == {"printed"}


def test_sweep_preset_cli(tmp_path):
  r = subprocess.run([
      sys.executable, "-m", "medssl_jax", "sweep", "--config=configs/x.py",
      f"--workdir_root={tmp_path}", "--preset", "azizi_finetune"
  ], capture_output=True, text=True, timeout=60)
  assert r.returncode == 0, r.stderr
  assert len(r.stdout.splitlines()) == 28


def test_sweep_tpu_vm_mode(monkeypatch, capsys):
  written = []
  monkeypatch.setattr(sweep, "write_sweep_file", lambda root, rec: written.append(root))
  code = common.call(sweep.cli, [
      "medssl-jax sweep", "--config=configs/x.py", "--workdir_root=gs://b/sweep", "--grid", "optim.base_lr=0.1",
      "--mode", "tpu_vm", "--tpu_name", "t", "--zone", "z"
  ])
  assert code == 0
  out = capsys.readouterr().out.strip()
  assert out == ("bash launch/tpu_vm.sh run --name t --zone z --config configs/x.py "
                 "--workdir gs://b/sweep/optim.base_lr=0.1 -- --config.optim.base_lr=0.1")
  assert written == ["gs://b/sweep"]


FAKE_TRAIN = """
import json, os, sys
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:])
os.makedirs(flags["workdir"], exist_ok=True)
with open(os.path.join(flags["workdir"], "args.json"), "w") as f:
  json.dump(sys.argv[1:], f)
if flags.get("config.optim.base_lr") == "bad":
  sys.exit(5)
"""


def test_sweep_local_mode(tmp_path, monkeypatch, capsys):
  (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
  monkeypatch.setenv("PYTHONPATH", str(tmp_path))
  root = tmp_path / "sweep"
  sweep_args = ["medssl-jax sweep", "--config=configs/x.py", f"--workdir_root={root}", "--mode", "local",
                "--module", "fake_train", "--extra=--config.train.num_steps=3"]
  assert common.call(sweep.cli, sweep_args + ["--grid", "optim.base_lr=0.001,0.01"]) == 0
  record = json.loads((root / "sweep.json").read_text())
  assert [t["status"] for t in record["trials"]] == ["done", "done"]
  args = json.loads((root / "optim.base_lr=0.01" / "args.json").read_text())
  assert args == ["--config=configs/x.py", f"--workdir={root}/optim.base_lr=0.01",
                  "--config.optim.base_lr=0.01", "--config.train.num_steps=3"]

  assert common.call(sweep.cli, sweep_args + ["--grid", "optim.base_lr=0.001,bad,0.1"]) == 5
  record = json.loads((root / "sweep.json").read_text())
  assert [t["status"] for t in record["trials"]] == ["done", "failed", "not_run"]
  assert not (root / "optim.base_lr=0.1").exists()
  err = capsys.readouterr().err
  assert "trial 2/3" in err and "failed with exit code 5" in err


def test_sweep_refusals_are_one_line(tmp_path):
  def sweep_cli(*args):
    return subprocess.run([sys.executable, "-m", "medssl_jax", "sweep", "--config=configs/x.py",
                           f"--workdir_root={tmp_path}", *args], capture_output=True, text=True, timeout=60)

  r = sweep_cli("--mode=tpu_vm", "--tpu_name=t")
  assert (r.returncode, r.stderr) == (2, "error: --mode=tpu_vm needs the TPU VM: pass --tpu_name=NAME and --zone=ZONE\n")
  r = sweep_cli("--grid=lr")
  assert (r.returncode, r.stderr) == (2, "error: grid spec 'lr' should look like 'optim.base_lr=0.001,0.01'\n")
  r = sweep_cli("--preset=azizi")
  assert r.returncode == 2 and r.stderr == (
      "error: flag --preset=azizi: value should be one of <azizi_finetune>; medssl-jax sweep --help lists its flags\n")
