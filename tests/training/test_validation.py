"""The fine-tuning validation hook: best state, ReduceLROnPlateau in the optimiser state, early stopping."""
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medssl_jax.training import plateau as plateau_lib
from medssl_jax.training import validation
from medssl_jax.training.event_writer import NullWriter
from medssl_jax.training.state import TrainState


def test_best_step_rule():
  h = [{"step": 4, "auc": 0.6}, {"step": 8, "auc": float("nan")}, {"step": 12, "auc": 0.7}, {"step": 16, "auc": 0.7}]
  assert validation.best_step(h, "auc") == 12          # highest; earliest of a tie; NaN never chosen
  assert validation.best_step(h[:2], "auc") == 4
  assert validation.best_step([{"step": 4, "auc": float("nan")}], "auc") is None


def _grads(k):
  return {"w": jnp.array([0.3, -1.2, 2.0]) * (k + 1), "b": jnp.array([0.5]) / (k + 1)}


@pytest.mark.parametrize("make", [lambda lr: optax.sgd(lr, momentum=0.9), lambda lr: optax.adam(lr)],
                         ids=["sgd_momentum", "adam"])
def test_a_cut_scales_the_updates_like_a_lower_learning_rate(make):
  # The wrapped optimiser after one plateau cut (scale 0.1) gives exactly the updates of the same
  # optimiser built with a 10x lower lr: both are linear in the lr.
  transform = validation.plateau_transform(factor=0.1, patience=1)
  tx = plateau_lib.with_plateau(make(1e-2), transform)
  params = {"w": jnp.zeros(3), "b": jnp.zeros(1)}
  state = tx.init(params)
  state = plateau_lib.feed_plateau(state, transform, -0.8)     # first value: the best, no cut
  assert float(state.plateau.scale) == 1.0
  state = plateau_lib.feed_plateau(state, transform, -0.8)     # no improvement, patience 1: cut
  assert float(state.plateau.scale) == pytest.approx(0.1)
  ref_tx = make(1e-3)
  ref = ref_tx.init(params)
  for k in range(3):
    u, state = tx.update(_grads(k), state, params)
    r, ref = ref_tx.update(_grads(k), ref, params)
    for name in u:
      np.testing.assert_allclose(u[name], r[name], rtol=1e-6)
  assert float(state.plateau.scale) == pytest.approx(0.1)      # steps only read the scale


def _state(tx):
  params = {"w": jnp.ones(2)}
  return TrainState(step=jnp.int32(0), params=params, batch_stats={}, opt_state=tx.init(params),
                    apply_fn=None, tx=tx)


def _hook(tmp_path, values, start_step=0, **kw):
  it = iter(values)
  return validation.PeriodicValidation(score=lambda state: {"auc": next(it), "top1": 0.5}, metric="auc",
                                       every=2, num_steps=100, writer=NullWriter(), workdir=str(tmp_path),
                                       start_step=start_step, **kw)


# AUC per validation (steps 2, 4, ...): best 0.7 at step 4; 0.70005 (step 8) is not above it by 1e-4.
CURVE = [0.6, 0.7, 0.69, 0.70005, 0.65, 0.7]


def test_hook_cuts_the_lr_and_stops_at_the_patience(tmp_path):
  hook = _hook(tmp_path, CURVE, plateau_factor=0.5, plateau_patience=2, stop_patience=4)
  state = _state(validation.optimizer(optax.sgd(0.1), {"plateau_factor": 0.5, "plateau_patience": 2,
                                                       "eval_every": 2}))
  assert isinstance(state.opt_state, plateau_lib.PlateauScaledState)
  out = []
  for step in range(1, 13):
    state = state.replace(step=jnp.int32(step))
    res = hook(step, state)
    if res is not None:
      state = res.state
      out.append((step, validation.lr_scale(state), res.stop))
  # Bad validations after the best (step 4): steps 6, 8 -> cut (patience 2); 10, 12 -> cut; the 4th
  # bad one (step 12) stops training.
  assert out == [(2, 1.0, False), (4, 1.0, False), (6, 1.0, False), (8, 0.5, False), (10, 0.5, False),
                 (12, 0.25, True)]
  # The tested state is the highest value (step 8's 0.70005); the patience counts from the last
  # improvement by more than the margin (step 4).
  assert hook.best_step() == 8 and hook.stopped_at == 12
  summary = hook.summary()
  assert summary["lr_reduced_at"] == [8, 12] and summary["final_lr_scale"] == 0.25
  assert summary["stopped_early"] and summary["early_stop_step"] == 12
  assert [h["lr_scale"] for h in hook.history] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]
  best = hook.best_state(state)
  assert int(best.step) == 8                                   # checkpoints_best/ holds the best step
  hook.close()


