"""BYOL as a method: the step on 8 devices equals 1 device, the target follows the EMA of the updated
online network with the cosine momentum schedule, is never trained by gradient, a resumed run restores
it bit-exactly; configs/byol.py carries the paper's numbers and its :local variant runs."""
import math

import jax
import numpy as np
import pytest

from configs import byol as byol_config
from medssl_jax import main as main_lib
from medssl_jax import methods
from medssl_jax.methods import momentum
from medssl_jax.training import optim
from medssl_jax.training.sharding import make_mesh, to_global
from tests.helpers import (assert_sharded_equals_unsharded, assert_updates_close, leaves, method_steps,
                           restore_full_state, sigterm_at_call, tiny_config)


def byol_tiny(batch=16, steps=10, tau=0.99):
  c = tiny_config(batch_size=batch, steps=steps)
  c.method = "byol"
  c.byol.momentum, c.byol.projector_hidden, c.byol.predictor_hidden = tau, 32, 16
  c.optim.base_lr, c.optim.warmup_steps = 0.2, 0
  return c


def _assert_trees_close(a, b, what, rtol=1e-4):
  la, lb = leaves(a), leaves(b)
  assert len(la) == len(lb) > 0, what
  for x, y in zip(la, lb):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * max(np.abs(y).max(), 1e-6), err_msg=what)


def test_eight_devices_equal_one_device():
  # Params and BN statistics: the helper's checks; BN statistics to 1e-4 with an absolute floor of 1e-4 x
  # 1e-6 (as the target's BN below).
  states_8, states_1, _, _ = assert_sharded_equals_unsharded(byol_tiny(), bn_floor=1e-10)
  init, s8, s1 = states_8[0], states_8[-1], states_1[-1]
  assert_updates_close(s8.extra["target_params"], s1.extra["target_params"], init.extra["target_params"],
                       "target updates")
  _assert_trees_close(s8.extra["target_batch_stats"], s1.extra["target_batch_stats"], "target BN")


