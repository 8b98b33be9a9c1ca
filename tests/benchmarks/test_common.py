"""benchmarks/common.py: skip-if-done runs, --only_finished, settings checks and the recorded command."""
import json
import os
import shlex

import pytest

from benchmarks import common
from benchmarks import label_efficiency as study_a
from medssl_jax import main as main_lib
from medssl_jax.runs import pretrain as pretrain_run


def test_a_run_stopped_early_stops_the_study(tmp_path, monkeypatch):
  """A preempted run (SIGTERM: checkpoint saved, completed false) must not let the study go on."""
  monkeypatch.setattr(main_lib, "run", lambda config, workdir: {"mode": "pretrain", "completed": False,
                                                               "final_step": 2, "num_steps": 4})
  with pytest.raises(SystemExit, match="stopped at step 2 of 4; re-run the same command"):
    common.run_once(None, str(tmp_path / "run"), log=lambda *_: None)


def _finished_run(workdir: str, config) -> None:
  """A finished run's files; a pretraining config is saved as the run saves it (aug.on_device decided)."""
  if config.mode == "pretrain":
    config, _ = pretrain_run.resolve_on_device(config)
  os.makedirs(workdir)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"mode": "pretrain", "completed": True}, f)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort())


def test_only_finished_runs_nothing_and_lists_the_rest(tmp_path, monkeypatch):
  monkeypatch.setattr(main_lib, "run", None)  # nothing may be run
  done_dir, todo_dir = str(tmp_path / "done"), str(tmp_path / "todo")
  config = study_a.pretrain_config("x.npz", common.SCALES["smoke"])
  _finished_run(done_dir, config)
  quiet = lambda *_: None
  manifest = {"runs": []}
  for wd in (done_dir, todo_dir):
    common.add_run(manifest, {"workdir": wd}, common.run_once(config, wd, log=quiet, run=False))
  assert manifest == {"runs": [{"workdir": done_dir}], "missing": [todo_dir]}


def test_a_run_made_with_other_settings_is_refused_not_reused(shared_data, tmp_path):
  s, data = common.SCALES["smoke"], str(shared_data / "breastmnist.npz")
  plain = study_a.eval_config(data, s, mode="linear_eval", init="random", checkpoint="", fraction=1.0, draw=0)
  assert plain.finetune.feature_norm == common.LINEAR_FEATURE_NORM == "batchnorm"
  with plain.unlocked():
    plain.finetune.feature_norm = "none"
  wd = str(tmp_path / "lin")
  _finished_run(wd, plain)
  wanted = study_a.eval_config(data, s, mode="linear_eval", init="random", checkpoint="", fraction=1.0, draw=0)
  for run in (True, False):
    with pytest.raises(SystemExit, match="finetune.feature_norm: 'none' -> 'batchnorm'"):
      common.run_once(wanted, wd, log=lambda *_: None, run=run)
  # A key the saved run predates counts as its default: fine-tuning has no feature norm.
  ft = study_a.eval_config(data, s, mode="finetune", init="random", checkpoint="", fraction=1.0, draw=0)
  saved = json.loads(ft.to_json_best_effort())
  del saved["finetune"]["feature_norm"]
  wd2 = str(tmp_path / "ft")
  _finished_run(wd2, ft)
  with open(os.path.join(wd2, "config.json"), "w") as f:
    json.dump(saved, f)
  assert common.run_once(ft, wd2, log=lambda *_: None)["completed"]


def test_recorded_command_can_be_pasted_into_a_shell():
  argv = ["--scale=small", "--tasks=pneumoniamnist;lungseg=configs/lung_segmentation.py:small,size=32", "--runs=5"]
  line = common.command_line("benchmarks.transfer", argv)
  assert line == ("python -m benchmarks.transfer --scale=small "
                  "'--tasks=pneumoniamnist;lungseg=configs/lung_segmentation.py:small,size=32' --runs=5")
  assert shlex.split(line)[3:] == argv


def test_a_pretraining_run_is_compared_with_aug_on_device_as_it_decided_it(tmp_path, monkeypatch):
  """A pretraining run records aug.on_device as it resolved 'auto' (off on the CPU): the study's
  'auto' skips that run here, and refuses one that a GPU ran with it on (other settings)."""
  monkeypatch.setattr(main_lib, "run", None)  # nothing may be run
  config = study_a.pretrain_config("x.npz", common.SCALES["smoke"])
  assert config.aug.on_device == "auto"
  for recorded in (False, True):
    wd = str(tmp_path / f"recorded_{recorded}")
    saved = json.loads(config.to_json_best_effort())
    saved["aug"]["on_device"] = recorded
    os.makedirs(wd)
    with open(os.path.join(wd, "config.json"), "w") as f:
      json.dump(saved, f)
    with open(os.path.join(wd, "results.json"), "w") as f:
      json.dump({"mode": "pretrain", "completed": True}, f)
    if recorded:
      with pytest.raises(SystemExit, match="aug.on_device: True -> False"):
        common.run_once(config, wd, log=lambda *_: None)
    else:
      assert common.run_once(config, wd, log=lambda *_: None)["completed"]
