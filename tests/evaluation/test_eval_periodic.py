"""finetune.eval_every: validation at the expected steps, and test metrics of the best-on-validation state."""
import json
import os

import numpy as np
import pytest
from sklearn import metrics as skm

from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax import main as main_lib
from tests.helpers import scalar_steps, tiny_config


def periodic_config(steps=12, eval_every=4):
  c = tiny_config(batch_size=16, image_size=16, steps=steps)
  c.mode = "finetune"
  c.data.source = "synthetic"
  c.data.synthetic.num_cases = 48
  c.data.synthetic.image_size = 16
  c.aug.blur_prob, c.aug.color_prob = 0.0, 0.0
  c.optim.name, c.optim.lr_scaling, c.optim.base_lr, c.optim.warmup_steps = "sgd", "none", 0.2, 0
  c.train.log_every, c.train.checkpoint_every, c.train.prefetch = 2, 6, 1
  c.finetune.init, c.eval.num_replicates = "random", 20
  c.finetune.eval_every = eval_every
  return c


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


def test_validation_once_per_epoch_on_the_loss(tmp_path):
  """finetune.eval_every_epochs=1: a validation every ceil(labelled / batch) steps although
  train.log_every does not divide it; select_metric='loss' picks the lowest validation
  cross-entropy, which is sklearn's log loss of the saved validation predictions."""
  c = periodic_config(steps=14, eval_every=0)
  c.finetune.eval_every_epochs, c.finetune.select_metric = 1.0, "loss"
  c.train.log_every, c.train.checkpoint_every = 5, 7
  results = main_lib.run(c, str(tmp_path / "ft"))
  per_epoch = -(-results["num_train_images"] // c.train.batch_size)
  assert per_epoch % c.train.log_every  # the case this test is about
  want = sorted(set(range(per_epoch, 15, per_epoch)) | {14})
  assert [h["step"] for h in results["val_history"]] == want
  losses = [h["loss"] for h in results["val_history"]]
  assert results["select_metric"] == "loss"
  assert results["selected_step"] == results["val_history"][int(np.argmin(losses))]["step"]
  val = np.load(os.path.join(tmp_path / "ft", "predictions_val.npz"))
  probs = val["probs"].astype(np.float64)
  probs /= probs.sum(1, keepdims=True)  # float32 softmax outputs sum to 1 within 1e-7
  assert skm.log_loss(val["labels"], probs, labels=range(probs.shape[1])) == pytest.approx(min(losses), rel=1e-4)


def test_eval_every_settings_are_checked(tmp_path):
  c = periodic_config(eval_every=3)   # not a multiple of log_every=2
  with pytest.raises(ValueError, match=r"finetune.eval_every=3 must be 0 .* multiple of train.log_every=2"):
    main_lib.run(c, str(tmp_path / "a"))
  c = periodic_config()
  c.finetune.val_split = ""
  with pytest.raises(ValueError, match="validates on finetune.val_split, which is empty"):
    main_lib.run(c, str(tmp_path / "b"))
  c = periodic_config()
  c.finetune.select_metric = "mean_auc"
  with pytest.raises(ValueError, match=r"finetune.select_metric='mean_auc' is not a metric .* use one of \['top1'"):
    main_lib.run(c, str(tmp_path / "c"))
  c = periodic_config()
  c.finetune.eval_every_epochs = 1.0
  with pytest.raises(ValueError, match=r"finetune.eval_every=4 and finetune.eval_every_epochs=1 both set how often"):
    main_lib.run(c, str(tmp_path / "d"))


def _stop_step(history, metric, patience):
  """NumPy restatement of the stopping rule: the first validation that is the `patience`-th in a row
  not above the best so far by more than 1e-4 (float32, as optax compares)."""
  best, since = -np.inf, 0
  for h in history:
    v = np.float32(h[metric])
    if -v < -np.float32(best) - np.float32(1e-4):
      best, since = v, 0
    else:
      since += 1
    if since >= patience:
      return h["step"]
  return None


def test_early_stop_ends_training_then_tests_the_best_state_and_a_rerun_does_not_train(tmp_path):
  c = periodic_config(steps=60, eval_every=2)
  c.finetune.early_stop_patience = 3
  c.optim.base_lr = 0.02
  workdir = str(tmp_path / "es")
  results = main_lib.run(c, workdir)
  history = results["val_history"]
  stop = _stop_step(history, "top1", 3)
  assert stop is not None and stop < 60                        # the scenario does stop early
  assert results["stopped_early"] and results["early_stop_step"] == stop == results["final_step"]
  assert [h["step"] for h in history] == list(range(2, stop + 1, 2))
  assert results["completed"] and "test" in results
  assert results["selected_step"] == history[int(np.argmax([h["top1"] for h in history]))]["step"]
  assert ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints")).latest_step() == stop
  # Re-running the finished (or crashed-after-stopping) run evaluates again without training.
  os.remove(os.path.join(workdir, "results.json"))
  again = main_lib.run(c, workdir)
  assert again["final_step"] == stop and again["loss_history"] == [] and again["stopped_early"]
  assert again["val_history"] == history and again["test"] == results["test"]


def test_plateau_cuts_the_lr_and_a_preempted_run_resumes_with_it(tmp_path, monkeypatch):
  from medssl_jax.training import loop
  c = periodic_config(steps=12, eval_every=2)
  c.finetune.plateau_factor, c.finetune.plateau_patience = 0.5, 1
  whole = main_lib.run(c, str(tmp_path / "whole"))
  cuts = whole["lr_reduced_at"]
  assert cuts and whole["final_lr_scale"] == 0.5 ** len(cuts) and not whole["stopped_early"]
  assert [h["step"] for h in whole["val_history"] if h["lr_scale"] < 1.0][0] == cuts[0]
  # The lr logged at step 12 is that of step 12: the schedule's times the scale set by the
  # validation at step 10.
  from medssl_jax.training import optim
  schedule = optim.learning_rate_schedule(c.optim, c.train.batch_size, 12)
  assert whole["train_metrics"]["learning_rate"] == pytest.approx(
      float(schedule(11)) * whole["val_history"][-2]["lr_scale"], rel=1e-6)
  # Preempted at step 6 (a checkpoint with the plateau state), then resumed: the same run.
  workdir = str(tmp_path / "split")
  with monkeypatch.context() as m:
    def preempt_at_6(self, step):  # what SIGTERM's handler does, at step 6
      self.signum = 15 if step == 6 else self.signum
      return self.signum is not None
    m.setattr(loop.StopFlag, "should_stop", preempt_at_6)
    first = main_lib.run(c, workdir)
  assert first["final_step"] == 6 and not first["completed"]
  saved = json.load(open(os.path.join(workdir, "val_history.json")))
  assert saved[-1]["step"] == 6 and saved[-1]["lr_scale"] < 1.0   # the checkpoint holds a cut lr
  resumed = main_lib.run(c, workdir)
  assert resumed["val_history"] == whole["val_history"]
  assert resumed["lr_reduced_at"] == cuts and resumed["test"] == whole["test"]
