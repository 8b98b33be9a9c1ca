"""Stateless augmentation: shapes, determinism, and each op against a numpy reference."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from configs.base import get_base_config
from input_pipeline import augment

_ALL_OFF = dict(crop=False, flip=False, color_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                rotation_degrees=0.0, additive_brightness=0.0, std_contrast=0.0)
_ALL_ON = dict(rotation_degrees=30.0, additive_brightness=0.2, std_contrast=0.2)
_LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)


def _aug(**overrides):
  aug = get_base_config().aug
  with aug.unlocked():
    for key, value in overrides.items():
      assert key in aug, key
      aug[key] = value
  return aug


def _image(h, w, c, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (h, w, c)).astype(np.uint8)


def _float_image(h, w, c, seed=0):
  return np.random.RandomState(seed).uniform(0.0, 1.0, (h, w, c)).astype(np.float32)


def _seed(a, b=0):
  return np.array([a, b], np.int64)


# ---- whole views -----------------------------------------------------------------------


@pytest.mark.parametrize("c_in,channels", list(itertools.product([1, 3], [1, 3])))
@pytest.mark.parametrize("hw", [(16, 16), (23, 40), (40, 17)])
def test_view_shape_dtype_range(c_in, channels, hw):
  view = augment.make_view_fn(_aug(**_ALL_ON), image_size=20, channels=channels)
  for s in range(2):
    out = view(_image(*hw, c_in, seed=s), _seed(s)).numpy()
    assert out.shape == (20, 20, channels) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
  ev = augment.make_eval_fn(20, channels)(_image(*hw, c_in)).numpy()
  assert ev.shape == (20, 20, channels) and ev.dtype == np.float32
  assert ev.min() >= 0.0 and ev.max() <= 1.0


def test_view_in_tf_data_with_varying_sizes():
  sizes = [(16, 16, 3), (31, 18, 3), (19, 40, 3)]
  images = [_image(*s, seed=i) for i, s in enumerate(sizes)]
  view = augment.make_view_fn(_aug(**_ALL_ON), image_size=16, channels=1)
  ds = tf.data.Dataset.from_generator(
      lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  ds = ds.enumerate().map(lambda i, x: view(x, tf.stack([i, 7])))
  assert ds.element_spec.shape == (16, 16, 1)
  outs = [x.numpy() for x in ds]
  for i, image in enumerate(images):   # Graph mode gives the eager result.
    np.testing.assert_array_equal(outs[i], view(image, _seed(i, 7)).numpy())


def test_eval_fn_resize_and_channel_conversion():
  rgb = _image(16, 16, 3)
  # Same size in and out: the resize is the identity.
  np.testing.assert_allclose(augment.make_eval_fn(16, 3)(rgb).numpy(), rgb / 255.0, atol=1e-5)
  grey = augment.make_eval_fn(16, 1)(rgb).numpy()
  np.testing.assert_allclose(grey[..., 0], (rgb / 255.0) @ _LUMA, atol=1e-5)
  tiled = augment.make_eval_fn(16, 3)(rgb[..., :1]).numpy()
  for ch in range(3):
    np.testing.assert_allclose(tiled[..., ch], rgb[..., 0] / 255.0, atol=1e-5)
  # Downscaling a constant image keeps the constant.
  const = np.full((37, 29, 1), 100, np.uint8)
  np.testing.assert_allclose(augment.make_eval_fn(16, 1)(const).numpy(), 100 / 255.0, atol=1e-5)


def test_determinism():
  view = augment.make_view_fn(_aug(**_ALL_ON), image_size=24, channels=3)
  image = _image(30, 26, 3)
  a = view(image, _seed(5, 1)).numpy()
  np.testing.assert_array_equal(a, view(image, _seed(5, 1)).numpy())
  np.testing.assert_array_equal(a, view(image, np.array([5, 1], np.int32)).numpy())
  np.testing.assert_array_equal(a, tf.function(view)(image, _seed(5, 1)).numpy())
  outs = [view(image, _seed(s, 1)).numpy() for s in range(6)]
  for x, y in itertools.combinations(outs, 2):
    assert np.abs(x - y).max() > 1e-3


def test_all_ops_off_equals_eval():
  for c_in, channels in [(1, 1), (3, 3), (3, 1), (1, 3)]:
    image = _image(33, 21, c_in)
    view = augment.make_view_fn(_aug(**_ALL_OFF), 16, channels)
    expected = augment.make_eval_fn(16, channels)(image).numpy()
    for s in range(3):
      np.testing.assert_array_equal(view(image, _seed(s)).numpy(), expected)


def test_each_switch_changes_the_view():
  image = _image(32, 32, 3)
  expected = augment.make_eval_fn(16, 3)(image).numpy()
  for key, value in [("crop", True), ("rotation_degrees", 30.0), ("color_prob", 1.0),
                     ("additive_brightness", 0.3), ("std_contrast", 0.5)]:
    view = augment.make_view_fn(_aug(**{**_ALL_OFF, key: value}), 16, 3)
    assert np.abs(view(image, _seed(3)).numpy() - expected).max() > 1e-3, key


# ---- crop ------------------------------------------------------------------------------


@pytest.mark.parametrize("hw,area,aspect", [
    ((40, 40), (0.08, 1.0), (3 / 4, 4 / 3)),
    ((30, 50), (0.08, 1.0), (3 / 4, 4 / 3)),
    ((40, 40), (0.3, 0.5), (0.5, 2.0)),
])
def test_crop_box_in_range(hw, area, aspect):
  h, w = hw
  areas, ratios = [], []
  for s in range(150):
    oy, ox, ch, cw = (int(v) for v in augment.crop_box([h, w, 3], _seed(s), area, aspect))
    assert 0 <= oy and oy + ch <= h and 0 <= ox and ox + cw <= w
    areas.append(ch * cw / (h * w))
    ratios.append(cw / ch)
  areas, ratios = np.array(areas), np.array(ratios)
  assert areas.min() >= area[0] - 1e-6 and areas.max() <= area[1] + 1e-6
  # Integer box sides round the aspect ratio; allow one pixel's worth.
  assert ratios.min() >= aspect[0] * (1 - 1 / min(h, w)) - 0.05
  assert ratios.max() <= aspect[1] * (1 + 1 / min(h, w)) + 0.05
  assert areas.max() - areas.min() > 0.5 * (area[1] - area[0])   # Really random.


def test_random_resized_crop_uses_the_box():
  image = _float_image(36, 28, 3)
  for s in range(4):
    oy, ox, h, w = (int(v) for v in augment.crop_box(image.shape, _seed(s)))
    expected = augment.resize(image[oy:oy + h, ox:ox + w], 16).numpy()
    got = augment.random_resized_crop(image, _seed(s), 16).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
  # Whole-image box: plain resize.
  full = augment.random_resized_crop(image[:28], _seed(0), 16, (1.0, 1.0), (1.0, 1.0))
  np.testing.assert_allclose(full.numpy(), augment.resize(image[:28], 16).numpy(), atol=1e-6)


# ---- rotation and flip -----------------------------------------------------------------


def test_rotation_zero_and_quarter_turns():
  image = _float_image(16, 16, 3)
  np.testing.assert_allclose(augment.rotate(image, 0.0).numpy(), image, atol=1e-6)
  np.testing.assert_allclose(augment.rotate(image, np.pi / 2).numpy(),
                             np.rot90(image, k=1), atol=1e-4)
  np.testing.assert_allclose(augment.rotate(image, -np.pi / 2).numpy(),
                             np.rot90(image, k=-1), atol=1e-4)
  np.testing.assert_allclose(augment.rotate(image, np.pi).numpy(),
                             np.rot90(image, k=2), atol=1e-4)
  wide = _float_image(12, 20, 1)
  assert augment.rotate(wide, 0.3).shape == (12, 20, 1)


def test_random_rotation_angle():
  image = _float_image(16, 16, 1)
  angles = np.array([float(augment.rotation_angle(_seed(s), 30.0)) for s in range(100)])
  assert np.abs(angles).max() <= np.deg2rad(30.0) + 1e-6
  assert angles.min() < -np.deg2rad(15.0) and angles.max() > np.deg2rad(15.0)
  np.testing.assert_allclose(augment.random_rotation(image, _seed(3), 30.0).numpy(),
                             augment.rotate(image, angles[3]).numpy(), atol=1e-6)


def test_flip():
  image = _float_image(10, 13, 3)
  np.testing.assert_array_equal(augment.random_flip(image, _seed(0), prob=1.0).numpy(),
                                np.fliplr(image))
  np.testing.assert_array_equal(augment.random_flip(image, _seed(0), prob=0.0).numpy(), image)
  flipped = [np.array_equal(augment.random_flip(image, _seed(s)).numpy(), np.fliplr(image))
             for s in range(40)]
  assert 8 <= sum(flipped) <= 32   # p = 0.5.


# ---- colour ----------------------------------------------------------------------------


def test_grayscale():
  image = _float_image(9, 11, 3)
  grey = augment.to_grayscale(image).numpy()
  assert grey.shape == (9, 11, 3)
  for ch in range(3):
    np.testing.assert_allclose(grey[..., ch], image @ _LUMA, atol=1e-6)
  one = _float_image(9, 11, 1)
  np.testing.assert_array_equal(augment.to_grayscale(one).numpy(), one)
  np.testing.assert_allclose(augment.random_grayscale(image, _seed(0), 1.0).numpy(), grey)
  np.testing.assert_array_equal(augment.random_grayscale(image, _seed(0), 0.0).numpy(), image)


def test_color_prob_switches_distortion():
  image = _image(24, 24, 3)
  expected = augment.make_eval_fn(16, 3)(image).numpy()
  on = augment.make_view_fn(_aug(**{**_ALL_OFF, "color_prob": 1.0}), 16, 3)
  off = augment.make_view_fn(_aug(**{**_ALL_OFF, "color_prob": 0.0}), 16, 3)
  zero_s = augment.make_view_fn(_aug(**{**_ALL_OFF, "color_prob": 1.0, "color_strength": 0.0}),
                                16, 3)
  for s in range(5):
    assert np.abs(on(image, _seed(s)).numpy() - expected).max() > 1e-2
    np.testing.assert_array_equal(off(image, _seed(s)).numpy(), expected)
    np.testing.assert_array_equal(zero_s(image, _seed(s)).numpy(), expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_brightness_is_multiplicative(channels):
  # On a constant grey image contrast, saturation and hue do nothing: what is left is the
  # brightness factor, U(1 - 0.8s, 1 + 0.8s).
  strength = 0.5
  image = np.full((6, 6, channels), 0.5, np.float32)
  factors = []
  for s in range(60):
    out = augment.color_jitter(image, _seed(s), strength).numpy()
    assert out.shape == image.shape
    np.testing.assert_allclose(out, out[0, 0, 0], atol=1e-5)
    factors.append(out[0, 0, 0] / 0.5)
  factors = np.array(factors)
  assert factors.min() >= 0.6 - 1e-4 and factors.max() <= 1.4 + 1e-4
  assert factors.min() < 0.8 and factors.max() > 1.2


def test_color_jitter_keeps_range_and_grey_stays_grey():
  colour = _float_image(12, 12, 3)
  grey3 = np.repeat(_float_image(12, 12, 1), 3, axis=-1)
  for s in range(5):
    out = augment.color_jitter(colour, _seed(s), 1.0).numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - colour).max() > 1e-2
    g = augment.color_jitter(grey3, _seed(s), 1.0).numpy()
    np.testing.assert_allclose(g[..., 0], g[..., 1], atol=1e-5)
    np.testing.assert_allclose(g[..., 0], g[..., 2], atol=1e-5)


# ---- Azizi et al. App. A.2 -------------------------------------------------------------


def test_additive_brightness():
  image = _float_image(10, 10, 3)
  deltas = []
  for s in range(30):
    diff = augment.random_additive_brightness(image, _seed(s), 0.3).numpy() - image
    np.testing.assert_allclose(diff, diff[0, 0, 0], atol=1e-6)   # One shift everywhere.
    deltas.append(diff.mean())
  deltas = np.array(deltas)
  assert np.abs(deltas).max() <= 0.3 + 1e-6
  assert deltas.min() < -0.1 and deltas.max() > 0.1


def test_std_contrast():
  image = _float_image(10, 10, 3)
  image[..., 1] *= 0.3   # Channels with different spreads.
  factors = []
  for s in range(30):
    out = augment.random_std_contrast(image, _seed(s), 0.4).numpy()
    np.testing.assert_allclose(out.mean(axis=(0, 1)), image.mean(axis=(0, 1)), atol=1e-5)
    ratio = out.std(axis=(0, 1)) / image.std(axis=(0, 1))
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)   # Same factor for all channels.
    factors.append(ratio[0])
  factors = np.array(factors)
  assert factors.min() >= 0.6 - 1e-4 and factors.max() <= 1.4 + 1e-4
  assert factors.min() < 0.85 and factors.max() > 1.15


# ---- blur ------------------------------------------------------------------------------


def test_gaussian_kernel_1d():
  for sigma, size in [(0.5, 3), (1.3, 7), (2.0, 5)]:
    k = augment.gaussian_kernel_1d(sigma, size).numpy()
    x = np.arange(size) - (size - 1) / 2
    ref = np.exp(-x ** 2 / (2 * sigma ** 2))
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-5)
    np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-6)


def test_blur_kernel_size():
  assert augment.blur_kernel_size(224) == 23
  assert augment.blur_kernel_size(32) == 3
  assert augment.blur_kernel_size(16) == 3
  for n in range(1, 300, 7):
    k = augment.blur_kernel_size(n)
    assert k % 2 == 1 and k >= 3 and k <= max(3, n // 10 + 1)


def _reference_blur(image, sigma, size):
  k = augment.gaussian_kernel_1d(sigma, size).numpy().astype(np.float64)
  k2 = np.outer(k, k)
  r = size // 2
  padded = np.pad(image.astype(np.float64), [(r, r), (r, r), (0, 0)], mode="reflect")
  out = np.zeros(image.shape, np.float64)
  for i in range(image.shape[0]):
    for j in range(image.shape[1]):
      out[i, j] = np.tensordot(k2, padded[i:i + size, j:j + size], axes=([0, 1], [0, 1]))
  return out


def test_gaussian_blur():
  const = np.full((11, 9, 3), 0.37, np.float32)
  np.testing.assert_allclose(augment.gaussian_blur(const, 1.5, 5).numpy(), const, atol=1e-6)
  image = _float_image(12, 10, 3)
  for sigma, size in [(1.1, 5), (0.4, 3)]:
    np.testing.assert_allclose(augment.gaussian_blur(image, sigma, size).numpy(),
                               _reference_blur(image, sigma, size), atol=1e-5)
  grey = _float_image(8, 8, 1)
  np.testing.assert_allclose(augment.gaussian_blur(grey, 0.8, 3).numpy(),
                             _reference_blur(grey, 0.8, 3), atol=1e-5)


def test_random_blur_prob_and_sigma():
  sigmas = np.array([float(augment.blur_sigma(_seed(s))) for s in range(100)])
  assert sigmas.min() >= 0.1 and sigmas.max() <= 2.0
  assert sigmas.min() < 0.5 and sigmas.max() > 1.6
  image = _float_image(16, 16, 3)
  np.testing.assert_array_equal(augment.random_blur(image, _seed(0), 0.0, 5).numpy(), image)
  for s in range(3):
    _, sigma_seed = augment._split(_seed(s), 2)   # How random_blur splits its seed.
    expected = augment.gaussian_blur(image, augment.blur_sigma(sigma_seed), 5).numpy()
    np.testing.assert_allclose(augment.random_blur(image, _seed(s), 1.0, 5).numpy(), expected,
                               atol=1e-6)


def test_blur_in_view_smooths():
  image = _image(32, 32, 1)
  sharp = augment.make_eval_fn(32, 1)(image).numpy()
  view = augment.make_view_fn(_aug(**{**_ALL_OFF, "blur_prob": 1.0}), 32, 1)
  stds = [view(image, _seed(s)).numpy().std() for s in range(10)]
  assert all(v <= sharp.std() + 1e-6 for v in stds)
  assert min(stds) < 0.9 * sharp.std()
