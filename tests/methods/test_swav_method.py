"""SwAV as a method: the step on 8 devices equals 1 device (with local views, with a queue); the
prototypes are unit-norm at the start of each step and frozen for swav.freeze_prototypes_steps;
the queue fills from swav.queue_start_step with the global views' embeddings and, once full, its
scores enter the codes (the step's loss = a restatement with the NumPy Sinkhorn-Knopp over queue +
batch); a run checkpoints the queue and resumes exactly; configs/swav.py and :local resolve;
refusals."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import swav as swav_config
from medssl_jax import main as main_lib
from medssl_jax import methods
from medssl_jax import setting_rules
from medssl_jax.errors import UserError
from medssl_jax.losses import swav_loss
from medssl_jax.methods import swav as swav_method
from medssl_jax.training.sharding import make_mesh, to_global
from tests.helpers import (assert_sharded_equals_unsharded, leaves, method_steps, pretrain_run_config, restore_full_state,
                           sigterm_at_call, tiny_config)
from tests.losses.test_swav_loss import np_sinkhorn


def swav_tiny(batch=16, steps=10, local=0, **swav):
  c = tiny_config(batch_size=batch, steps=steps)
  c.method = "swav"
  c.swav.num_prototypes, c.swav.projector_hidden = 24, 32
  for k, v in swav.items():
    c.swav[k] = v
  if local:
    c.aug.local_crops, c.aug.local_crop_size = local, 8
  c.optim.base_lr, c.optim.warmup_steps = 0.2, 0
  return c


def test_eight_devices_equal_one_device_with_local_views():
  config = swav_tiny(local=2)
  assert methods.get("swav").images_per_step(config) == (2 + 2) * 16
  assert_sharded_equals_unsharded(config)


def test_eight_devices_equal_one_device_with_a_queue_in_use():
  config = swav_tiny(queue_length=16, queue_start_step=0)
  s8, s1, m8, m1 = assert_sharded_equals_unsharded(config, n=3)
  assert [float(m["queue_in_use"]) for m in m8] == [0.0, 1.0, 1.0]
  np.testing.assert_allclose(s8[-1].extra["queue"], s1[-1].extra["queue"], rtol=1e-4, atol=1e-5)


def _norms(params):
  return np.linalg.norm(np.asarray(params["prototypes"]["kernel"]), axis=0)


def test_prototypes_are_normalised_each_step_and_frozen_for_the_first_steps():
  config = swav_tiny(freeze_prototypes_steps=1)
  states, _ = method_steps(config, jax.devices(), n=2)
  assert np.abs(_norms(states[0].params) - 1).max() > 1e-2  # the initial ones are not unit-norm
  w0 = np.asarray(swav_method.normalize_prototypes(states[0].params)["prototypes"]["kernel"])
  np.testing.assert_allclose(np.asarray(states[1].params["prototypes"]["kernel"]), w0, rtol=1e-6)  # frozen
  np.testing.assert_allclose(_norms(states[1].params), 1.0, rtol=1e-5)
  assert np.abs(np.asarray(states[2].params["prototypes"]["kernel"]) - w0).max() > 0  # step 1 trains them
  enc = lambda s: np.asarray(s.params["head"]["dense_0"]["kernel"])  # noqa: E731
  assert np.abs(enc(states[1]) - enc(states[0])).max() > 0  # the rest trains from step 0


def _forward(config, state, batch):
  """(z, s) of both global views of `batch` as the step sees them (prototypes normalised, BN train mode)."""
  model = methods.get("swav").build_model(config)
  params = swav_method.normalize_prototypes(state.params)
  x = np.concatenate([batch["view_a"], batch["view_b"]])
  (_, (z, s)), _ = model.apply({"params": params, "batch_stats": state.batch_stats}, x, train=True,
                               mutable=["batch_stats"])
  n = batch["view_a"].shape[0]
  return (np.asarray(z[:n]), np.asarray(z[n:])), (np.asarray(s[:n]), np.asarray(s[n:])), params


def test_the_queue_fills_from_its_start_step_and_enters_the_codes_once_full():
  config = swav_tiny(queue_length=32, queue_start_step=1)
  states, metrics = method_steps(config, jax.devices(), n=4)
  batches = [methods.synthetic_batch(config, np.random.default_rng(i)) for i in range(4)]
  assert [int(s.extra["queue_rows"]) for s in states] == [0, 0, 16, 32, 32]
  np.testing.assert_array_equal(states[1].extra["queue"], 0.0)  # step 0 is before queue_start_step
  assert [float(m["queue_in_use"]) for m in metrics] == [0.0, 0.0, 0.0, 1.0]
  # After step 2 the newest rows are step 2's global embeddings, then step 1's.
  (za2, zb2), _, _ = _forward(config, states[2], batches[2])
  (za1, zb1), _, _ = _forward(config, states[1], batches[1])
  q = states[3].extra["queue"]
  np.testing.assert_allclose(q[0], np.concatenate([za2, za1]), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(q[1], np.concatenate([zb2, zb1]), rtol=1e-4, atol=1e-5)
  # Step 3 (queue full): its codes are the last 16 rows of Sinkhorn-Knopp over queue + batch scores.
  (za, zb), (sa, sb), params = _forward(config, states[3], batches[3])
  w = np.asarray(params["prototypes"]["kernel"])
  codes = [np_sinkhorn(np.concatenate([q[i] @ w, s]), 0.05, 3)[-16:] for i, s in enumerate((sa, sb))]
  want = float(swav_loss([jnp.asarray(sa), jnp.asarray(sb)], [jnp.asarray(c, jnp.float32) for c in codes], 0.1))
  np.testing.assert_allclose(float(metrics[3]["loss"]), want, rtol=1e-4)
  without = float(swav_loss([jnp.asarray(sa), jnp.asarray(sb)],
                            [jnp.asarray(np_sinkhorn(s, 0.05, 3), jnp.float32) for s in (sa, sb)], 0.1))
  assert abs(without - want) > 1e-4  # the queue changed the codes


def test_a_run_checkpoints_the_queue_and_resumes_exactly(tmp_path, monkeypatch):
  c = pretrain_run_config(steps=6, method="swav")
  c.swav.num_prototypes, c.swav.projector_hidden = 24, 16
  c.swav.queue_length, c.swav.queue_start_step = 32, 0
  c.aug.local_crops, c.aug.local_crop_size = 2, 8
  assert main_lib.run(c, str(tmp_path / "straight"))["completed"]
  real = methods.jit_train_step
  monkeypatch.setattr(methods, "jit_train_step", sigterm_at_call(real, 4))  # stopped after the step-4 checkpoint
  assert main_lib.run(c, str(tmp_path / "resumed"))["final_step"] == 4
  monkeypatch.setattr(methods, "jit_train_step", real)
  assert main_lib.run(c, str(tmp_path / "resumed"))["completed"]
  want, got = restore_full_state(c, str(tmp_path / "straight")), restore_full_state(c, str(tmp_path / "resumed"))
  assert int(got.step) == 6 and int(got.extra["queue_rows"]) == 32 and np.abs(got.extra["queue"]).max() > 0
  for name in ("params", "batch_stats", "opt_state", "extra"):
    for a, b in zip(leaves(getattr(got, name)), leaves(getattr(want, name))):
      np.testing.assert_array_equal(a, b, err_msg=name)


def test_configs_resolve_with_the_papers_numbers():
  c = swav_config.get_config()
  setting_rules.check(c)
  methods.get("swav").validate(c)
  assert (c.swav.num_prototypes, c.swav.projector_hidden, c.model.head_dim, c.model.head_layers) == (3000, 2048, 128, 2)
  assert (c.swav.temperature, c.swav.epsilon, c.swav.sinkhorn_iterations) == (0.1, 0.05, 3)
  assert (c.aug.local_crops, c.aug.local_crop_size, c.aug.crop_area_min) == (6, 96, 0.14)
  assert (c.aug.local_crop_area_min, c.aug.local_crop_area_max) == (0.05, 0.14)
  assert c.optim.base_lr * c.train.batch_size / 256 == pytest.approx(4.8) and c.optim.name == "lars"
  assert c.train.num_steps == 800 * (1_281_167 // 4096) and c.swav.freeze_prototypes_steps == 313
  local = swav_config.get_config("local")
  setting_rules.check(local)
  methods.get("swav").validate(local)
  assert local.data.source == "npz" and local.probe.enabled and local.swav.queue_length % local.train.batch_size == 0
  with pytest.raises(ValueError, match="unknown variant"):
    swav_config.get_config("nope")


def test_refusals():
  with pytest.raises(UserError, match="multiple of train.batch_size"):
    methods.get("swav").validate(swav_tiny(queue_length=20))
  with pytest.raises(UserError, match="swav.epsilon"):
    methods.get("swav").validate(swav_tiny(epsilon=0.0))
  vit = swav_tiny(local=2)
  vit.model.arch = "vit"
  with pytest.raises(UserError, match="position embeddings"):
    methods.get("swav").validate(vit)


def test_it_learns_on_easy_views():
  """Views that differ by a little noise: the swapped prediction becomes sharp (the loss falls far
  below log K, the value of uniform predictions) and the codes keep using the prototypes (no collapse)."""
  config = swav_tiny(batch=64, steps=40)
  config.swav.num_prototypes, config.swav.projector_hidden = 32, 64
  config.optim.base_lr, config.optim.warmup_steps = 0.3, 5
  mesh = make_mesh(jax.devices())
  state = methods.create_state(config, mesh, jax.random.key(0))
  step = methods.jit_train_step(config)
  rng = np.random.default_rng(0)
  data = rng.random((256, 16, 16, 3), np.float32)
  history = []
  for _ in range(40):
    x = data[rng.choice(256, 64, replace=False)]
    noisy = np.clip(x + 0.05 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
    state, metrics = step(state, to_global({"view_a": x, "view_b": noisy}, mesh))
    history.append(jax.device_get(metrics))
  late = history[-5:]
  assert np.mean([m["loss"] for m in late]) < 0.6 * np.log(32)
  assert np.mean([m["prototypes_used"] for m in late]) > 0.5
