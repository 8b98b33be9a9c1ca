"""Joint image + mask augmentation: hand-checked maps, image / mask alignment, determinism."""
import math

import numpy as np
from scipy import ndimage

from configs.base import get_base_config
from input_pipeline import augment_np
from input_pipeline import augment_seg as aug


def _cfg(**kw):
  cfg = get_base_config().seg
  for k in ("crop_prob", "flip_prob", "rotation_degrees", "distort_prob", "intensity_prob"):
    cfg[k] = 0.0
  for k, v in kw.items():
    cfg[k] = v
  return cfg


def _sample_nearest(a, maps):
  sy, sx = aug.compose(maps, a.shape[0], a.shape[1])
  return aug.sample(a, sy, sx, 0)


def _smooth_image(size=32, seed=0):
  img = ndimage.gaussian_filter(np.random.default_rng(seed).random((size, size, 3)), (1.5, 1.5, 0))
  return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def test_flip_by_hand():
  a = np.arange(12, dtype=np.float32).reshape(3, 4)
  np.testing.assert_array_equal(_sample_nearest(a, [aug.flip_map(4)]), a[:, ::-1])
  img = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10
  mask = (np.arange(16).reshape(4, 4) % 3 == 0).astype(np.uint8)
  out_img, out_mask = aug.augment_pair(img, mask, [0, 0], _cfg(flip_prob=1.0))
  np.testing.assert_allclose(out_img[..., 0], img[:, ::-1, 0] / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(out_mask, mask[:, ::-1])


def test_quarter_turn_is_rot90_and_crop_is_a_nearest_upscale():
  a = np.arange(16, dtype=np.float32).reshape(4, 4)
  np.testing.assert_array_equal(_sample_nearest(a, [aug.rotation_map(4, 4, math.pi / 2)]), np.rot90(a))
  # Bilinear at exact pixel centres: the same values.
  sy, sx = aug.compose([aug.rotation_map(4, 4, math.pi / 2)], 4, 4)
  np.testing.assert_allclose(aug.sample(a, sy, sx, 1), np.rot90(a), atol=1e-5)
  b = np.arange(64, dtype=np.float32).reshape(8, 8)
  # An 8 px output of the 4 px square at (2, 1): each source pixel twice along each axis.
  want = np.repeat(np.repeat(b[2:6, 1:5], 2, axis=0), 2, axis=1)
  np.testing.assert_array_equal(_sample_nearest(b, [aug.crop_map(8, 2, 1, 4)]), want)


def test_identity_settings_of_each_distortion():
  a = np.arange(36, dtype=np.float32).reshape(6, 6)
  rng = np.random.default_rng(0)
  for fn in (aug.optical_map(6, 6, 0.0, 0, 0), aug.grid_map(6, 6, rng, 3, 0.0),
             aug.elastic_map(6, 6, rng, alpha=0.0, sigma=1.0, alpha_affine=0.0)):
    np.testing.assert_array_equal(_sample_nearest(a, [fn]), a)


def test_grid_axis_is_monotone_and_pinned():
  out, src = aug.grid_axis(33, 5, np.array([0.7, 1.3, 1.0, 0.8, 1.2]))
  assert out[0] == src[0] == 0 and out[-1] == src[-1] == 32
  assert np.all(np.diff(src) > 0)
  np.testing.assert_allclose(src[1:3], [0.7 * 32 / 5, 2.0 * 32 / 5])


def test_optical_map_radial_formula():
  fn = aug.optical_map(11, 11, 0.5, 0, 0)
  y, x = fn(np.array([5.0, 5.0]), np.array([5.0, 10.0]))
  r2 = (5 / 11) ** 2
  np.testing.assert_allclose([y[0], x[0]], [5.0, 5.0])  # the centre stays
  np.testing.assert_allclose([y[1], x[1]], [5.0, 5.0 + 5.0 * (1 + 0.5 * r2 + 0.5 * r2 * r2)])


def test_mask_from_the_image_stays_aligned_under_every_geometric_op():
  """mask = (image > t): after crop, flip, rotation and each distortion, sampled through the same
  map (the image by nearest neighbour here), (image' > t) == mask' exactly; with the bilinear
  image almost everywhere (only edge pixels may differ)."""
  img = _smooth_image()
  mask = (img[..., 0] > 0.5).astype(np.uint8)
  cfg = _cfg(crop_prob=1.0, flip_prob=1.0, rotation_degrees=25.0, distort_prob=1.0)
  for s in range(24):
    a0, m0 = aug.augment_pair(img, mask, [0, s], cfg, image_order=0)
    np.testing.assert_array_equal(a0[..., 0] > 0.5, m0.astype(bool))
    assert 0 < m0.mean() < 1 and set(np.unique(m0)) <= {0, 1}
    a1, m1 = aug.augment_pair(img, mask, [0, s], cfg)
    np.testing.assert_array_equal(m1, m0)  # the image's interpolation does not touch the mask
    assert np.mean((a1[..., 0] > 0.5) == m1.astype(bool)) > 0.9
  drawn = {_distortion_kind(s) for s in range(24)}
  assert drawn == {0, 1, 2}  # elastic, grid and optical were all exercised


def _distortion_kind(s):
  r = aug.op_rngs([0, s])["distortion"]
  r.random()
  return int(r.integers(0, 3))


def test_intensity_changes_the_image_only():
  img, mask = _smooth_image(16, 1), (np.random.default_rng(2).random((16, 16)) > 0.5).astype(np.uint8)
  cfg = _cfg(intensity_prob=1.0)
  changed = 0
  for s in range(6):
    a, m = aug.augment_pair(img, mask, [3, s], cfg)
    np.testing.assert_array_equal(m, mask)
    changed += not np.allclose(a, img)
    # Either x ** g with g in [0.8, 1.2], or x * alpha + beta clipped: both keep the pixel order.
    order = np.argsort(img[..., 0].ravel(), kind="stable")
    assert np.all(np.diff(a[..., 0].ravel()[order]) >= -1e-6)
  assert changed == 6


def test_gamma_value():
  cfg = _cfg(intensity_prob=1.0, brightness_limit=0.0, contrast_limit=0.0, gamma_range=(2.0, 2.0))
  img = np.full((4, 4, 1), 0.5, np.float32)
  outs = {float(aug.intensity(img, cfg, np.random.default_rng(s))[0, 0, 0]) for s in range(10)}
  assert outs == {0.5, 0.25}  # brightness/contrast with zero limits, or gamma 2


def test_a_pair_is_a_pure_function_of_the_seed():
  img = (_smooth_image(24, 3) * 255).astype(np.uint8)
  mask = (img[..., 0] > 128).astype(np.uint8)
  cfg = get_base_config().seg
  cfg.crop_prob, cfg.distort_prob, cfg.intensity_prob = 1.0, 1.0, 1.0
  a, m = aug.augment_pair(img, mask, [5, 7], cfg)
  b, n = aug.augment_pair(img, mask, [5, 7], cfg)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(m, n)
  c, _ = aug.augment_pair(img, mask, [5, 8], cfg)
  assert not np.array_equal(a, c)
  assert a.dtype == np.float32 and m.dtype == np.uint8 and a.shape == (24, 24, 3)


def test_vertical_and_diagonal_flips_by_hand_move_image_and_mask_together():
  img = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10
  mask = (np.arange(16).reshape(4, 4) % 3 == 0).astype(np.uint8)
  for key, want in (("vflip_prob", lambda a: a[::-1]), ("transpose_prob", lambda a: np.swapaxes(a, 0, 1))):
    out_img, out_mask = aug.augment_pair(img, mask, [0, 0], _cfg(**{key: 1.0}))
    np.testing.assert_allclose(out_img, want(img) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(out_mask, want(mask))
  # All three flips: a 180-degree turn, then the transpose (forward order: flip, vflip, transpose).
  out_img, out_mask = aug.augment_pair(img, mask, [0, 0], _cfg(flip_prob=1.0, vflip_prob=1.0, transpose_prob=1.0))
  np.testing.assert_array_equal(out_mask, np.swapaxes(mask[::-1, ::-1], 0, 1))


def test_colour_jitter_and_noise_touch_the_image_only_with_the_stated_statistics():
  img = np.full((64, 64, 3), 0.5, np.float32)
  img[..., 0] = 0.3
  mask = (np.random.default_rng(4).random((64, 64)) > 0.5).astype(np.uint8)
  # Noise: the residual's std is the drawn std (within sampling error), its mean ~0; clipped to [0, 1].
  cfg = _cfg(noise_prob=1.0, noise_std_range=(0.05, 0.05))
  a, m = aug.augment_pair(img, mask, [1, 2], cfg)
  np.testing.assert_array_equal(m, mask)
  residual = a - img
  assert abs(residual.std() - 0.05) < 0.003 and abs(residual.mean()) < 0.003
  assert a.min() >= 0.0 and a.max() <= 1.0
  # Colour jitter of strength s: the same draw as augment_np.color_jitter from the op's stream.
  cfg = _cfg(color_prob=1.0, color_strength=0.25)
  a, m = aug.augment_pair(img, mask, [1, 3], cfg)
  np.testing.assert_array_equal(m, mask)
  r = aug.op_rngs([1, 3])["color"]
  r.random()  # the probability draw
  np.testing.assert_array_equal(a, augment_np.color_jitter(img, r, 0.25))
  assert not np.allclose(a, img)
  # Off by default, and then no change at all.
  a, _ = aug.augment_pair(img, mask, [1, 3], _cfg())
  np.testing.assert_array_equal(a, img)


def test_new_ops_leave_the_other_ops_draws_unchanged():
  """The X-ray pipeline's draws are the same with the fundus ops added (each op has its own stream)."""
  img = (_smooth_image(24, 5) * 255).astype(np.uint8)
  mask = (img[..., 0] > 128).astype(np.uint8)
  base = _cfg(crop_prob=1.0, distort_prob=1.0, intensity_prob=1.0)
  a, m = aug.augment_pair(img, mask, [2, 9], base)
  assert [name for name in aug.OPS[:5]] == ["crop", "flip", "rotation", "distortion", "intensity"]
  b, n = aug.augment_pair(img, mask, [2, 9], _cfg(crop_prob=1.0, distort_prob=1.0, intensity_prob=1.0,
                                                   noise_prob=1.0, noise_std_range=(0.0, 0.0)))
  np.testing.assert_array_equal(m, n)
  np.testing.assert_allclose(a, b, atol=1e-7)  # zero noise: the same image
