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
  del saved["eval"]["feature_norm"]
  assert workdir_lib.config_differences(saved, tiny_config()) == []
  newer = tiny_config()
  newer.eval.feature_norm = "batchnorm"
  assert workdir_lib.config_differences(saved, newer) == ["eval.feature_norm: 'none' -> 'batchnorm'"]


def _results(wd, **r):
  with open(os.path.join(wd, "results.json"), "w") as f:
    json.dump(r, f)


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
