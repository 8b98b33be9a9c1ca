"""Selection on validation and the summary of the repeats, on fake sweep results."""
import json
import os
import subprocess
import sys

import pytest

from medssl_jax.commands import common, select_best


def _metric(v):
  return {"top1": {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1}}


def _sweep(tmp_path, vals):
  trials = []
  for i, v in enumerate(vals):
    wd = tmp_path / f"t{i}"
    wd.mkdir()
    if v is not None:
      (wd / "results.json").write_text(json.dumps({"val": _metric(v), "test": _metric(v - 0.05)}))
    trials.append({"index": i, "overrides": {"optim.base_lr": str(0.1 * (i + 1))}, "workdir": str(wd)})
  sweep = {"config": "configs/derm_finetune.py:local", "extra": ["--config.train.num_steps=5"], "trials": trials}
  (tmp_path / "sweep.json").write_text(json.dumps(sweep))
  return sweep


def test_chooses_best_validation_and_summarises_repeats(tmp_path):
  sweep = _sweep(tmp_path, [0.6, 0.8, None, 0.7])
  rows = select_best.validation_table(sweep, "top1")
  best = select_best.choose(rows)
  assert best[0] == 1 and best[1] == {"optim.base_lr": "0.2"}
  cmds = select_best.repeat_commands(sweep, best[1], str(tmp_path), [1, 2])
  assert "--config.optim.base_lr=0.2" in cmds[0] and cmds[1][-1] == "--config.seed=2"
  assert "--config.train.num_steps=5" in cmds[0]
  for seed, v in ((1, 0.70), (2, 0.74)):
    os.makedirs(tmp_path / f"repeat_{seed}")
    (tmp_path / f"repeat_{seed}" / "results.json").write_text(json.dumps({"test": _metric(v)}))
  s = select_best.summarise(str(tmp_path), rows, best, [1, 2], "top1")
  assert s["test_mean"] == pytest.approx(0.72) and s["test_std"] == pytest.approx(0.0282843, rel=1e-4)
  assert "| 1 (chosen) | optim.base_lr=0.2 | 0.8000 |" in s["markdown"]
  assert "| 2 | optim.base_lr=0.30000000000000004 | not finished |" in s["markdown"]
  assert "| 2 | 0.7400 | [0.6400, 0.8400] |" in s["markdown"]
  args = ["medssl-jax select-best", "--sweep_dir", str(tmp_path), "--repeats", "2", "--mode", "print"]
  assert common.call(select_best.cli, args) == 0
  assert json.loads((tmp_path / "selection.json").read_text())["chosen"]["index"] == 1


def test_needs_validation_metrics(tmp_path):
  sweep = _sweep(tmp_path, [0.5])
  (tmp_path / "t0" / "results.json").write_text(json.dumps({"test": _metric(0.5)}))
  with pytest.raises(ValueError, match="no validation metrics"):
    select_best.validation_table(sweep, "top1")
  with pytest.raises(ValueError, match="no finished trial"):
    select_best.choose([(0, {}, None, "x")])



def test_without_a_sweep_file_the_command_says_what_to_run(tmp_path):
  r = subprocess.run([sys.executable, "-m", "medssl_jax", "select-best", f"--sweep_dir={tmp_path}"],
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 2
  assert r.stderr == (f"error: {tmp_path}/sweep.json not found: run `medssl-jax sweep` with "
                      f"--workdir_root={tmp_path} first\n")
