"""LARS and the learning-rate schedule against hand-computed updates."""
import jax.numpy as jnp
import numpy as np
import pytest

from configs.base import get_base_config
from medssl_jax.training import optim


def _cfg(**kw):
  c = get_base_config().optim
  c.update(kw)
  return c


def test_one_lars_step_by_hand():
  cfg = _cfg(base_lr=0.5, lr_scaling="none", weight_decay=0.1, trust_coefficient=0.001, warmup_steps=0)
  # Constant schedule for one step: at step 0 the cosine is at its peak.
  tx = optim.make_optimizer(cfg, batch_size=256, num_steps=10)
  params = {"conv": {"kernel": jnp.array([[3.0, 4.0]])}, "bn": {"scale": jnp.array([2.0]), "bias": jnp.array([1.0])}}
  grads = {"conv": {"kernel": jnp.array([[0.6, 0.8]])}, "bn": {"scale": jnp.array([0.5]), "bias": jnp.array([-1.0])}}
  updates, _ = tx.update(grads, tx.init(params), params)

  lr = 0.5
  w, g = np.array([3.0, 4.0]), np.array([0.6, 0.8])
  g_wd = g + 0.1 * w                                           # decay on the kernel only
  trust = 0.001 * np.linalg.norm(w) / np.linalg.norm(g_wd)     # LARS trust ratio
  np.testing.assert_allclose(np.asarray(updates["conv"]["kernel"])[0], -lr * trust * g_wd, rtol=1e-6)
  # Biases and BN parameters: plain SGD with momentum, no decay, no trust ratio.
  np.testing.assert_allclose(np.asarray(updates["bn"]["scale"]), [-lr * 0.5], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(updates["bn"]["bias"]), [lr * 1.0], rtol=1e-6)


def test_momentum_second_step():
  cfg = _cfg(base_lr=1.0, lr_scaling="none", weight_decay=0.0, warmup_steps=0)
  tx = optim.make_optimizer(cfg, batch_size=256, num_steps=1000)
  params = {"b": jnp.array([1.0])}
  state = tx.init(params)
  u1, state = tx.update({"b": jnp.array([1.0])}, state, params)
  u2, _ = tx.update({"b": jnp.array([1.0])}, state, params)
  lr1 = float(optim.learning_rate_schedule(cfg, 256, 1000)(1))
  np.testing.assert_allclose(float(u2["b"][0]), -(lr1 + 0.9 * 1.0), rtol=1e-6)


def test_schedule_scaling_warmup_and_cosine():
  cfg = _cfg(base_lr=0.3, lr_scaling="linear", warmup_steps=10)
  s = optim.learning_rate_schedule(cfg, batch_size=512, num_steps=110)
  peak = 0.3 * 512 / 256
  assert float(s(0)) == 0.0
  np.testing.assert_allclose(float(s(5)), peak * 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(s(10)), peak, rtol=1e-6)
  np.testing.assert_allclose(float(s(60)), peak * 0.5 * (1 + np.cos(np.pi * 0.5)), rtol=1e-5)
  np.testing.assert_allclose(float(s(110)), 0.0, atol=1e-7)
  np.testing.assert_allclose(optim.scaled_learning_rate(0.075, 64, "sqrt"), 0.6)


def test_piecewise_schedule_steps_down_at_fractions_of_training():
  # MedMNIST v2: 100 epochs, x0.1 after epochs 50 and 75 -> with 200 steps, drops at 100 and 150.
  cfg = _cfg(base_lr=1e-3, lr_scaling="none", schedule="piecewise", decay_at=(0.5, 0.75), decay_factor=0.1)
  s = optim.learning_rate_schedule(cfg, batch_size=128, num_steps=200)
  for step, want in ((0, 1e-3), (99, 1e-3), (100, 1e-4), (149, 1e-4), (150, 1e-5), (199, 1e-5)):
    np.testing.assert_allclose(float(s(step)), want, rtol=1e-6)
  warm = optim.learning_rate_schedule(_cfg(base_lr=1e-3, lr_scaling="none", schedule="piecewise", warmup_steps=10,
                                           decay_at=(0.5,), decay_factor=0.1), batch_size=128, num_steps=200)
  np.testing.assert_allclose([float(warm(5)), float(warm(99)), float(warm(100))], [5e-4, 1e-3, 1e-4], rtol=1e-6)
  with pytest.raises(ValueError, match="decay_at"):
    optim.learning_rate_schedule(_cfg(schedule="piecewise", decay_at=(0.75, 0.5)), 128, 200)


def test_bad_settings_are_errors():
  with pytest.raises(ValueError, match="lr_scaling"):
    optim.scaled_learning_rate(0.1, 256, "quadratic")
  with pytest.raises(ValueError, match="optim.name"):
    optim.make_optimizer(_cfg(name="adagrad"), 256, 10)
  with pytest.raises(ValueError, match="warmup_steps"):
    optim.learning_rate_schedule(_cfg(warmup_steps=20), 256, 10)


