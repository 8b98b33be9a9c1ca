"""NumPy (TensorFlow-free) augmentation: each op against hand-computed values or a direct
NumPy formula, and whole views for shape, determinism and per-op independence of draws."""
import numpy as np
import pytest

from input_pipeline import augment_np as A

_LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)


class _Aug:
  """Stand-in for configs/base.py's `aug`: everything off unless overridden."""

  def __init__(self, **overrides):
    self.crop, self.crop_area_min, self.crop_area_max = False, 0.08, 1.0
    self.crop_aspect_min, self.crop_aspect_max = 3 / 4, 4 / 3
    self.flip = False
    self.color_strength, self.color_prob, self.grayscale_prob = 1.0, 0.0, 0.0
    self.blur_prob, self.rotation_degrees = 0.0, 0.0
    self.additive_brightness, self.std_contrast = 0.0, 0.0
    for key, value in overrides.items():
      assert hasattr(self, key), key
      setattr(self, key, value)


_ALL_ON = dict(crop=True, flip=True, color_prob=0.8, grayscale_prob=0.2, blur_prob=0.5,
               rotation_degrees=30.0, additive_brightness=0.2, std_contrast=0.2)


def _uint8(h, w, c, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (h, w, c)).astype(np.uint8)


def _float(h, w, c, seed=0):
  return np.random.RandomState(seed).uniform(0, 1, (h, w, c)).astype(np.float32)


# ---- dtype, channels, resize -----------------------------------------------------------


def test_to_float_and_channels():
  img = np.array([[[255, 0, 0], [10, 20, 30]]], np.uint8)
  f = A.to_float(img)
  assert f.dtype == np.float32
  np.testing.assert_array_equal(f, img.astype(np.float32) / np.float32(255))
  grey = A.to_channels(img, 1)
  assert grey.shape == (1, 2, 1)
  np.testing.assert_allclose(grey[0, 0, 0], 0.2989, atol=1e-6)
  np.testing.assert_allclose(grey[0, 1, 0], (0.2989 * 10 + 0.5870 * 20 + 0.1140 * 30) / 255,
                             atol=1e-6)
  rgba = np.concatenate([img, np.full((1, 2, 1), 7, np.uint8)], axis=-1)
  np.testing.assert_array_equal(A.to_channels(rgba, 3), f)
  g2 = np.array([[0, 128], [255, 3]], np.uint8)  # 2-D input gets a channel axis.
  tiled = A.to_channels(g2, 3)
  assert tiled.shape == (2, 2, 3)
  for c in range(3):
    np.testing.assert_array_equal(tiled[..., c], g2 / np.float32(255))
  with pytest.raises(ValueError):
    A.to_channels(img, 2)


def test_resize_bilinear():
  x = np.array([[0, 1], [2, 3]], np.float32)[..., None]
  out = A.resize_bilinear(x, 4, 4)[..., 0]
  # Half-pixel centres: source coords -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
  np.testing.assert_allclose(out[0], [0, 0.25, 0.75, 1], atol=1e-6)
  np.testing.assert_allclose(out[:, 0], [0, 0.5, 1.5, 2], atol=1e-6)
  np.testing.assert_allclose(out[1, 1], 0.75 * (0.75 * 0 + 0.25 * 1) + 0.25 * (0.75 * 2 + 0.25 * 3),
                             atol=1e-6)
  img = _float(7, 5, 3)
  same = A.resize_bilinear(img, 7, 5)
  np.testing.assert_array_equal(same, img)
  assert same is not img
  const = np.full((9, 13, 2), 0.3, np.float32)
  np.testing.assert_allclose(A.resize_bilinear(const, 5, 17), 0.3, atol=1e-6)
  # 4 -> 2 averages neighbouring pairs (source coords 0.5 and 2.5).
  row = np.array([[0, 2, 4, 8]], np.float32)[..., None]
  np.testing.assert_allclose(A.resize_bilinear(row, 1, 2)[0, :, 0], [1, 6], atol=1e-6)


# ---- crop ------------------------------------------------------------------------------


def test_crop_box_inside_and_in_range():
  h, w = 100, 120
  area_range, aspect_range = (0.08, 1.0), (3 / 4, 4 / 3)
  boxes = []
  for seed in range(200):
    oy, ox, ch, cw = A.crop_box(h, w, np.random.default_rng(seed), area_range, aspect_range)
    assert all(isinstance(v, int) for v in (oy, ox, ch, cw))
    assert 0 <= oy and oy + ch <= h and 0 <= ox and ox + cw <= w and ch > 0 and cw > 0
    assert area_range[0] - 0.01 <= ch * cw / (h * w) <= area_range[1] + 0.01
    assert aspect_range[0] * 0.95 <= cw / ch <= aspect_range[1] * 1.05
    boxes.append((oy, ox, ch, cw))
  assert len(set(boxes)) > 150   # Boxes actually vary.


def test_crop_box_impossible_is_whole_image():
  rng = np.random.default_rng(0)
  assert A.crop_box(30, 20, rng, area_range=(2.0, 3.0)) == (0, 0, 30, 20)
  assert A.crop_box(30, 30, rng, area_range=(1.0, 1.0), aspect_range=(1.0, 1.0)) == (0, 0, 30, 30)


