"""finetune.feature_norm='batchnorm': standardised features under the linear head (linear evaluation).

References are NumPy re-implementations: per-feature standardisation with the batch's mean and
biased variance (eps 1e-5), running averages with momentum 0.9, then the affine layer.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax.runs import classify
from medssl_jax.training.sharding import make_mesh, to_global
from tests.helpers import tiny_config

EPS, MOMENTUM = 1e-5, 0.9


def lin_config(feature_norm="batchnorm", batch=16, lr=0.05):
  c = tiny_config(batch_size=batch, image_size=16, width=0.125)
  c.mode = "linear_eval"
  c.finetune.init, c.finetune.feature_norm = "random", feature_norm
  c.optim.name, c.optim.lr_scaling, c.optim.base_lr, c.optim.warmup_steps = "sgd", "none", lr, 0
  c.optim.weight_decay, c.optim.schedule = 0.0, "constant"
  return c


def make_batch(seed=0, n=16):
  rng = np.random.default_rng(seed)
  return {"image": rng.uniform(0, 1, (n, 16, 16, 3)).astype(np.float32),
          "label": np.tile(np.arange(2, dtype=np.int32), n // 2)}


def encoder_features(state, images):
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  return np.asarray(state.apply_fn(variables, jnp.asarray(images), train=False,
                                   method=lambda m, x, train: m.encoder(x, train=False)))


def with_random_head(state, seed=0):
  """Replaces the zero-initialised head by a random one, so the logits depend on the features."""
  k = state.params["classifier"]["kernel"]
  rng = np.random.default_rng(seed)
  head = {"kernel": jnp.asarray(rng.normal(size=k.shape), jnp.float32),
          "bias": jnp.asarray(rng.normal(size=k.shape[1:]), jnp.float32)}
  return state.replace(params=dict(state.params, classifier=head))


def test_train_mode_standardises_with_batch_statistics_and_test_mode_with_running_ones():
  c = lin_config()
  state = with_random_head(classify.create_state(c, make_mesh(), 2, jax.random.key(0)))
  x = make_batch()["image"]
  h = encoder_features(state, x)
  w, b = (np.asarray(state.params["classifier"][k]) for k in ("kernel", "bias"))
  variables = {"params": state.params, "batch_stats": state.batch_stats}

  logits, updates = state.apply_fn(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  z = (h - h.mean(0)) / np.sqrt(h.var(0) + EPS)
  np.testing.assert_allclose(np.asarray(logits), z @ w + b, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(updates["batch_stats"]["norm"]["mean"], (1 - MOMENTUM) * h.mean(0), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(updates["batch_stats"]["norm"]["var"], MOMENTUM + (1 - MOMENTUM) * h.var(0),
                             rtol=1e-5)
  # Test mode: the stored running statistics, not the batch's (here the initial 0 / 1).
  test_logits = state.apply_fn(variables, jnp.asarray(x), train=False)
  np.testing.assert_allclose(np.asarray(test_logits), h / np.sqrt(1 + EPS) @ w + b, rtol=1e-4, atol=1e-4)


def test_no_feature_norm_is_the_plain_linear_layer():
  c = lin_config(feature_norm="none")
  state = with_random_head(classify.create_state(c, make_mesh(), 2, jax.random.key(0)))
  assert "norm" not in state.batch_stats
  x = make_batch()["image"]
  w, b = (np.asarray(state.params["classifier"][k]) for k in ("kernel", "bias"))
  logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, jnp.asarray(x), train=True,
                          mutable=["batch_stats"])[0]
  np.testing.assert_allclose(np.asarray(logits), encoder_features(state, x) @ w + b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("feature_norm", ["none", "batchnorm"])
def test_linear_eval_step_leaves_the_encoder_and_its_statistics_alone(feature_norm):
  c = lin_config(feature_norm)
  mesh = make_mesh()
  state = classify.create_state(c, mesh, 2, jax.random.key(0))
  before_p, before_bs = jax.device_get(state.params), jax.device_get(state.batch_stats)
  step = jax.jit(functools.partial(classify.train_step, task="multiclass"))
  for s in range(3):
    state, _ = step(state, to_global(make_batch(s), mesh))
  after_p, after_bs = jax.device_get(state.params), jax.device_get(state.batch_stats)
  for a, b in zip(jax.tree_util.tree_leaves(after_p["encoder"]), jax.tree_util.tree_leaves(before_p["encoder"])):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree_util.tree_leaves(after_bs["encoder"]), jax.tree_util.tree_leaves(before_bs["encoder"])):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(after_p["classifier"]["kernel"], before_p["classifier"]["kernel"])
  if feature_norm == "batchnorm":
    assert not np.allclose(after_bs["norm"]["mean"], 0.0)


def test_feature_statistics_are_global_across_devices():
  """8 devices, 2 images each: the norm's statistics (and so the step) equal the 1-device step."""
  assert jax.device_count() == 8
  c = lin_config()
  batch = make_batch(3)
  out = []
  for devices in (jax.devices(), jax.devices()[:1]):
    mesh = make_mesh(devices)
    state = with_random_head(classify.create_state(c, mesh, 2, jax.random.key(0)))
    state, metrics = jax.jit(functools.partial(classify.train_step, task="multiclass"))(state, to_global(batch, mesh))
    out.append((jax.device_get(state.params["classifier"]), jax.device_get(state.batch_stats["norm"]),
                float(metrics["loss"])))
  (p8, bs8, l8), (p1, bs1, l1) = out
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves((p8, bs8)), jax.tree_util.tree_leaves((p1, bs1))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_standardised_head_learns_where_the_tiny_random_features_stall_a_plain_one():
  """Why the option exists: a random encoder's features are small in inference mode, so at a
  fixed learning rate a plain linear head barely moves, while the standardised one fits."""
  mesh = make_mesh()
  rng = np.random.default_rng(0)
  # Two classes of grey images that differ a little in brightness, as X-rays of one kind do:
  # the features separate them, at a tiny scale.
  labels = np.tile(np.arange(2, dtype=np.int32), 8)
  images = (rng.uniform(0.45, 0.55, (16, 16, 16, 3)) + 0.05 * labels[:, None, None, None]).astype(np.float32)
  batch = to_global({"image": images, "label": labels}, mesh)
  final = {}
  for norm in ("none", "batchnorm"):
    state = classify.create_state(lin_config(norm), mesh, 2, jax.random.key(0))
    spread = encoder_features(state, images).std(0).max()
    step = jax.jit(functools.partial(classify.train_step, task="multiclass"))
    for _ in range(30):
      state, metrics = step(state, batch)
    final[norm] = float(metrics["loss"])
  assert spread < 0.05, spread  # the premise: tiny features
  assert final["none"] > 0.9 * np.log(2), final  # still near the loss of a constant guess
  assert final["batchnorm"] < 0.5 * np.log(2), final


def test_unknown_feature_norm_is_refused():
  with pytest.raises(ValueError, match="finetune.feature_norm='layernorm'"):
    classify.create_state(lin_config("layernorm"), make_mesh(), 2, jax.random.key(0))
