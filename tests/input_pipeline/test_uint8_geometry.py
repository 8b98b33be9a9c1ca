"""Geometry in uint8 before any float work (issue 27 item 2), against the ops it replaced.

Before: the crop was converted to float32 and given its channels (grey tiled to 3), then resized
(NumPy bilinear) and rotated in float. Now the crop, the resize and the rotation run on the decoded
uint8 image (OpenCV in `augment_np`, tf.image.resize reading uint8 in `augment`), and float and channels
come after. The references below are the old order, built from the float ops that are kept
(`augment_np.resize_bilinear`, `augment_np.rotate` on float, `to_channels` first), with the same
random draws; each pipeline (numpy, grain, tf.data) is compared with them on grey, RGB, 16-bit and
non-square images, pretraining pairs, supervised views and evaluation arrays.

Tolerances, in grey levels (x 255), per view (measured on these images: resize <= 0.8, resize and
rotation <= 1.2, with the photometric ops <= 3.7, mean -0.14):
"""
import dataclasses
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from configs import chexpert_simclr, derm_simclr
from configs.base import get_base_config
from input_pipeline import augment, augment_np as A, grain_pipeline, indexing, numpy_pipeline, pipeline, sources
from input_pipeline import view_plan
from tests.input_pipeline.test_decode import pillow_reference

RESIZE_MAX = 1.0   # float views, crop + resize: OpenCV's INTER_LINEAR rounds to a level (fixed-point weights)
ROTATE_MAX = 1.5   # float views, crop + resize + rotation: two roundings to a level
UINT8_MAX = 1      # uint8 views (aug.on_device), both rounded: at most one level apart
FULL_MAX = 4.0     # with the photometric ops on (the same draws; brightness / contrast scale the rounding)
MEAN_MAX = 0.25    # |mean(new - old)|: OpenCV's rounding is biased by about -0.13 level
TF_MAX = 1e-3      # tf.data: the same float ops, reordered (float rounding only)

SIZE = 24


# ---- references: the old order, float before the resize ----------------------------------------


def old_numpy_ops(channels):
  """The NumPy ops as they ran before: channels and float32 first, then the float resize and rotation."""
  return dataclasses.replace(
      A.NUMPY_OPS, resize=lambda x, side: A.resize_bilinear(A.to_channels(x, channels), side, side),
      rotation=lambda x, rng, deg: A.rotate(A.to_float(x), A.rotation_angle(rng, deg)), to_channels=lambda x, c: x)


def old_numpy_view(aug, size, channels, on_device=False):
  plan = view_plan.ViewPlan.from_config(aug, size, channels)
  plan = plan.host_part() if on_device else plan
  ops = old_numpy_ops(channels)

  def view(image, seed):
    x = np.asarray(image)
    x = view_plan.apply(plan, ops, x[..., None] if x.ndim == 2 else x, A.op_rngs(seed), seed=seed).astype(np.float32)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8) if on_device else x

  return view


def old_numpy_eval(size, channels, fraction):
  return lambda image: view_plan.apply_eval(old_numpy_ops(channels), image, size, channels, fraction)


def old_tf_ops(channels):
  """The tf.data ops as they ran before: channels and float32 first, then the resize."""
  return dataclasses.replace(augment.TF_OPS, to_channels=lambda x, c: x,
                             resize=lambda x, side: augment.resize(augment.to_channels(x, channels), side))


def old_tf_view(aug, size, channels, on_device=False):
  plan = view_plan.ViewPlan.from_config(aug, size, channels)
  plan = plan.host_part() if on_device else plan
  ops = old_tf_ops(channels)

  def view(image, seed):
    x = view_plan.apply(plan, ops, image, augment._split(seed, view_plan.NUM_OPS), seed=seed)
    return tf.cast(tf.round(x * 255.0), tf.uint8) if on_device else x

  return view