def test_random_resized_crop_matches_box():
  img = _float(40, 33, 3)
  out = A.random_resized_crop(img, np.random.default_rng(5), 16)
  oy, ox, ch, cw = A.crop_box(40, 33, np.random.default_rng(5))
  np.testing.assert_array_equal(out, A.resize_bilinear(img[oy:oy + ch, ox:ox + cw], 16, 16))


# ---- rotation, flip --------------------------------------------------------------------


def test_rotate():
  img = _float(9, 9, 2)
  np.testing.assert_array_equal(A.rotate(img, 0.0), img)
  # Counter-clockwise: a quarter turn is np.rot90 (the top-right corner moves to top-left).
  np.testing.assert_allclose(A.rotate(img, np.pi / 2), np.rot90(img), atol=1e-5)
  rect = _float(6, 11, 1)
  np.testing.assert_allclose(A.rotate(rect, np.pi), rect[::-1, ::-1], atol=1e-5)
  # REFLECT fill: no black corners, a constant image stays constant.
  np.testing.assert_allclose(A.rotate(np.full((10, 7, 3), 0.6, np.float32), 0.7), 0.6, atol=1e-6)


def test_fold_reflect_and_symmetric():
  c = np.array([-2.0, -1.0, -0.5, 0.0, 3.0, 4.0, 5.0, 3.5])
  np.testing.assert_allclose(A._fold(c, 4, "reflect"), [2, 1, 0.5, 0, 3, 2, 1, 2.5])
  np.testing.assert_allclose(A._fold(c, 4, "symmetric"), [1, 0, 0, 0, 3, 3, 2, 3])


def test_random_flip():
  img = _float(5, 6, 3)
  np.testing.assert_array_equal(A.random_flip(img, np.random.default_rng(0), 1.0), img[:, ::-1])
  np.testing.assert_array_equal(A.random_flip(img, np.random.default_rng(0), 0.0), img)
  flipped = [np.array_equal(A.random_flip(img, np.random.default_rng(s)), img[:, ::-1])
             for s in range(40)]
  assert 5 < sum(flipped) < 35
  expected = [np.random.default_rng(s).random() < 0.5 for s in range(40)]
  assert flipped == expected


# ---- colour ----------------------------------------------------------------------------


def test_hsv_round_trip_and_hue():
  px = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.25, 0.25], [0.2, 0.2, 0.2]], np.float32)
  hsv = A.rgb_to_hsv(px)
  np.testing.assert_allclose(hsv, [[0, 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 1], [0, 0.5, 0.5],
                                   [0, 0, 0.2]], atol=1e-6)
  img = _float(8, 7, 3)
  np.testing.assert_allclose(A.hsv_to_rgb(A.rgb_to_hsv(img)), img, atol=1e-5)
  np.testing.assert_allclose(A.adjust_hue(img, 0.0), img, atol=1e-5)
  np.testing.assert_allclose(A.adjust_hue(px[:3], 1 / 3), px[[1, 2, 0]], atol=1e-5)


def test_color_jitter_grey_matches_formula():
  img = _float(6, 5, 1)
  out = A.color_jitter(img, np.random.default_rng(3), 0.5)
  assert out.shape == img.shape and out.dtype == np.float32
  rng = np.random.default_rng(3)
  bright, contrast = rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4)
  ref = img.astype(np.float64)
  for i in rng.permutation(2):
    if i == 0:
      ref = ref * bright
    else:
      ref = ref.mean() + contrast * (ref - ref.mean())
    ref = np.clip(ref, 0, 1)
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_color_jitter_colour_in_range_and_no_draw_when_off():
  img = _float(6, 5, 3)
  out = A.color_jitter(img, np.random.default_rng(1), 1.0)
  assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
  assert not np.allclose(out, img)
  rng = np.random.default_rng(0)
  state = rng.bit_generator.state
  assert A.random_color_jitter(img, rng, 1.0, 0.0) is img
  assert A.random_color_jitter(img, rng, 0.0, 1.0) is img
  assert rng.bit_generator.state == state


def test_grayscale():
  img = _float(4, 3, 3)
  g = A.to_grayscale(img)
  ref = img @ _LUMA
  for c in range(3):
    np.testing.assert_allclose(g[..., c], ref, atol=1e-6)
  grey = _float(4, 3, 1)
  assert A.to_grayscale(grey) is grey
  np.testing.assert_array_equal(A.random_grayscale(img, np.random.default_rng(0), 1.0), g)


def test_additive_brightness_and_std_contrast():
  img = _float(5, 4, 3)
  d = np.random.default_rng(7).uniform(-0.3, 0.3)
  out = A.random_additive_brightness(img, np.random.default_rng(7), 0.3)
  np.testing.assert_allclose(out, img + d, atol=1e-6)
  assert out.dtype == np.float32
  f = 1 + np.random.default_rng(8).uniform(-0.4, 0.4)
  mean = img.mean(axis=(0, 1))
  out = A.random_std_contrast(img, np.random.default_rng(8), 0.4)
  np.testing.assert_allclose(out, mean + f * (img - mean), atol=1e-6)
  assert out.dtype == np.float32


