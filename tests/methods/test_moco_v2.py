"""MoCo v2 as a method: the step on 8 devices equals 1 device, the key encoder follows the EMA
in MoCo's order, the queue takes the global batch's keys, shuffled BN uses other samples'
statistics for the keys, and a resumed run restores the key encoder and queue bit-exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax import main as main_lib
from medssl_jax import methods
from medssl_jax.methods import momentum, moco_v2
from medssl_jax.training.sharding import make_mesh, to_global
from tests.helpers import restore_full_state, sigterm_at_call, tiny_config


def moco_config(bn="shuffle", batch=16, steps=10):
  c = tiny_config(batch_size=batch, steps=steps)
  c.method = "moco_v2"
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "sgd", 0.03, "linear"
  c.optim.weight_decay, c.optim.warmup_steps = 1e-4, 0
  c.moco.temperature = 0.2
  c.moco.queue_size, c.moco.momentum, c.moco.bn, c.moco.bn_groups = 4 * batch, 0.99, bn, 4
  return c


def _steps(config, devices, n=2):
  mesh = make_mesh(devices)
  state = methods.create_state(config, mesh, jax.random.key(0))
  init = jax.device_get(state)
  step = methods.jit_train_step(config)
  history = []
  for i in range(n):
    batch = to_global(methods.synthetic_batch(config, np.random.default_rng(i)), mesh)
    state, metrics = step(state, batch)
    history.append(jax.device_get(metrics))
  return init, jax.device_get(state), history


def _assert_trees_close(a, b, what, rtol=1e-4):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb) > 0, what
  for x, y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * max(np.abs(y).max(), 1e-6), err_msg=what)


@pytest.mark.parametrize("bn", ["shuffle", "global"])
def test_eight_devices_equal_one_device(bn):
  config = moco_config(bn)
  init, s8, m8 = _steps(config, jax.devices())
  _, s1, m1 = _steps(config, jax.devices()[:1])
  for a, b in zip(m8, m1):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
  # The parameters really moved, and moved the same way.
  moved = [np.abs(np.asarray(x) - np.asarray(y)).max() > 0
           for x, y in zip(jax.tree_util.tree_leaves(s8.params), jax.tree_util.tree_leaves(init.params))]
  assert np.mean(moved) > 0.5
  # Updates to 0.1% of the leaf's largest update; an update is a difference of float32 weights,
  # so it is only known to a few ulps of the weights themselves (the floor).
  for p8, p1, p0 in zip(*(jax.tree_util.tree_leaves(t) for t in (s8.params, s1.params, init.params))):
    u8, u1, p0 = np.asarray(p8) - np.asarray(p0), np.asarray(p1) - np.asarray(p0), np.asarray(p0)
    floor = 4 * np.finfo(np.float32).eps * max(np.abs(p0).max(), 1e-6)
    np.testing.assert_allclose(u8, u1, rtol=1e-3, atol=max(1e-3 * np.abs(u1).max(), floor), err_msg="param updates")
  _assert_trees_close(s8.batch_stats, s1.batch_stats, "BN statistics")
  _assert_trees_close(s8.extra["target_params"], s1.extra["target_params"], "key encoder")
  _assert_trees_close(s8.extra["target_batch_stats"], s1.extra["target_batch_stats"], "key encoder BN")
  _assert_trees_close(s8.extra["queue"], s1.extra["queue"], "queue", 1e-3)
  assert int(s8.extra["queue_ptr"]) == int(s1.extra["queue_ptr"]) == 2 * config.train.batch_size


def test_key_encoder_follows_the_ema_in_moco_order_and_queue_takes_the_keys():
  config = moco_config("global")
  m = config.moco.momentum
  mesh = make_mesh()
  state = methods.create_state(config, mesh, jax.random.key(0))
  step = methods.jit_train_step(config)
  p0 = jax.device_get(state.params)
  q0 = np.asarray(state.extra["queue"])
  _assert_trees_close(jax.device_get(state.extra["target_params"]), p0, "key encoder starts equal", 0)
  batch = methods.synthetic_batch(config, np.random.default_rng(0))
  state, _ = step(state, to_global(batch, mesh))
  p1 = jax.device_get(state.params)
  # Step 1: the EMA of equal weights is those weights.
  _assert_trees_close(jax.device_get(state.extra["target_params"]), p0, "after step 1", 1e-6)
  # The first N rows of the queue are the normalised keys of view b by that key encoder
  # (global BN, train mode); the rest is untouched.
  n = config.train.batch_size
  model = methods.get("moco_v2").build_model(config)
  (_, k), _ = model.apply({"params": p0, "batch_stats": jax.device_get(state.extra["target_batch_stats"])},
                          jnp.asarray(batch["view_b"]), train=True, mutable=["batch_stats"])
  k = np.asarray(k) / np.linalg.norm(np.asarray(k), axis=1, keepdims=True)
  queue = np.asarray(state.extra["queue"])
  np.testing.assert_allclose(queue[:n], k, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(queue[n:], q0[n:])
  assert int(state.extra["queue_ptr"]) == n
  # Step 2: target = m * target + (1 - m) * the query weights BEFORE step 2's gradient update.
  state, _ = step(state, to_global(methods.synthetic_batch(config, np.random.default_rng(1)), mesh))
  want = jax.tree_util.tree_map(lambda a, b: m * a + (1 - m) * b, p0, p1)
  _assert_trees_close(jax.device_get(state.extra["target_params"]), want, "after step 2", 1e-5)


def test_shuffled_bn_computes_key_statistics_on_other_samples():
  config = moco_config("shuffle")
  groups, n = config.moco.bn_groups, config.train.batch_size
  model = methods.get("moco_v2").build_model(config)
  x = jnp.asarray(methods.synthetic_batch(config, np.random.default_rng(0))["view_b"])
  # Make the groups' statistics different: group g is shifted by g.
  x = x + jnp.repeat(jnp.arange(groups, dtype=jnp.float32), n // groups)[:, None, None, None]
  variables = model.init(jax.random.key(0), x[:2], train=True)
  perm, inverse = momentum.shuffle_indices(jax.random.key(3), n, groups)
  group = np.repeat(np.arange(groups), n // groups)
  assert not np.any(group[np.asarray(perm)] == group), "a key shares its BN group with its own query's group"
  k_shuffled, _ = moco_v2.encode(model.apply, variables, x[perm], bn="shuffle", groups=groups)
  k_shuffled = np.asarray(k_shuffled)[np.asarray(inverse)]
  k_plain, _ = moco_v2.encode(model.apply, variables, x, bn="shuffle", groups=groups)
  # Each key equals the network applied to its shuffled group alone (its statistics are that group's) ...
  for g in range(groups):
    members = np.asarray(perm)[g * (n // groups):(g + 1) * (n // groups)]
    (_, zg), _ = model.apply(variables, x[members], train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(k_shuffled[members], np.asarray(zg), rtol=1e-4, atol=1e-5)
  # ... and differs from the key normalised with its own group's statistics.
  assert np.abs(k_shuffled - np.asarray(k_plain)).max() > 1e-2


def test_settings_are_checked():
  with pytest.raises(ValueError, match="moco.queue_size=40 must be a multiple of train.batch_size=16"):
    methods.get("moco_v2").validate(_with(moco_config(), queue_size=40))
  with pytest.raises(ValueError, match="moco.bn_groups=3 must divide"):
    methods.get("moco_v2").validate(_with(moco_config(), bn_groups=3))
  with pytest.raises(ValueError, match="moco.bn='sync'"):
    methods.get("moco_v2").validate(_with(moco_config(), bn="sync"))


def _with(c, **kw):
  for k, v in kw.items():
    c.moco[k] = v
  return c


def _run_config(steps):
  c = moco_config("shuffle", batch=16, steps=steps)
  c.data.source = "synthetic"
  c.data.synthetic.num_cases, c.data.synthetic.image_size = 64, 16
  c.aug.blur_prob = 0.0
  c.train.log_every = c.train.checkpoint_every = 2
  c.train.prefetch = 1
  return c


def test_resume_restores_key_encoder_and_queue_bit_exactly(tmp_path, monkeypatch):
  c = _run_config(steps=4)
  main_lib.run(c, str(tmp_path / "straight"))
  real = methods.jit_train_step
  monkeypatch.setattr(methods, "jit_train_step", sigterm_at_call(real, 2))
  assert main_lib.run(c, str(tmp_path / "resumed"))["final_step"] == 2
  monkeypatch.setattr(methods, "jit_train_step", real)
  assert main_lib.run(c, str(tmp_path / "resumed"))["completed"]
  want, got = restore_full_state(c, str(tmp_path / "straight")), restore_full_state(c, str(tmp_path / "resumed"))
  assert int(got.step) == 4 and int(got.extra["queue_ptr"]) == 4 * 16 % c.moco.queue_size
  for name in ("params", "batch_stats", "opt_state", "extra"):
    for a, b in zip(jax.tree_util.tree_leaves(getattr(got, name)), jax.tree_util.tree_leaves(getattr(want, name))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
