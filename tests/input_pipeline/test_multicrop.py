"""Multi-crop (aug.local_crops): every host pipeline adds 'local_views' (N, L, s, s, C); with case
pairs local view j comes from image a (even j) or b (odd j); adding local views changes neither the
global views nor, for local view j, its draws (its seed is view_plan.local_seed of its global view's);
grain's batches equal NumPy's; with aug.on_device the host sends uint8 local views and the step
augments them with keys of their own view slots; methods that cannot use them refuse them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from input_pipeline import augment_device
from input_pipeline import grain_pipeline
from input_pipeline import numpy_pipeline
from input_pipeline import pipeline as tf_pipeline
from input_pipeline import sources
from input_pipeline import view_plan
from medssl_jax import methods
from medssl_jax.errors import UserError
from tests.helpers import TOY_CASE_SIZES, tiny_config, toy_pretrain_config, toy_source

PIPELINES = {"numpy": numpy_pipeline, "tf": tf_pipeline, "grain": grain_pipeline}


def _config(local=3, size=4, pairing="case"):
  c = toy_pretrain_config(pairing)
  c.aug.local_crops, c.aug.local_crop_size = local, size
  return c


def _first(pipe, src, c, batch=8, start_step=0):
  it = PIPELINES[pipe].pretrain_iterator(src, data_cfg=c.data, aug_cfg=c.aug, pairing=c.pairing, global_batch=batch,
                                         seed=0, start_step=start_step)
  try:
    return next(it)
  finally:
    getattr(it, "close", lambda: None)()


def _textured(n_cases=8, size=24):
  rng = np.random.default_rng(0)
  n = 2 * n_cases
  return sources.Source("tex", np.arange(n) % 2, np.repeat([f"c{k}" for k in range(n_cases)], 2),
                        np.array([f"i{k}" for k in range(n)]), 2,
                        images=rng.integers(0, 256, (n, size, size, 3), np.uint8))


@pytest.mark.parametrize("pipe", ["numpy", "tf", "grain"])
def test_local_views_come_from_the_pairs_images_alternately(pipe):
  c = _config()
  src = toy_source(TOY_CASE_SIZES, size=16)  # constant images: value 10 * case + image
  c.data.host_workers = 1
  b = _first(pipe, src, c)
  assert b["local_views"].shape == (8, 3, 4, 4, 1) and b["local_views"].dtype == np.float32
  value = lambda i: src.images[i][0, 0, 0] / 255.0  # noqa: E731
  for n in range(8):
    for j in range(3):
      expected = value(b["image_b"][n] if j % 2 else b["image_a"][n])
      np.testing.assert_allclose(b["local_views"][n, j], expected, atol=1e-6)
  assert np.any(b["distinct"])  # some pairs have two images, so the alternation is tested


@pytest.mark.parametrize("pipe", ["numpy", "tf"])
def test_local_views_change_neither_the_global_views_nor_each_others_draws(pipe):
  src = _textured()
  c0, c2, c4 = _config(local=0, size=8, pairing="views"), _config(local=2, size=8, pairing="views"), \
      _config(local=4, size=8, pairing="views")
  for c in (c0, c2, c4):
    c.data.image_size, c.data.channels = 12, 3
    c.aug.crop_area_min = 0.3
  b0, b2, b4 = (_first(pipe, src, c) for c in (c0, c2, c4))
  assert "local_views" not in b0
  for k in ("view_a", "view_b"):
    np.testing.assert_array_equal(b2[k], b0[k])
  np.testing.assert_array_equal(b4["local_views"][:, :2], b2["local_views"])
  # Local views differ from each other (their own draws), and they are deterministic per (seed, step).
  assert np.abs(b4["local_views"][:, 0] - b4["local_views"][:, 2]).max() > 0.05
  np.testing.assert_array_equal(_first(pipe, src, c4, start_step=3)["local_views"],
                                _first(pipe, src, c4, start_step=3)["local_views"])
  assert np.abs(_first(pipe, src, c4, start_step=3)["local_views"] - b4["local_views"]).max() > 0.05


def test_grain_batches_equal_the_numpy_batches_with_local_views():
  src, c = _textured(), _config(local=3, size=8, pairing="case")
  c.data.image_size, c.data.channels = 12, 3
  c.data.host_workers = 1
  g, n = _first("grain", src, c), _first("numpy", src, c)
  for k in n:
    np.testing.assert_array_equal(g[k], n[k], err_msg=k)


def test_local_seed_is_one_formula_for_numpy_and_tensorflow():
  import tensorflow as tf
  seed = np.array([123456789, 987654321], np.int64)
  for j in range(4):
    np.testing.assert_array_equal(view_plan.local_seed(seed, j), tf.constant(seed).__add__(
        tf.constant([0, (j + 1) * view_plan.LOCAL_SEED_STRIDE], tf.int64)).numpy())
    np.testing.assert_array_equal(view_plan.local_seed(tf.constant(seed), j).numpy(), view_plan.local_seed(seed, j))


def test_on_device_the_host_sends_uint8_local_views_and_the_step_augments_them_with_their_own_keys():
  src, c = _textured(), _config(local=2, size=8, pairing="views")
  c.data.image_size, c.data.channels = 12, 3
  c.aug.on_device = True
  c.aug.color_prob, c.aug.flip = 0.8, True
  b = _first("numpy", src, c)
  assert b["local_views"].dtype == np.uint8 and b["local_views"].shape == (8, 2, 8, 8, 3)
  plan = view_plan.ViewPlan.from_config(view_plan.LocalAug(c.aug), 8, 3)
  out = augment_device.augment_local_views(plan, jnp.asarray(b["local_views"]), 0, 5)
  assert out.dtype == jnp.float32 and out.shape == (8, 2, 8, 8, 3)
  x = b["local_views"].astype(np.float32) / 255.0
  for j in range(2):
    keys = augment_device.view_keys(0, 5, 8, 2 + j)
    want = jax.vmap(lambda img, key: augment_device.augment_view(plan, img, key))(jnp.asarray(x[:, j]), keys)
    np.testing.assert_allclose(out[:, j], want, rtol=1e-6, atol=1e-6)
  assert np.abs(np.asarray(out) - x).max() > 0.05  # augmented, not passed through

  seen = {}

  def fake_step(state, batch):
    seen.update(batch)
    return state, {}

  cfg = tiny_config()
  cfg.method, cfg.aug.local_crops, cfg.aug.local_crop_size, cfg.aug.on_device = "dino", 2, 8, True
  cfg.data.image_size = 12
  state = type("S", (), {"step": jnp.int32(5)})()
  augment_device.wrap_step(fake_step, cfg)(state, {k: jnp.asarray(v) for k, v in b.items()})
  assert seen["local_views"].dtype == jnp.float32 and seen["view_a"].dtype == jnp.float32


@pytest.mark.parametrize("method,changes,match", [
    ("simclr", {}, "does not use local views"),
    ("dino", {"model.arch": "vit"}, "position embeddings"),
    ("dino", {"aug.local_crop_size": 64}, "above data.image_size"),
    ("dino", {"aug.crop": False}, "needs aug.crop=True")])
def test_methods_refuse_local_views_they_cannot_use(method, changes, match):
  c = tiny_config()
  c.method, c.aug.local_crops, c.aug.local_crop_size = method, 2, 8
  for key, value in changes.items():
    group, name = key.split(".")
    c[group][name] = value
  with pytest.raises(UserError, match=match):
    methods.get(method).validate(c)
