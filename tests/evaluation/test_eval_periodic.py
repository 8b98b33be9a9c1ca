"""eval.eval_every: validation at the expected steps, and test metrics of the best-on-validation state."""
import glob
import json
import os

import numpy as np
import pytest
from sklearn import metrics as skm

from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax import finetune
from medssl_jax import main as main_lib
from tests.helpers import tiny_config


def periodic_config(steps=12, eval_every=4):
  c = tiny_config(batch_size=16, image_size=16, steps=steps)
  c.mode = "finetune"
  c.data.source = "synthetic"
  c.data.synthetic.num_cases = 48
  c.data.synthetic.image_size = 16
  c.aug.blur_prob, c.aug.color_prob = 0.0, 0.0
  c.optim.name, c.optim.lr_scaling, c.optim.base_lr, c.optim.warmup_steps = "sgd", "none", 0.2, 0
  c.train.log_every, c.train.checkpoint_every, c.train.prefetch = 2, 6, 1
  c.eval.init, c.eval.num_replicates = "random", 20
  c.eval.eval_every = eval_every
  return c


def scalar_steps(workdir, tag):
  """Steps at which `tag` was written to the run's TensorBoard event files (scalar or tensor form)."""
  from tensorboard.backend.event_processing import event_file_loader
  steps = []
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for event in event_file_loader.EventFileLoader(path).Load():
      steps += [event.step for v in event.summary.value if v.tag == tag]
  return sorted(steps)


@pytest.fixture(scope="module")
def periodic_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("periodic") / "ft")
  return workdir, main_lib.run(periodic_config(), workdir)


def test_validation_at_the_expected_steps_and_the_best_state_is_reported(periodic_run):
  workdir, results = periodic_run
  history = results["val_history"]
  assert [h["step"] for h in history] == [4, 8, 12]
  assert json.load(open(os.path.join(workdir, "val_history.json"))) == history
  assert scalar_steps(workdir, "val/top1") == [4, 8, 12]
  assert scalar_steps(workdir, "val/auc") == [4, 8, 12]
  assert results["select_metric"] == "top1"
  values = [h["top1"] for h in history]
  assert results["selected_step"] == history[int(np.argmax(values))]["step"]   # first maximum on a tie
  # The reported validation and test metrics are those of the selected state: its saved validation
  # predictions score the recorded value (sklearn), and checkpoints_best/ holds that step.
  val = np.load(os.path.join(workdir, "predictions_val.npz"))
  top1 = skm.accuracy_score(val["labels"], np.argmax(val["probs"], 1))
  assert top1 == pytest.approx(max(values), abs=1e-12)
  assert results["val"]["top1"]["value"] == pytest.approx(max(values), abs=1e-12)
  selected = next(h for h in history if h["step"] == results["selected_step"])
  auc = skm.roc_auc_score(val["labels"], val["probs"].astype(np.float64), multi_class="ovr", average="macro")
  assert auc == pytest.approx(selected["auc"], abs=1e-9)   # the selected step's weights, not the last ones
  assert results["val"]["auc"]["value"] == pytest.approx(selected["auc"], abs=1e-12)
  test = np.load(os.path.join(workdir, "predictions_test.npz"))
  assert results["test"]["top1"]["value"] == pytest.approx(skm.accuracy_score(test["labels"], np.argmax(test["probs"], 1)))
  _, _, best = ckpt_lib.restore_weights(os.path.join(workdir, "checkpoints_best"))
  assert best == results["selected_step"]


def test_best_step_rule():
  h = [{"step": 4, "auc": 0.6}, {"step": 8, "auc": float("nan")}, {"step": 12, "auc": 0.7}, {"step": 16, "auc": 0.7}]
  assert finetune.best_step(h, "auc") == 12          # highest; earliest of a tie; NaN never chosen
  assert finetune.best_step(h[:2], "auc") == 4
  assert finetune.best_step([{"step": 4, "auc": float("nan")}], "auc") is None


def test_eval_every_settings_are_checked(tmp_path):
  c = periodic_config(eval_every=3)   # not a multiple of log_every=2
  with pytest.raises(ValueError, match=r"eval.eval_every=3 must be 0 .* multiple of train.log_every=2"):
    main_lib.run(c, str(tmp_path / "a"))
  c = periodic_config()
  c.eval.val_split = ""
  with pytest.raises(ValueError, match="validates on eval.val_split, which is empty"):
    main_lib.run(c, str(tmp_path / "b"))
  c = periodic_config()
  c.eval.select_metric = "mean_auc"
  with pytest.raises(ValueError, match=r"eval.select_metric='mean_auc' is not a metric .* use one of \['top1'"):
    main_lib.run(c, str(tmp_path / "c"))
