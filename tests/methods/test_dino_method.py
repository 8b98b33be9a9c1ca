"""DINO as a method: the step on 8 devices equals 1 device; the teacher is the EMA of the UPDATED
student with the cosine schedule and gets no gradient; the center follows the teacher's batch mean;
the prototypes stay frozen for dino.freeze_last_layer_steps; the teacher temperature warms up; a run
checkpoints the teacher and center; configs/dino.py and its :local variant resolve."""
import jax
import numpy as np
import pytest

from configs import dino as dino_config
from medssl_jax import main as main_lib
from medssl_jax import methods
from medssl_jax import setting_rules
from medssl_jax.losses import update_center
from medssl_jax.methods import dino as dino_method
from medssl_jax.methods import momentum
from medssl_jax.training.sharding import make_mesh
from tests.helpers import (assert_sharded_equals_unsharded, leaves, method_steps, pretrain_run_config,
                           restore_full_state, tiny_config)


def dino_tiny(batch=16, steps=10, **dino):
  c = tiny_config(batch_size=batch, steps=steps)
  c.method = "dino"
  c.dino.out_dim, c.dino.head_hidden = 64, 32
  for k, v in dino.items():
    c.dino[k] = v
  c.optim.base_lr, c.optim.warmup_steps = 0.2, 0
  return c


def test_eight_devices_equal_one_device():
  s8, s1, _, _ = assert_sharded_equals_unsharded(dino_tiny(), bn_floor=None)
  np.testing.assert_allclose(s8[-1].extra["center"], s1[-1].extra["center"], rtol=1e-4, atol=1e-6)


def test_teacher_is_the_ema_of_the_updated_student_and_the_center_the_teachers_mean():
  config = dino_tiny(momentum=0.9, steps=4)
  states, _ = method_steps(config, jax.devices(), n=2)
  for k in (1, 2):
    before, after = states[k - 1], states[k]
    tau = float(momentum.cosine_momentum(k - 1, 0.9, 4))
    want = jax.tree_util.tree_map(lambda t, s: tau * t + (1 - tau) * s, before.extra["teacher_params"], after.params)
    for a, b in zip(leaves(after.extra["teacher_params"]), leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # The center after one step: 0.9 * 0 + 0.1 * the teacher's mean logits over both views of batch 0.
  mesh = make_mesh(jax.devices()[:1])
  init = states[0]
  batch = methods.synthetic_batch(config, np.random.default_rng(0))
  model = methods.get("dino").build_model(config)
  outs = [model.apply({"params": init.extra["teacher_params"], "batch_stats": init.extra["teacher_batch_stats"]},
                      batch[v], train=True, mutable=["batch_stats"])[0][1] for v in ("view_a", "view_b")]
  del mesh
  np.testing.assert_allclose(states[1].extra["center"], np.asarray(update_center(np.zeros(64, np.float32), *outs, 0.9)),
                             rtol=1e-4, atol=1e-6)


def test_prototypes_are_frozen_for_the_first_steps_and_the_temperature_warms_up():
  config = dino_tiny(freeze_last_layer_steps=1, steps=4)
  states, metrics = method_steps(config, jax.devices(), n=2)
  last = lambda s: np.asarray(s.params["head"]["last"])  # noqa: E731
  np.testing.assert_array_equal(last(states[1]), last(states[0]))  # step 0: frozen
  assert np.abs(last(states[2]) - last(states[1])).max() > 0       # step 1: trained
  assert np.abs(np.asarray(states[1].params["head"]["dense_0"]["kernel"]) -
                np.asarray(states[0].params["head"]["dense_0"]["kernel"])).max() > 0  # the rest trained from step 0
  assert float(dino_method.teacher_temperature(0, 0.04, 0.07, 10)) == pytest.approx(0.04)
  assert float(dino_method.teacher_temperature(5, 0.04, 0.07, 10)) == pytest.approx(0.055)
  assert float(dino_method.teacher_temperature(30, 0.04, 0.07, 10)) == pytest.approx(0.07)
  assert metrics[0]["teacher_temp"] == pytest.approx(0.04)


def test_a_run_checkpoints_teacher_and_center(tmp_path):
  c = pretrain_run_config(steps=4, method="dino")
  c.dino.out_dim, c.dino.head_hidden = 32, 16
  results = main_lib.run(c, str(tmp_path / "run"))
  assert results["completed"] and results["final_step"] == 4
  state = restore_full_state(c, str(tmp_path / "run"))
  assert state.extra["center"].shape == (32,) and np.abs(np.asarray(state.extra["center"])).max() > 0
  assert set(state.extra) == {"teacher_params", "teacher_batch_stats", "center"}


def test_configs_resolve_with_the_papers_numbers():
  c = dino_config.get_config()
  setting_rules.check(c)
  assert (c.method, c.dino.out_dim, c.dino.head_hidden, c.model.head_dim, c.model.head_layers) == (
      "dino", 65536, 2048, 256, 3)
  assert (c.dino.student_temp, c.dino.warmup_teacher_temp, c.dino.teacher_temp) == (0.1, 0.04, 0.07)
  assert (c.dino.center_momentum, c.dino.momentum, c.model.vit_variant) == (0.9, 0.996, "S/16")
  assert c.dino.warmup_teacher_temp_steps == 30 * (1_281_167 // 1024) and c.optim.name == "adam"
  assert (c.optim.weight_decay, c.optim.weight_decay_schedule, c.optim.weight_decay_end) == (0.04, "cosine", 0.4)
  local = dino_config.get_config("local")
  setting_rules.check(local)
  assert local.data.source == "npz" and local.probe.enabled
  with pytest.raises(ValueError, match="unknown variant"):
    dino_config.get_config("nope")
