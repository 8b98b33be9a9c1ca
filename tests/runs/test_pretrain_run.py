"""End-to-end pretraining runs on the synthetic data: learning, resuming, failing loudly."""
import json
import os
import signal

import jax
import numpy as np
import pytest

from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax import methods
from medssl_jax import main as main_lib
from tests.helpers import pretrain_run_config as run_config, scalar_values, sigterm_at_call


def _params(workdir):
  params, _, step = ckpt_lib.restore_weights(workdir)
  return params, step


@pytest.mark.parametrize("pairing", ["views", "case"])
def test_short_run_lowers_the_loss(tmp_path, pairing):
  c = run_config(steps=40, batch=32, pairing=pairing)
  c.optim.base_lr, c.optim.warmup_steps = 1.0, 4
  c.train.log_every = c.train.checkpoint_every = 10
  results = main_lib.run(c, str(tmp_path / "run"))
  losses = [loss for _, loss in results["loss_history"]]
  assert results["completed"] and len(losses) == 4
  assert losses[-1] < losses[0] - 0.1, losses
  for name in ("config.json", "results.json"):
    assert (tmp_path / "run" / name).is_file()
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "run"))
  assert results["metrics"]["images_per_sec"] > 0
  if pairing == "case":  # most synthetic cases have several images: most pairs are distinct
    assert 0.4 < results["metrics"]["distinct_pairs"] < 1.0


def test_tensorboard_scalars_are_grouped_train_and_probe(tmp_path):
  c = run_config(steps=4)
  c.probe.enabled, c.probe.compare_random_init, c.probe.max_train_examples = True, False, 64
  results = main_lib.run(c, str(tmp_path / "run"))
  wd = str(tmp_path / "run")
  loss = scalar_values(wd, "train/loss")
  assert [s for s, _ in loss] == [2, 4]
  assert np.isclose(loss[-1][1], results["metrics"]["loss"], rtol=1e-6)
  assert [s for s, _ in scalar_values(wd, "train/learning_rate")] == [2, 4]
  assert scalar_values(wd, "loss") == []  # nothing unprefixed
  probe = scalar_values(wd, "probe/pretrained/top1")
  assert probe == [(4, pytest.approx(results["linear_probe"]["pretrained"]["top1"]["value"]))]