def assert_close(new, old, max_levels, mean_levels=MEAN_MAX, what=""):
  new, old = np.asarray(new, np.float64), np.asarray(old, np.float64)
  assert new.shape == old.shape, what
  if np.issubdtype(np.asarray(old).dtype, np.floating) and old.max() <= 1.0:
    new, old = new * 255, old * 255
  d = new - old
  assert np.abs(d).max() <= max_levels + 1e-6, f"{what}: max |new - old| = {np.abs(d).max():.3f} levels"
  assert abs(d.mean()) <= mean_levels, f"{what}: mean(new - old) = {d.mean():.3f} levels"


# ---- images ------------------------------------------------------------------------------------


def _natural(h, w, c, seed, levels=255):
  """Smooth structure plus pixel noise, like an X-ray at this scale (strong local contrast included)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  base = 0.5 + 0.35 * np.sin(yy / (4.0 + seed % 3))[..., None] * np.cos(xx[..., None] / 6.0 + np.arange(c))
  x = np.clip(base + rng.normal(0, 0.04, (h, w, c)), 0, 1) * levels
  return np.round(x).astype(np.uint16 if levels > 255 else np.uint8)


IMAGES = {"grey": _natural(40, 33, 1, 0), "rgb": _natural(33, 57, 3, 1), "grey-square": _natural(64, 64, 1, 2),
          "rgb-wide": _natural(29, 71, 3, 3)}
def _with(aug, **overrides):
  """A plain copy of the `aug` settings, with `overrides`."""
  fields = vars(aug) if isinstance(aug, types.SimpleNamespace) else {k: getattr(aug, k) for k in aug.keys()}
  return types.SimpleNamespace(**fields | overrides)


SIMCLR, CHEXPERT = _with(derm_simclr.get_config().aug), _with(chexpert_simclr.get_config().aug)


def _geometry_only(aug, rotation=0.0, crop_mode="inception"):
  """`aug` with every op but the crop (and `rotation`) off."""
  return _with(aug, crop=True, crop_mode=crop_mode, rotation_degrees=rotation, flip=False, color_prob=0.0,
               grayscale_prob=0.0, blur_prob=0.0, additive_brightness=0.0, std_contrast=0.0, on_device=False)


# ---- the NumPy ops -------------------------------------------------------------------------------


def test_opencv_resize_and_rotation_against_the_float_ops():
  rng = np.random.default_rng(0)
  for shape in [(40, 33, 1), (33, 57, 3), (17, 90, 1), (300, 200, 3)]:
    x = rng.integers(0, 256, shape).astype(np.uint8)  # pixel noise: the worst case for rounding
    for side in (7, 24, 64, 301):
      got = A.resize(x, side, side)
      assert got.dtype == np.uint8 and got.shape == (side, side, shape[2])
      assert_close(got, A.resize_bilinear(x, side, side), RESIZE_MAX, what=f"resize {shape} -> {side}")
    n = min(shape[0], shape[1], 33)
    sq, rect = x[:n, :n], x[:n, :n + 7]
    for angle in (0.3, -0.7, 2.0):
      got = A.rotate(sq, angle)
      assert got.dtype == np.uint8
      # One rounding: within half a level of the float rotation of the same levels.
      assert_close(got, A.rotate(sq.astype(np.float32), angle), 0.51, what=f"rotate {angle}")
      assert_close(A.rotate(sq, angle, "reflect"), A.rotate(sq.astype(np.float32), angle, "reflect"), 0.51)
      assert_close(A.rotate(rect, angle), A.rotate(rect.astype(np.float32), angle), 0.51, what="non-square")
    np.testing.assert_array_equal(A.rotate(sq, np.pi / 2), np.rot90(sq))
    np.testing.assert_array_equal(A.rotate(sq, 0.0), sq)
  x16 = rng.integers(0, 65536, (31, 45, 1)).astype(np.uint16)
  got = A.resize(x16, 24, 24)
  assert got.dtype == np.uint16
  assert_close(got / 257.0, A.resize_bilinear(x16, 24, 24) / 257.0, RESIZE_MAX / 257 * 1.01, 0.01)


@pytest.mark.parametrize("name", sorted(IMAGES))
@pytest.mark.parametrize("channels", [1, 3])
def test_numpy_views_against_the_old_float_path(name, channels):
  image = IMAGES[name]
  cases = [("simclr geometry", _geometry_only(SIMCLR), False, RESIZE_MAX),
           ("fixed crop", _geometry_only(SIMCLR, crop_mode="fixed"), False, RESIZE_MAX),
           ("chexpert geometry", _geometry_only(CHEXPERT, rotation=CHEXPERT.rotation_degrees), False, ROTATE_MAX),
           ("simclr host part", SIMCLR, True, UINT8_MAX), ("chexpert host part", CHEXPERT, True, UINT8_MAX),
           ("simclr", SIMCLR, False, FULL_MAX), ("chexpert", CHEXPERT, False, FULL_MAX)]
  for what, aug, on_device, tol in cases:
    new, old = A.make_view_fn(aug, SIZE, channels, on_device), old_numpy_view(aug, SIZE, channels, on_device)
    for s in range(6):
      got, want = new(image, (s, 9)), old(image, (s, 9))
      assert got.dtype == want.dtype == (np.uint8 if on_device else np.float32)
      assert got.shape == (SIZE, SIZE, channels)
      assert_close(got, want, tol, what=f"{what}, seed {s}")


def test_numpy_views_of_16_bit_arrays():
  image = _natural(37, 52, 1, 4, levels=65535)
  for aug in (_geometry_only(SIMCLR), _geometry_only(CHEXPERT, rotation=30.0)):
    for channels in (1, 3):
      new, old = A.make_view_fn(aug, SIZE, channels), old_numpy_view(aug, SIZE, channels)
      for s in range(4):   # in 16 bits the rounding is 257 times finer
        assert_close(new(image, (s, 1)), old(image, (s, 1)), 0.01, 0.01)
      sent = A.make_view_fn(aug, SIZE, channels, on_device=True)(image, (3, 1))
      assert_close(sent, old_numpy_view(aug, SIZE, channels, True)(image, (3, 1)), UINT8_MAX)


@pytest.mark.parametrize("fraction", [1.0, 0.875])
def test_numpy_eval_view_against_the_old_float_path(fraction):
  for name, image in IMAGES.items():
    for channels in (1, 3):
      got = A.make_eval_fn(SIZE, channels, fraction)(image)
      assert got.dtype == np.float32
      assert_close(got, old_numpy_eval(SIZE, channels, fraction)(image), RESIZE_MAX, what=name)


def test_on_device_view_never_leaves_uint8(monkeypatch):
  """The host part of a uint8 image is uint8 all the way: no float op runs (to_float would be the first)."""
  calls = []
  monkeypatch.setattr(A, "to_float", lambda x: calls.append(x.dtype) or np.asarray(x, np.float32) / 255)
  for name in ("grey", "rgb"):
    for channels in (1, 3):
      A.make_view_fn(CHEXPERT, SIZE, channels, on_device=True)(IMAGES[name], (1, 2))
  assert calls == [np.uint8]   # only rgb -> grey: its luma is computed in float, as before


# ---- the pipelines, from files -----------------------------------------------------------------


def _file_source(tmp_path):
  """Non-square files: 8-bit grey PNG, RGB PNG, 16-bit grey PNG, grey JPEG, RGB JPEG (one case each)."""
  files = [("grey.png", IMAGES["grey"][..., 0], {}), ("rgb.png", IMAGES["rgb"], {}),
           ("grey16.png", _natural(45, 38, 1, 5, levels=65535)[..., 0], {}),
           ("grey.jpg", IMAGES["grey-square"][..., 0], dict(quality=95)),
           ("rgb.jpg", IMAGES["rgb-wide"], dict(quality=95))]
  paths = []
  for name, x, kw in files:
    Image.fromarray(x).save(tmp_path / name, **kw)
    paths.append(str(tmp_path / name))
  n = len(paths)
  return sources.Source("files", np.arange(n) % 2, np.array([f"c{k}" for k in range(n)]),
                        np.array([f"i{k}" for k in range(n)]), 2, paths=np.array(paths))


def _data_cfg(channels):
  c = get_base_config().data
  c.image_size, c.channels, c.max_bag_size, c.host_workers = SIZE, channels, 6, 1
  return c


def _take(it, n):
  out = [next(it) for _ in range(n)]
  it.close()
  return out


def _expected_pairs(src, aug, channels, on_device, steps, view_of):
  """The reference pairs of batches 0 .. steps-1 (pairing 'views', global batch 4, seed 3)."""
  table, sizes, case_index, _ = indexing.pretrain_units(src, "views", 6)
  out = []
  for step in range(steps):
    examples = indexing.pair_batch(table, sizes, case_index, global_batch=4, seed=3, step=step, process_index=0,
                                   process_count=1)
    out.append([(view_of(ia, sa), view_of(ib, sb)) for ia, ib, _, sa, sb in examples])
  return out


PIPELINE_CASES = [(SIMCLR, True, UINT8_MAX), (_geometry_only(CHEXPERT, rotation=45.0), False, ROTATE_MAX),
                  (CHEXPERT, False, FULL_MAX)]


@pytest.mark.parametrize("module,channels", [("numpy", 1), ("numpy", 3), ("grain", 3)])
def test_numpy_and_grain_pretraining_batches_against_the_old_float_path(tmp_path, module, channels):
  if module == "grain":
    pytest.importorskip("grain")
  src = _file_source(tmp_path)
  decoded = [pillow_reference(p) for p in src.paths]   # the decoder before issue 27
  mod = {"numpy": numpy_pipeline, "grain": grain_pipeline}[module]
  for aug, on_device, tol in PIPELINE_CASES[:2] if module == "grain" else PIPELINE_CASES:
    aug = _with(aug, on_device=on_device)
    old = old_numpy_view(aug, SIZE, channels, on_device)
    want = _expected_pairs(src, aug, channels, on_device, 2, lambda i, s: old(decoded[i], s))
    got = _take(mod.pretrain_iterator(src, data_cfg=_data_cfg(channels), aug_cfg=aug, pairing="views", global_batch=4,
                                      seed=3), 2)
    for batch, pairs in zip(got, want):
      assert batch["view_a"].dtype == (np.uint8 if on_device else np.float32)
      for k, (a, b) in enumerate(pairs):
        assert_close(batch["view_a"][k], a, tol, what=f"{module} view_a {k}")
        assert_close(batch["view_b"][k], b, tol, what=f"{module} view_b {k}")


@pytest.mark.parametrize("channels", [1, 3])
def test_numpy_supervised_and_eval_arrays_against_the_old_float_path(tmp_path, channels):
  src = _file_source(tmp_path)
  decoded = [pillow_reference(p) for p in src.paths]
  aug = _geometry_only(SIMCLR, crop_mode="fixed")
  old = old_numpy_view(aug, SIZE, channels)
  it = numpy_pipeline.supervised_iterator(src, aug_cfg=aug, image_size=SIZE, channels=channels, global_batch=5, seed=4)
  batch = _take(it, 1)[0]
  stream = indexing.supervised_stream(np.arange(5), np.asarray(src.labels), global_batch=5, seed=4, start_step=0,
                                      process_index=0, process_count=1)
  for k in range(5):
    i, _, s = next(stream)
    assert batch["index"][k] == i
    assert_close(batch["image"][k], old(decoded[i], s), RESIZE_MAX, what=f"supervised {k}")
  for fraction in (1.0, 0.875):
    got, _ = numpy_pipeline.make_eval_arrays(src, SIZE, channels, crop_fraction=fraction)
    for i in range(len(src)):
      assert_close(got[i], old_numpy_eval(SIZE, channels, fraction)(decoded[i]), RESIZE_MAX, what=f"eval {i}")


@pytest.mark.parametrize("channels", [1, 3])
def test_tf_data_resizes_uint8_and_sets_channels_after(tmp_path, channels):
  """tf.data: crop and resize read the decoded uint8 image, channels come after the rotation; the views are
  the old ones up to float rounding (TF_MAX), the 16-bit file included."""
  src = _file_source(tmp_path)
  load = pipeline._loader(src)
  for aug, on_device in [(SIMCLR, True), (CHEXPERT, False), (_geometry_only(CHEXPERT, 45.0), False)]:
    aug = _with(aug, on_device=on_device)
    old = old_tf_view(aug, SIZE, channels, on_device)
    want = _expected_pairs(src, aug, channels, on_device, 2, lambda i, s: old(load(tf.constant(i, tf.int64)),
                                                                             tf.constant(s)).numpy())
    got = _take(pipeline.pretrain_iterator(src, data_cfg=_data_cfg(channels), aug_cfg=aug, pairing="views",
                                           global_batch=4, seed=3), 2)
    for batch, pairs in zip(got, want):
      for k, (a, b) in enumerate(pairs):
        # uint8 views: the same float values, rounded; a value on a rounding edge may land one level off.
        tol = UINT8_MAX if on_device else TF_MAX
        assert_close(batch["view_a"][k], a, tol, TF_MAX if not on_device else 0.05, what=f"view_a {k}")
        assert_close(batch["view_b"][k], b, tol, TF_MAX if not on_device else 0.05, what=f"view_b {k}")
  for fraction in (1.0, 0.875):
    got, _ = pipeline.make_eval_arrays(src, SIZE, channels, crop_fraction=fraction)
    for i in range(len(src)):
      want = view_plan.apply_eval(old_tf_ops(channels), load(tf.constant(i, tf.int64)), SIZE, channels, fraction)
      assert_close(got[i], want.numpy(), TF_MAX, TF_MAX, what=f"eval {i}")


def test_tf_resize_reads_uint8_without_converting_the_image_first():
  image = IMAGES["rgb-wide"]
  got = augment.resize(tf.constant(image), SIZE).numpy()
  want = augment.resize(tf.image.convert_image_dtype(tf.constant(image), tf.float32), SIZE).numpy()
  assert got.dtype == np.float32 and got.shape == (SIZE, SIZE, 3)
  np.testing.assert_allclose(got, want, atol=1e-6)
  # Grey stays one channel through the resize; the view tiles it after.
  grey = augment.resize(tf.constant(IMAGES["grey"]), SIZE)
  assert grey.shape[-1] == 1
  view = augment.make_eval_fn(SIZE, 3)(tf.constant(IMAGES["grey"])).numpy()
  np.testing.assert_allclose(view, np.repeat(grey.numpy(), 3, axis=-1), atol=1e-7)


def test_tf_colour_made_grey_clips_each_channel_before_the_luma():
  """The one change in tf.data beyond float rounding: colour -> grey now takes the luma of the clipped
  resized colours (before: clipped the luma of the resized grey), so the views differ only at pixels where
  the bicubic resize overshoots [0, 1] in some channel (pixel noise here: the worst case)."""
  x = np.random.default_rng(5).integers(0, 256, (13, 10, 3)).astype(np.uint8)  # enlarged: bicubic overshoots
  got = augment.make_eval_fn(SIZE, 1)(tf.constant(x)).numpy()
  raw = tf.image.resize(x, [SIZE, SIZE], method="bicubic", antialias=True).numpy() / 255.0  # unclipped
  np.testing.assert_allclose(got, tf.image.rgb_to_grayscale(np.clip(raw, 0, 1).astype(np.float32)).numpy(), atol=1e-6)
  old = view_plan.apply_eval(old_tf_ops(1), tf.constant(x), SIZE, 1, 1.0).numpy()
  inside = np.all((raw >= 0) & (raw <= 1), axis=-1)
  assert 0 < inside.mean() < 1
  np.testing.assert_allclose(got[inside], old[inside], atol=1e-6)