# ---- blur ------------------------------------------------------------------------------


def test_gaussian_blur():
  assert [A.blur_kernel_size(s) for s in (16, 28, 32, 64, 224)] == [3, 3, 3, 7, 23]
  k = A.gaussian_kernel_1d(1.0, 5)
  np.testing.assert_allclose(k.sum(), 1.0, atol=1e-6)
  np.testing.assert_allclose(k, k[::-1])
  const = np.full((8, 9, 2), 0.4, np.float32)
  np.testing.assert_allclose(A.gaussian_blur(const, 1.3, 5), 0.4, atol=1e-6)
  img = _float(8, 9, 2)
  out = A.gaussian_blur(img, 1.3, 5)
  k2 = np.outer(A.gaussian_kernel_1d(1.3, 5), A.gaussian_kernel_1d(1.3, 5))
  pad = np.pad(img, [(2, 2), (2, 2), (0, 0)], mode="reflect")
  ref = np.zeros_like(img)
  for y in range(8):
    for x in range(9):
      ref[y, x] = np.einsum("ij,ijc->c", k2, pad[y:y + 5, x:x + 5])
  np.testing.assert_allclose(out, ref, atol=1e-6)
  with pytest.raises(ValueError):
    A.gaussian_blur(img, 1.0, 4)


# ---- whole views -----------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("shape", [(28, 28), (40, 33)])
@pytest.mark.parametrize("c_in", [1, 3])
def test_view_shape_range_determinism(channels, shape, c_in):
  view = A.make_view_fn(_Aug(**_ALL_ON), 24, channels)
  img = _uint8(*shape, c_in)
  a = view(img, np.array([3, 0]))
  assert a.shape == (24, 24, channels) and a.dtype == np.float32
  assert a.min() >= 0 and a.max() <= 1
  np.testing.assert_array_equal(a, view(img, [3, 0]))
  assert not np.array_equal(a, view(img, np.array([3, 1])))


def test_view_draws_are_independent_per_op():
  img = _uint8(40, 33, 3)
  base = A.make_view_fn(_Aug(crop=True), 16, 3)
  with_flip = A.make_view_fn(_Aug(crop=True, flip=True), 16, 3)
  with_bright = A.make_view_fn(_Aug(crop=True, additive_brightness=0.3), 16, 3)
  with_blur = A.make_view_fn(_Aug(crop=True, blur_prob=1.0), 16, 3)
  n_flipped = 0
  for s in range(12):
    seed = np.array([s, 1])
    x = base(img, seed)
    # Crop-only view: the box is drawn from op 0's generator.
    oy, ox, ch, cw = A.crop_box(40, 33, np.random.default_rng([s, 1, 0]))
    crop = img[oy:oy + ch, ox:ox + cw]
    np.testing.assert_array_equal(x, A.resize(crop, 16, 16) / np.float32(255))   # resized in uint8, then float
    np.testing.assert_allclose(x, A.resize_bilinear(crop / np.float32(255), 16, 16), atol=1 / 255)
    # Adding a flip keeps the crop; the flip decision comes from op 2's generator.
    flip = np.random.default_rng([s, 1, 2]).random() < 0.5
    n_flipped += flip
    np.testing.assert_array_equal(with_flip(img, seed), x[:, ::-1] if flip else x)
    # Adding brightness keeps the crop; the delta comes from op 5's generator.
    d = np.random.default_rng([s, 1, 5]).uniform(-0.3, 0.3)
    np.testing.assert_allclose(with_bright(img, seed), np.clip(x + d, 0, 1), atol=1e-6)
    # Adding blur keeps the crop; apply draw, then sigma, from op 7's generator.
    blur_rng = np.random.default_rng([s, 1, 7])
    blur_rng.random()
    sigma = blur_rng.uniform(0.1, 2.0)
    np.testing.assert_allclose(with_blur(img, seed), A.gaussian_blur(x, sigma, 3), atol=1e-6)
  assert 0 < n_flipped < 12


def test_view_without_crop_resizes_whole_image():
  img = _uint8(40, 33, 1)
  out = A.make_view_fn(_Aug(), 20, 3)(img, [0, 0])
  # Resized as 1 channel in uint8, tiled to 3 after; within a grey level of tiling first, resizing in float.
  np.testing.assert_array_equal(out, np.tile(A.resize(img, 20, 20), (1, 1, 3)) / np.float32(255))
  np.testing.assert_allclose(out, A.resize_bilinear(np.tile(img / np.float32(255), (1, 1, 3)), 20, 20),
                             atol=1 / 255)


def test_eval_fn():
  img = _uint8(28, 28, 1)
  out = A.make_eval_fn(28, 1)(img)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, img.astype(np.float32) / np.float32(255))
  out3 = A.make_eval_fn(20, 3)(_uint8(40, 33, 3))
  assert out3.shape == (20, 20, 3) and out3.min() >= 0 and out3.max() <= 1
