"""The SimCLR step on 8 devices equals the step on 1 device for the same global batch."""
import jax
import jax.numpy as jnp
import numpy as np

from medssl_jax import methods
from medssl_jax.training import optim
from medssl_jax.losses import nt_xent
from medssl_jax.training.sharding import make_mesh, to_global
from tests.helpers import tiny_config


def _run_one_step(config, devices, batch):
  mesh = make_mesh(devices)
  state = methods.create_state(config, mesh, jax.random.key(0))
  init_params = jax.device_get(state.params)
  step = methods.jit_train_step(config)
  new_state, metrics = step(state, to_global(batch, mesh))
  return (init_params, jax.device_get(new_state.params), jax.device_get(new_state.batch_stats),
          jax.device_get(metrics))


def test_eight_devices_equal_one_device():
  """One real update (no warm-up: the learning rate of step 0 is the peak) on 8 devices equals
  the update on 1 device, leaf by leaf, and every parameter moved, so the sharded optimiser
  update itself is compared, not only the loss and BN statistics."""
  assert jax.device_count() == 8
  config = tiny_config(batch_size=16)
  config.optim.warmup_steps = 0
  lr = optim.learning_rate_schedule(config.optim, config.train.batch_size, config.train.num_steps)(0)
  assert float(lr) > 0
  batch = methods.synthetic_batch(config, np.random.default_rng(0))
  p0, p8, bs8, m8 = _run_one_step(config, jax.devices(), batch)
  _, p1, bs1, m1 = _run_one_step(config, jax.devices()[:1], batch)
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  np.testing.assert_allclose(m8["grad_norm"], m1["grad_norm"], rtol=1e-4)
  leaves0 = jax.tree_util.tree_leaves(p0)
  moved = 0
  for init, a, b in zip(leaves0, jax.tree_util.tree_leaves(p8), jax.tree_util.tree_leaves(p1)):
    d8, d1 = a - init, b - init
    moved += int(np.abs(d8).max() > 0)
    # The updates agree, at a tolerance relative to the update's own size (the parameters
    # themselves would agree to 1e-4 even with a wrong update, since one step moves them little).
    np.testing.assert_allclose(d8, d1, rtol=1e-3, atol=1e-3 * np.abs(d1).max())
  # Most leaves moved. (Not all: with the last BN scale of each residual block initialised to
  # zero, the layers inside a block get no gradient at step 0, and their 1-D params no decay.)
  assert moved > 0.5 * len(leaves0), f"only {moved}/{len(leaves0)} parameter arrays moved"
  for a, b in zip(jax.tree_util.tree_leaves(bs8), jax.tree_util.tree_leaves(bs1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_loss_is_global_not_per_device():
  """The step's loss equals NT-Xent on the whole batch, and differs from a per-device average:
  so the equality above proves cross-replica negatives and global BN rather than assuming them."""
  config = tiny_config(batch_size=16)
  batch = methods.synthetic_batch(config, np.random.default_rng(1))
  mesh = make_mesh()
  state = methods.create_state(config, mesh, jax.random.key(0))
  variables = {"params": state.params, "batch_stats": state.batch_stats}

  def project(x):
    (_, z), _ = state.apply_fn(variables, x, train=True, mutable=["batch_stats"])
    return z

  x = methods.interleave_views(jnp.asarray(batch["view_a"]), jnp.asarray(batch["view_b"]))
  z = project(x).reshape(16, 2, -1)
  global_loss = nt_xent(z[:, 0], z[:, 1], temperature=config.simclr.temperature)
  # Per-device alternative: BN statistics and negatives from 2 examples per device only.
  local = []
  for d in range(8):
    zd = project(x[4 * d:4 * d + 4]).reshape(2, 2, -1)
    local.append(float(nt_xent(zd[:, 0], zd[:, 1], temperature=config.simclr.temperature)))
  assert abs(np.mean(local) - float(global_loss)) > 0.5

  _, metrics = methods.jit_train_step(config)(state, to_global(batch, mesh))  # donates state
  np.testing.assert_allclose(float(metrics["loss"]), float(global_loss), rtol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  config = tiny_config(batch_size=8)
  config.model.dtype = "bfloat16"
  mesh = make_mesh()
  state = methods.create_state(config, mesh, jax.random.key(0))
  new_state, metrics = methods.jit_train_step(config)(
      state, to_global(methods.synthetic_batch(config, np.random.default_rng(0)), mesh))
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(new_state.params))
  assert np.isfinite(float(metrics["loss"]))