def test_sigterm_then_resume_reproduces_uninterrupted_run(tmp_path, monkeypatch):
  c = run_config(steps=6)
  straight = main_lib.run(c, str(tmp_path / "straight"))
  expected, step = _params(tmp_path / "straight")
  assert step == 6

  # Interrupt after 3 steps with a real SIGTERM (what a preempted TPU VM receives).
  real = methods.jit_train_step
  monkeypatch.setattr(methods, "jit_train_step", sigterm_at_call(real, 3))
  outside = signal.getsignal(signal.SIGTERM)
  first = main_lib.run(c, str(tmp_path / "resumed"))
  assert first["preempted"] and first["final_step"] == 3
  # The loop's handler is gone once it returns: a later SIGTERM (evaluation, the next run of a
  # study) meets the process's own handler again instead of a flag nobody reads.
  assert signal.getsignal(signal.SIGTERM) is outside
  assert _params(tmp_path / "resumed")[1] == 3
  monkeypatch.setattr(methods, "jit_train_step", real)
  second = main_lib.run(c, str(tmp_path / "resumed"))
  assert second["completed"] and second["final_step"] == 6
  # The run's wall time covers both invocations.
  assert second["resumed_from_step"] == 3 and second["wall_time_complete"]
  assert second["wall_time_sec"] == pytest.approx(first["wall_time_sec"] + second["wall_time_this_invocation_sec"])
  for text in ((tmp_path / "resumed" / "results.json").read_text(), (tmp_path / "straight" / "results.json").read_text()):
    json.loads(text, parse_constant=lambda name: pytest.fail(f"results.json is not strict JSON: {name}"))
  # So does its loss history (log steps 2, 4, 6; the interrupted invocation also logged its last step, 3).
  assert [e[0] for e in second["loss_history"]] == [2, 3, 4, 6] and second["loss_history_complete"]
  assert [tuple(e) for e in second["loss_history"][:2]] == [tuple(e) for e in first["loss_history"]]
  assert json.load(open(tmp_path / "resumed" / "results.json"))["loss_history"] == [list(e) for e in second["loss_history"]]
  np.testing.assert_allclose([second["loss_history"][0][1], second["loss_history"][-1][1]],
                             [straight["loss_history"][0][1], straight["loss_history"][-1][1]], rtol=1e-4)
  got, step = _params(tmp_path / "resumed")
  assert step == 6
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  from input_pipeline import pipeline
  real = pipeline.pretrain_iterator

  def poisoned(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if kwargs.get("start_step", 0) + i >= 3:   # the 4th batch onwards is NaN
        batch = dict(batch, view_a=np.full_like(batch["view_a"], np.nan))
      yield batch

  monkeypatch.setattr(pipeline, "pretrain_iterator", poisoned)
  with pytest.raises(FloatingPointError, match=r"loss is nan at step 4.*last good checkpoint \(step 2\)"):
    main_lib.run(run_config(steps=6), str(tmp_path / "nan"))
  assert _params(tmp_path / "nan")[1] == 2


def test_batch_not_divisible_by_devices(tmp_path):
  with pytest.raises(ValueError, match=r"train.batch_size=12 is not divisible by the 8 devices"):
    main_lib.run(run_config(batch=12), str(tmp_path / "x"))


def test_missing_data_file(tmp_path):
  c = run_config()
  c.data.source = "npz"
  c.data.path = str(tmp_path / "nope.npz")
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    main_lib.run(c, str(tmp_path / "x"))


def test_micle_from_a_simclr_checkpoint(tmp_path):
  simclr = run_config(steps=2)
  main_lib.run(simclr, str(tmp_path / "simclr"))
  micle = run_config(steps=4, pairing="case")
  micle.train.init_checkpoint = str(tmp_path / "simclr")
  results = main_lib.run(micle, str(tmp_path / "micle"))
  assert results["completed"]
  assert 0.0 < results["metrics"]["distinct_pairs"] <= 1.0
  # A checkpoint of another architecture is refused with a clear message.
  wide = run_config(steps=2, pairing="case")
  wide.model.width = 0.25
  wide.train.init_checkpoint = str(tmp_path / "simclr")
  with pytest.raises(ValueError, match="does not match the configured architecture"):
    main_lib.run(wide, str(tmp_path / "wide"))


@pytest.mark.parametrize("on_device,wire", [("auto", np.float32), (True, np.uint8), (False, np.float32)])
def test_results_hold_the_input_wait_and_the_views_cross_in_uint8_with_on_device(tmp_path, monkeypatch, on_device,
                                                                                  wire):
  """results.json reports the input-wait fraction over the steady-state steps and the aug.on_device the run
  resolved ('auto' on this CPU: off); the batches that reach the devices are uint8 when it is on."""
  from medssl_jax.runs import pretrain
  real, crossed = pretrain.prefetch_to_mesh, []

  def watched(batches, mesh, size):
    for b in real(batches, mesh, size):
      crossed.append((b["view_a"].dtype, b["view_b"].dtype, isinstance(b["view_a"], jax.Array)))
      yield b

  monkeypatch.setattr(pretrain, "prefetch_to_mesh", watched)
  c = run_config(steps=4)
  c.aug.on_device = on_device
  results = main_lib.run(c, str(tmp_path / "run"))
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  assert 0.0 <= saved["input_wait_fraction"] <= 1.0
  assert saved["input_wait_fraction"] == pytest.approx(results["input_wait_fraction"])
  steady = saved["steady_state"]
  assert steady["steps"] == 3  # every step but the first (compilation, the pipeline's start)
  assert steady["pairs_per_sec"] == pytest.approx(3 * 16 / steady["seconds"])
  assert steady["input_wait_sec"] == pytest.approx(saved["input_wait_fraction"] * steady["seconds"])
  assert saved["aug_on_device"] is (on_device is True) and saved["aug_on_device_setting"] == on_device
  assert json.loads((tmp_path / "run" / "config.json").read_text())["aug"]["on_device"] is (on_device is True)
  assert crossed and all(a == wire and b == wire and arr for a, b, arr in crossed), crossed
  assert c.aug.on_device == on_device  # the caller's config is left as it was
