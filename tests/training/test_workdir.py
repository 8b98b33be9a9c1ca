"""A workdir holds one run: resuming it with other settings is refused, naming the keys."""
import json
import os

import pytest

from medssl_jax.training import workdir as workdir_lib
from tests.helpers import tiny_config


def _run_with_checkpoint(tmp_path, config):
  wd = str(tmp_path / "run")
  os.makedirs(os.path.join(wd, "checkpoints", "5"))
  workdir_lib.save_config(wd, config)
  return wd


def test_resuming_with_other_settings_is_refused_naming_them(tmp_path):
  wd = _run_with_checkpoint(tmp_path, tiny_config())
  changed = tiny_config()
  changed.optim.base_lr, changed.train.num_steps = 0.5, 20
  with pytest.raises(ValueError, match=r"optim.base_lr: 0.3 -> 0.5; train.num_steps: 10 -> 20\)"):
    workdir_lib.save_config(wd, changed)
  assert json.load(open(os.path.join(wd, "config.json")))["optim"]["base_lr"] == 0.3  # nothing overwritten


def test_same_settings_and_free_keys_resume(tmp_path):
  wd = _run_with_checkpoint(tmp_path, tiny_config())
  workdir_lib.save_config(wd, tiny_config())
  free = tiny_config()
  free.train.log_every, free.train.prefetch = 1, 4
  workdir_lib.save_config(wd, free)
  assert json.load(open(os.path.join(wd, "config.json")))["train"]["log_every"] == 1


def test_resume_with_changes_when_asked_keeps_the_previous_settings(tmp_path):
  wd = _run_with_checkpoint(tmp_path, tiny_config())
  changed = tiny_config()
  changed.train.num_steps, changed.train.resume_with_changes = 20, True
  workdir_lib.save_config(wd, changed)
  assert json.load(open(os.path.join(wd, "config.json")))["train"]["num_steps"] == 20
  assert json.load(open(os.path.join(wd, "config.previous.json")))["train"]["num_steps"] == 10


def test_no_checkpoint_means_a_fresh_run(tmp_path):
  wd = str(tmp_path / "fresh")
  os.makedirs(wd)
  workdir_lib.save_config(wd, tiny_config())
  other = tiny_config()
  other.optim.base_lr = 0.5
  workdir_lib.save_config(wd, other)  # no checkpoint yet: nothing to resume, settings replaced
  assert json.load(open(os.path.join(wd, "config.json")))["optim"]["base_lr"] == 0.5


def test_a_key_newer_than_the_saved_run_counts_as_its_default(tmp_path):
  wd = _run_with_checkpoint(tmp_path, tiny_config())
  saved = json.load(open(os.path.join(wd, "config.json")))
  del saved["finetune"]["feature_norm"]
  assert workdir_lib.config_differences(saved, tiny_config()) == []
  newer = tiny_config()
  newer.finetune.feature_norm = "batchnorm"
  assert workdir_lib.config_differences(saved, newer) == ["finetune.feature_norm: 'none' -> 'batchnorm'"]


def _results(wd, **r):
  with open(os.path.join(wd, "results.json"), "w") as f:
    json.dump(r, f)


def test_loss_history_spans_resumes_and_says_when_a_part_is_missing(tmp_path):
  wd = str(tmp_path)
  assert workdir_lib.loss_history(wd, 0, [(10, 2.0)]) == {"loss_history": [(10, 2.0)], "loss_history_complete": True}
  _results(wd, final_step=30, resumed_from_step=0, loss_history=[[10, 2.0], [20, 1.5], [30, 1.2]])
  resumed = workdir_lib.loss_history(wd, 30, [(40, 1.0)])
  assert resumed == {"loss_history": [(10, 2.0), (20, 1.5), (30, 1.2), (40, 1.0)], "loss_history_complete": True}
  # Killed at 37 after a checkpoint at 35, without writing results: 30..35 is missing.
  gap = workdir_lib.loss_history(wd, 35, [(40, 1.0)])
  assert gap == {"loss_history": [(10, 2.0), (20, 1.5), (30, 1.2), (40, 1.0)], "loss_history_complete": False}
  # Resumed from an earlier checkpoint than the last results: the later entries are not this run's past.
  assert workdir_lib.loss_history(wd, 20, [(30, 1.3)])["loss_history"] == [(10, 2.0), (20, 1.5), (30, 1.3)]


def test_wall_time_adds_up_over_resumes_and_says_when_a_part_is_unknown(tmp_path):
  wd = str(tmp_path)
  fresh = workdir_lib.wall_time(wd, 0, 5.0)
  assert fresh["wall_time_sec"] == 5.0 and fresh["wall_time_complete"]
  _results(wd, final_step=30, wall_time_sec=5.0, wall_time_complete=True)      # stopped at 30 (SIGTERM)
  resumed = workdir_lib.wall_time(wd, 30, 2.5)
  assert resumed == {"wall_time_sec": 7.5, "wall_time_this_invocation_sec": 2.5, "resumed_from_step": 30,
                     "wall_time_complete": True}
  # Killed after step 30 without writing results; the checkpoint of step 40 is where it resumes:
  # the time from 30 to 40 is unknown, so the total is only this invocation's, and says so.
  lost = workdir_lib.wall_time(wd, 40, 2.5)
  assert lost["wall_time_sec"] == 2.5 and not lost["wall_time_complete"]
  # An incomplete total stays incomplete on the next resume.
  _results(wd, final_step=50, wall_time_sec=2.5, wall_time_complete=False)
  assert not workdir_lib.wall_time(wd, 50, 1.0)["wall_time_complete"]
  os.remove(os.path.join(wd, "results.json"))
  assert not workdir_lib.wall_time(wd, 50, 1.0)["wall_time_complete"]


def test_a_run_saved_under_renamed_keys_resumes_under_the_new_names(tmp_path):
  """config.json written before the renames (settings.RENAMED): eval.task, eval.checkpoint and
  train.temperature are read as finetune.task, train.init_checkpoint and the method's temperature."""
  c = tiny_config()
  c.finetune.task, c.train.init_checkpoint, c.simclr.temperature = "multilabel", "/pre", 0.3
  wd = _run_with_checkpoint(tmp_path, c)
  saved = json.load(open(os.path.join(wd, "config.json")))
  old = dict(saved, finetune={k: v for k, v in saved["finetune"].items() if k != "task"})
  old["eval"] = dict(saved["eval"], task="multilabel", checkpoint="/pre")
  old["train"] = dict(saved["train"], init_checkpoint="", temperature=0.3)
  del old["simclr"]
  assert workdir_lib.config_differences(old, c) == []
  c.simclr.temperature = 0.5
  assert workdir_lib.config_differences(old, c) == ["simclr.temperature: 0.3 -> 0.5"]