def test_lars_base_lr_must_suit_its_scaling_rule():
  """Issue 18 item 2: a linear-rule base lr (0.5) under the square-root rule is refused, in one line,
  naming the key and the supported values; the SimCLR reference's pairs and 'none' pass."""
  for base_lr, scaling in ((0.5, "sqrt"), (0.3, "sqrt"), (0.075, "linear"), (2.0, "linear")):
    with pytest.raises(ValueError, match=rf"optim.base_lr={base_lr:g} with optim.lr_scaling='{scaling}'") as e:
      optim.make_optimizer(_cfg(name="lars", base_lr=base_lr, lr_scaling=scaling), 128, 10)
    assert "\n" not in str(e.value) and "linear: 0.1-1.5; sqrt: 0.075" in str(e.value)
  for base_lr, scaling in ((0.075, "sqrt"), (0.3, "linear"), (0.1, "linear"), (1.5, "linear"), (5.0, "none")):
    optim.make_optimizer(_cfg(name="lars", base_lr=base_lr, lr_scaling=scaling), 128, 10)
  # Only LARS (SimCLR's optimiser) is checked: fine-tuning optimisers take any rate.
  optim.make_optimizer(_cfg(name="sgd", base_lr=0.5, lr_scaling="sqrt"), 128, 10)
  optim.make_optimizer(_cfg(name="adam", base_lr=3e-5, lr_scaling="linear"), 128, 10)
  # The pair fixed here: 0.075 x sqrt(128) = 0.85 where 0.5 x sqrt(128) was 5.66.
  np.testing.assert_allclose(optim.scaled_learning_rate(0.075, 128, "sqrt"), 0.8485, rtol=1e-4)


def test_the_cosine_weight_decay_schedule_by_hand():
  cfg = _cfg(weight_decay=0.04, weight_decay_schedule="cosine", weight_decay_end=0.4)
  wd = optim.weight_decay_schedule(cfg, num_steps=11)  # steps 0..10
  for step, want in ((0, 0.04), (5, 0.22), (10, 0.4), (20, 0.4)):
    np.testing.assert_allclose(float(wd(step)), want, rtol=1e-6)
  np.testing.assert_allclose(float(wd(2)), 0.4 + (0.04 - 0.4) * 0.5 * (1 + np.cos(np.pi * 0.2)), rtol=1e-6)
  assert float(optim.weight_decay_schedule(_cfg(weight_decay=0.04), 11)(7)) == pytest.approx(0.04)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_scheduled_weight_decay_decays_the_kernels_by_the_steps_value(name):
  cfg = _cfg(name=name, base_lr=0.5, lr_scaling="none", schedule="constant", warmup_steps=0, momentum=0.0,
             weight_decay=0.04, weight_decay_schedule="cosine", weight_decay_end=0.4)
  tx = optim.make_optimizer(cfg, batch_size=256, num_steps=11)
  params = {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.array([1.0])}
  zero = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(1)}
  state = tx.init(params)
  wd = optim.weight_decay_schedule(cfg, 11)
  for step in range(3):  # zero gradients: Adam's and SGD's own updates are 0, leaving -lr * wd(step) * w
    updates, state = tx.update(zero, state, params)
    np.testing.assert_allclose(updates["kernel"], -0.5 * float(wd(step)) * 3.0, rtol=1e-5)
    np.testing.assert_allclose(updates["bias"], 0.0)


def test_a_flat_cosine_decay_is_adamw_and_lars_refuses_a_schedule():
  from medssl_jax.errors import UserError
  rng = np.random.default_rng(0)
  params = {"kernel": jnp.asarray(rng.normal(size=(3, 3)), jnp.float32), "bias": jnp.zeros(3)}
  base = dict(name="adam", base_lr=0.1, lr_scaling="none", warmup_steps=2, weight_decay=0.05)
  flat = optim.make_optimizer(_cfg(**base, weight_decay_schedule="cosine", weight_decay_end=0.05), 256, 10)
  adamw = optim.make_optimizer(_cfg(**base), 256, 10)
  s_flat, s_adamw = flat.init(params), adamw.init(params)
  for _ in range(3):
    grads = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
    u_flat, s_flat = flat.update(grads, s_flat, params)
    u_adamw, s_adamw = adamw.update(grads, s_adamw, params)
    for k in params:
      np.testing.assert_allclose(u_flat[k], u_adamw[k], rtol=1e-5, atol=1e-7)
  with pytest.raises(UserError, match="LARS"):
    optim.make_optimizer(_cfg(weight_decay_schedule="cosine", weight_decay_end=0.1), 256, 10)