def test_hook_without_plateau_leaves_the_optimizer_and_counts_stops_on_resume(tmp_path):
  tx = validation.optimizer(optax.sgd(0.1), {"plateau_factor": 0.0, "eval_every": 2})
  state = _state(tx)
  assert not isinstance(state.opt_state, plateau_lib.PlateauScaledState)
  hook = _hook(tmp_path, CURVE[:4], stop_patience=3)
  for step in (2, 4, 6, 8):
    res = hook(step, state.replace(step=jnp.int32(step)))
    assert res.stop is False and validation.lr_scale(res.state) == 1.0
  hook.close()
  # A restart at step 8 reads the history back: two bad validations so far, the next bad one stops.
  again = _hook(tmp_path, [0.6], start_step=8, stop_patience=3)
  assert again.validations_since_best() == 2 and not again.start(state)
  assert again(10, state.replace(step=jnp.int32(10))).stop is True
  again.close()
  # A run that stopped and then crashed before its results is not trained further.
  third = _hook(tmp_path, [], start_step=10, stop_patience=3)
  assert third.start(state) and third.stopped_at == 10
  third.close()
  # ... but a run whose last validation was its last step ran its length: not an early stop.
  ran = validation.PeriodicValidation(score=None, metric="auc", every=2, num_steps=10, writer=NullWriter(),
                                      workdir=str(tmp_path), start_step=10, stop_patience=3)
  assert not ran.start(state) and ran.stopped_at is None
  ran.close()


def test_the_last_step_is_never_an_early_stop(tmp_path):
  hook = validation.PeriodicValidation(score=lambda s: {"auc": 0.5}, metric="auc", every=2, num_steps=4,
                                       writer=NullWriter(), workdir=str(tmp_path), start_step=0, stop_patience=1)
  state = _state(optax.sgd(0.1))
  assert hook(2, state).stop is False
  assert hook(4, state).stop is False                          # training ends here anyway
  assert hook(3, state) is None                                # not a validation step
  hook.close()


@pytest.mark.parametrize("settings,needle", [
    (dict(plateau_factor=1.5), "finetune.plateau_factor=1.5 must be in (0, 1)"),
    (dict(plateau_factor=0.1, plateau_patience=0), "finetune.plateau_patience=0 must be >= 1"),
    (dict(early_stop_patience=-1), "finetune.early_stop_patience=-1 must be >= 0"),
    (dict(early_stop_patience=3, eval_every=0), "set finetune.eval_every (or eval_every_epochs) > 0 and finetune.val_split"),
])
def test_settings_are_checked(settings, needle):
  from medssl_jax.errors import UserError
  cfg = {"eval_every": 2, "plateau_factor": 0.0, "plateau_patience": 5, "early_stop_patience": 0, **settings}

  class Cfg(dict):
    __getattr__ = dict.__getitem__

  with pytest.raises(UserError, match=None) as e:
    validation.check_settings(Cfg(cfg))
  assert needle in str(e.value)


def test_the_validation_loss_is_lower_is_better_for_selection_plateau_and_stopping(tmp_path):
  """The AUC curve's mirror image as a loss: the same steps are best, cut and stopped."""
  losses = iter([1.0 - v for v in CURVE])
  hook = validation.PeriodicValidation(score=lambda state: {"loss": next(losses), "auc": 0.5}, metric="loss", every=2,
                                       num_steps=100, writer=NullWriter(), workdir=str(tmp_path), start_step=0,
                                       plateau_factor=0.5, plateau_patience=2, stop_patience=4)
  assert validation.best_step([{"step": 2, "loss": 0.4}, {"step": 4, "loss": 0.3}, {"step": 6, "loss": 0.35}],
                              "loss") == 4
  state = _state(validation.optimizer(optax.sgd(0.1), {"plateau_factor": 0.5, "plateau_patience": 2}))
  out = []
  for step in range(2, 13, 2):
    res = hook(step, state.replace(step=jnp.int32(step)))
    state = res.state
    out.append((step, validation.lr_scale(state), res.stop))
  assert out == [(2, 1.0, False), (4, 1.0, False), (6, 1.0, False), (8, 0.5, False), (10, 0.5, False),
                 (12, 0.25, True)]
  assert hook.best_step() == 8  # the lowest loss (1 - 0.70005)
  hook.close()


def test_early_stopping_waits_for_the_minimum_length(tmp_path):
  hook = _hook(tmp_path, [0.7, 0.6, 0.6, 0.6, 0.6, 0.6], stop_patience=2, min_steps=9)
  stops = [hook(step, _state(optax.sgd(0.1)).replace(step=jnp.int32(step))).stop for step in (2, 4, 6, 8, 10)]
  assert stops == [False, False, False, False, True]  # patience reached at step 6; not before step 9
  hook.close()
