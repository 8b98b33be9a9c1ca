"""DINO with multi-crop (aug.local_crops): the step on 8 devices equals 1 device with local views in
the batch; the local views enter the student's loss (other local views, other update); a run with
case pairs on the synthetic data trains with them from the host pipeline and counts their images."""
import jax
import numpy as np

from medssl_jax import main as main_lib
from medssl_jax import methods
from medssl_jax.training.sharding import make_mesh, to_global
from tests.helpers import assert_sharded_equals_unsharded, leaves, pretrain_run_config, tiny_config


def multicrop_tiny(local=2):
  c = tiny_config(batch_size=16, steps=10)
  c.method = "dino"
  c.dino.out_dim, c.dino.head_hidden = 64, 32
  c.aug.local_crops, c.aug.local_crop_size = local, 8
  c.optim.base_lr, c.optim.warmup_steps = 0.2, 0
  return c


def _run_steps(config, devices, batches):
  mesh = make_mesh(devices)
  state = methods.create_state(config, mesh, jax.random.key(0))
  step = methods.jit_train_step(config)
  losses = []
  for batch in batches:
    state, metrics = step(state, to_global(batch, mesh))
    losses.append(float(jax.device_get(metrics["loss"])))
  return jax.device_get(state), losses


def test_eight_devices_equal_one_device_with_local_views():
  config = multicrop_tiny()
  assert methods.synthetic_batch(config, np.random.default_rng(0))["local_views"].shape == (16, 2, 8, 8, 3)
  s8, s1, _, _ = assert_sharded_equals_unsharded(config, bn_floor=None)
  np.testing.assert_allclose(s8[-1].extra["center"], s1[-1].extra["center"], rtol=1e-4, atol=1e-6)


def test_the_local_views_enter_the_students_loss():
  config = multicrop_tiny()
  batch = methods.synthetic_batch(config, np.random.default_rng(0))
  other = dict(batch, local_views=np.random.default_rng(9).random(batch["local_views"].shape, np.float32))
  s_a, l_a = _run_steps(config, jax.devices(), [batch])
  s_b, l_b = _run_steps(config, jax.devices(), [other])
  assert abs(l_a[0] - l_b[0]) > 1e-6
  assert max(np.abs(a - b).max() for a, b in zip(leaves(s_a.params), leaves(s_b.params))) > 0
  # The teacher's center follows the global views only: the same for both batches.
  np.testing.assert_allclose(s_a.extra["center"], s_b.extra["center"], rtol=1e-6)
  assert methods.get("dino").images_per_step(config) == (2 + 2) * 16


def test_a_run_with_case_pairs_trains_on_local_views_from_the_host_pipeline(tmp_path):
  c = pretrain_run_config(steps=2, method="dino", pairing="case")
  c.dino.out_dim, c.dino.head_hidden = 64, 32
  c.aug.local_crops, c.aug.local_crop_size = 4, 8
  c.data.pipeline = "numpy"
  results = main_lib.run(c, str(tmp_path / "run"))
  assert results["completed"] and np.isfinite(results["metrics"]["loss"])
  assert 0.0 < results["metrics"]["distinct_pairs"] <= 1.0
  per_step = results["metrics"]["images_per_sec"] / results["metrics"]["steps_per_sec"]
  np.testing.assert_allclose(per_step, (2 + 4) * c.train.batch_size, rtol=1e-6)
