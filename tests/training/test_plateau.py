"""Truong et al.'s lr plateau (factor 0.1, patience 5) and early stopping (patience 10) on scripted curves."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medssl_jax.training.plateau import (EarlyStopping, PlateauSchedule, is_improvement, plateau_init,
                                         plateau_step, plateau_transform)

# Validation loss per epoch. Epoch 2 is the best (0.6). Epoch 5's 0.59995 is lower but not by the
# relative tolerance (0.6 * (1 - 1e-4) = 0.59994), so it does not count. Epochs 3..12 never improve:
# the 5th bad epoch (7) cuts the lr to 0.1x, the 10th (12) cuts it again and stops training.
FLAT = [1.0, 0.8, 0.6, 0.65, 0.6, 0.59995, 0.7, 0.61, 0.62, 0.6, 0.63, 0.64, 0.65]


def _run(curve, **kw):
  sched = PlateauSchedule(**kw)
  return sched, [sched.step(v) for v in curve]


def test_lr_drops_tenfold_on_the_fifth_bad_epoch_and_stopping_fires_on_the_tenth():
  _, d = _run(FLAT)
  scales = np.array([x.lr_scale for x in d])
  np.testing.assert_allclose(scales, [1] * 7 + [0.1] * 5 + [0.01], rtol=1e-6)
  assert [x.epoch for x in d if x.lr_reduced] == [7, 12]
  np.testing.assert_allclose([x.learning_rate for x in d][6:8], [1e-3, 1e-4], rtol=1e-6)
  assert [x.improved for x in d] == [True, True, True] + [False] * 10
  assert [x.should_stop for x in d] == [False] * 12 + [True]
  assert d[-1].best_epoch == 2 and d[-1].best == pytest.approx(0.6)


def test_an_improvement_resets_both_counters():
  # Best at 2, bad 3..7 (cut at 7), new best at 8; then bad 9..18: cuts at 13 and 18, stop at 18.
  curve = FLAT[:8] + [0.5] + [0.55] * 10 + [0.4]
  sched, d = _run(curve)
  assert [x.epoch for x in d if x.lr_reduced] == [7, 13, 18]
  np.testing.assert_allclose(d[18].lr_scale, 1e-3, rtol=1e-5)
  assert [x.epoch for x in d if x.should_stop] == [18]         # the caller stops here; 19 is never run
  assert d[18].best_epoch == 8 and d[18].best == pytest.approx(0.5)
  assert d[12].should_stop is False and d[12].best_epoch == 8


def test_pytorch_patience_convention_is_one_more():
  # torch.optim.lr_scheduler.ReduceLROnPlateau(patience=5) cuts when the bad-epoch count exceeds 5,
  # i.e. on the 6th bad epoch (epoch 8 of FLAT); optax's patience 6 does the same.
  _, d = _run(FLAT, lr_patience=6)
  assert [x.epoch for x in d if x.lr_reduced] == [8]


def test_matches_optax_directly_and_a_reference_of_its_documented_rule():
  # optax's own transformation fed the same values (its docstring: "if no improvement is seen for a
  # 'patience' number of epochs, the learning rate is reduced") ...
  tx = optax.contrib.reduce_on_plateau(factor=0.1, patience=5, rtol=1e-4, atol=0.0)
  st = tx.init(jnp.zeros(()))
  update = jax.jit(lambda st, v: tx.update(jnp.ones(()), st, value=v)[1])
  direct = []
  for v in FLAT:
    st = update(st, v)
    direct.append(float(st.scale))
  # ... and a plain-Python counter with the rule written out.
  best, bad, scale, ref = np.inf, 0, 1.0, []
  for v in FLAT:
    if v < (1 - 1e-4) * best:
      best, bad = v, 0
    else:
      bad += 1
      if bad == 5:
        scale, bad = scale * 0.1, 0
    ref.append(scale)
  _, d = _run(FLAT)
  np.testing.assert_allclose([x.lr_scale for x in d], direct, rtol=1e-6)
  np.testing.assert_allclose(direct, ref, rtol=1e-6)


def test_best_value_agrees_with_the_optax_state():
  sched = PlateauSchedule()
  for v in FLAT[:8] + [0.5, 0.49999, 0.4]:
    sched.step(v)
    assert float(sched.plateau_state.best_value) == pytest.approx(sched.stopping.best, rel=1e-7)


def test_max_mode_for_auc_and_its_absolute_tolerance():
  # AUC per epoch: best 0.9 at epoch 1; 0.90005 is within atol=1e-4 so it does not improve.
  auc = [0.8, 0.9, 0.90005, 0.85, 0.89, 0.9, 0.88]
  _, d = _run(auc, mode="max")
  assert [x.improved for x in d] == [True, True] + [False] * 5
  assert [x.epoch for x in d if x.lr_reduced] == [6]
  assert d[-1].best == pytest.approx(0.9) and d[-1].best_epoch == 1
  with pytest.raises(ValueError, match="rtol=0"):
    PlateauSchedule(mode="max", rtol=1e-4)
  with pytest.raises(ValueError):
    PlateauSchedule(mode="maximum")


def test_why_max_mode_refuses_a_relative_tolerance():
  # Negated AUC 0.89995 against best 0.9 under optax's relative rule: a worse AUC "improves".
  assert is_improvement(-0.89995, -0.9, rtol=1e-4, atol=0.0)
  assert not is_improvement(-0.89995, -0.9, rtol=0.0, atol=1e-4)


def test_early_stopping_alone():
  es = EarlyStopping(patience=3)
  out = [es.update(v) for v in [3.0, 2.0, 2.5, 2.0, 2.1]]
  assert out == [True, True, False, False, False]
  assert es.should_stop and es.best == 2.0 and es.best_epoch == 1 and es.epoch == 4
  es = EarlyStopping(patience=2)
  es.update(1.0, epoch=10)
  es.update(1.5, epoch=11)
  assert es.best_epoch == 10 and es.epochs_since_improvement == 1 and not es.should_stop


def test_scale_drives_an_injected_adam_learning_rate():
  sched = PlateauSchedule()
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=sched.learning_rate)
  params = jnp.zeros(3)
  grads = jnp.array([1.0, -2.0, 0.5])
  first, _ = tx.update(grads, tx.init(params), params)
  for v in FLAT[:8]:                                      # the lr is cut on epoch 7
    d = sched.step(v)
  state = tx.init(params)
  state.hyperparams["learning_rate"] = jnp.asarray(d.learning_rate)
  later, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(later, first / 10, rtol=1e-5)
  np.testing.assert_allclose(np.abs(first), 1e-3, rtol=1e-3)   # Adam's first step is lr * sign(g)


def test_pure_steps_match_the_schedule():
  tx = plateau_transform()
  st = plateau_init(tx)
  step = jax.jit(lambda s, v: plateau_step(tx, s, v))
  for v in FLAT:
    st = step(st, v)
  assert float(st.scale) == pytest.approx(0.01) and float(st.best_value) == pytest.approx(0.6)