def test_cosine_momentum_schedule_values():
  k_total, base = 1000, 0.996
  for k, want in ((0, base), (k_total // 2, 1 - (1 - base) / 2), (k_total, 1.0), (250, None)):
    want = 1 - (1 - base) * (math.cos(math.pi * k / k_total) + 1) / 2 if want is None else want
    assert float(momentum.cosine_momentum(k, base, k_total)) == pytest.approx(want, abs=1e-7)


def test_target_is_the_ema_of_the_updated_online_network():
  config = byol_tiny(tau=0.9, steps=4)
  mesh = make_mesh()
  state = methods.create_state(config, mesh, jax.random.key(0))
  step = methods.jit_train_step(config)
  p0 = jax.device_get(state.params)
  assert set(p0) == {"encoder", "head", "predictor"} and set(state.extra["target_params"]) == {"encoder", "head"}
  _assert_trees_close(jax.device_get(state.extra["target_params"]), {k: p0[k] for k in ("encoder", "head")},
                      "target starts equal", 0)
  target = jax.device_get(state.extra["target_params"])
  for k in range(3):
    state, metrics = step(state, to_global(methods.synthetic_batch(config, np.random.default_rng(k)), mesh))
    tau = 1 - (1 - 0.9) * (math.cos(math.pi * k / 4) + 1) / 2
    assert float(metrics["target_momentum"]) == pytest.approx(tau, abs=1e-6)
    online = jax.device_get(state.params)  # after step k's gradient update
    target = jax.tree_util.tree_map(lambda t, o: tau * t + (1 - tau) * o, target,
                                    {n: online[n] for n in ("encoder", "head")})
    _assert_trees_close(jax.device_get(state.extra["target_params"]), target, f"target after step {k + 1}", 1e-5)


def test_the_target_is_not_trained_by_gradient():
  # momentum 1: the target would only change through a gradient; it stays the initial network.
  state = method_steps(byol_tiny(tau=1.0), jax.devices()[:1])[0][-1]
  init = method_steps(byol_tiny(tau=1.0), jax.devices()[:1], n=0)[0][-1]
  for a, b in zip(leaves(state.extra["target_params"]), leaves(init.extra["target_params"])):
    np.testing.assert_array_equal(a, b)
  assert any(np.abs(a - b).max() > 0 for a, b in zip(leaves(state.params), leaves(init.params)))


@pytest.mark.parametrize("key,value,match", [("momentum", 1.5, r"byol.momentum=1.5 must be in \[0, 1\]"),
                                             ("momentum", -0.1, r"byol.momentum=-0.1 must be in \[0, 1\]"),
                                             ("predictor_hidden", 0, "byol.predictor_hidden=0 must be a positive")])
def test_settings_are_checked(key, value, match):
  c = byol_tiny()
  c.byol[key] = value
  with pytest.raises(ValueError, match=match):
    methods.get("byol").validate(c)
  c = byol_tiny(batch=1)
  with pytest.raises(ValueError, match="at least 2"):
    methods.get("byol").validate(c)


def _run_config(steps):
  c = byol_tiny(batch=16, steps=steps)
  c.data.source = "synthetic"
  c.data.synthetic.num_cases, c.data.synthetic.image_size = 64, 16
  c.aug.blur_prob = 0.0
  c.train.log_every = c.train.checkpoint_every = 2
  c.train.prefetch = 1
  return c


def test_resume_restores_the_target_bit_exactly(tmp_path, monkeypatch):
  c = _run_config(steps=4)
  main_lib.run(c, str(tmp_path / "straight"))
  real = methods.jit_train_step
  monkeypatch.setattr(methods, "jit_train_step", sigterm_at_call(real, 2))
  assert main_lib.run(c, str(tmp_path / "resumed"))["final_step"] == 2
  monkeypatch.setattr(methods, "jit_train_step", real)
  assert main_lib.run(c, str(tmp_path / "resumed"))["completed"]
  want, got = restore_full_state(c, str(tmp_path / "straight")), restore_full_state(c, str(tmp_path / "resumed"))
  assert int(got.step) == 4 and set(got.extra) == {"target_params", "target_batch_stats"}
  for name in ("params", "batch_stats", "opt_state", "extra"):
    for a, b in zip(leaves(getattr(got, name)), leaves(getattr(want, name))):
      np.testing.assert_array_equal(a, b, err_msg=name)


def test_config_has_the_papers_numbers():
  c = byol_config.get_config()
  assert (c.method, c.byol.momentum, c.byol.projector_hidden, c.byol.predictor_hidden, c.model.head_dim,
          c.model.head_layers) == ("byol", 0.996, 4096, 4096, 256, 2)
  assert (c.optim.name, c.optim.base_lr, c.optim.lr_scaling, c.optim.weight_decay, c.train.batch_size) == \
      ("lars", 0.2, "linear", 1.5e-6, 4096)
  assert c.train.num_steps == 1000 * (1_281_167 // 4096) and c.optim.warmup_steps == 10 * (1_281_167 // 4096)
  for variant in ("", "local"):
    c = byol_config.get_config(variant)
    methods.get("byol").validate(c)
    optim.make_optimizer(c.optim, c.train.batch_size, c.train.num_steps)
  with pytest.raises(ValueError, match="unknown variant"):
    byol_config.get_config("nope")


def test_local_variant_runs_two_steps_on_synthetic_data(tmp_path):
  c = byol_config.get_config("local")
  assert (c.data.source, c.data.image_size, c.data.channels, c.train.num_steps, c.probe.enabled) == \
      ("npz", 28, 1, 500, True)
  assert c.data.path.endswith("shared/data/pneumoniamnist.npz")
  c.data.source, c.data.synthetic.image_size, c.data.synthetic.num_cases = "synthetic", 28, 64
  c.train.batch_size, c.train.num_steps, c.optim.warmup_steps, c.probe.enabled = 16, 2, 0, False
  c.train.prefetch = 1
  r = main_lib.run(c, str(tmp_path / "local"))
  assert r["completed"] and r["method"] == "byol" and np.isfinite(r["metrics"]["loss"])
