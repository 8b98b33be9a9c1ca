"""Joint augmentation of an image and its mask for segmentation (NumPy + scipy.ndimage).

Every geometric op is a map from output pixel coordinates to input coordinates; the ops are
composed and each array is sampled ONCE through the composed map: the image bilinearly, the mask
by nearest neighbour, so both see exactly the same geometry (a mask stays a binary mask). The
intensity ops (brightness / contrast, gamma) touch the image only. Points that leave the image
mirror back in about the edge pixel centres (OpenCV's BORDER_REFLECT_101, albumentations'
default border; `augment_np._fold` 'reflect'), folded after each op as a sequential pipeline would.

Op order (forward): crop -> flip -> vertical flip -> diagonal flip -> rotation -> distortion ->
intensity -> colour jitter -> Gaussian noise. Defaults (`seg.*`,
medssl_jax/settings.py) follow Hosseinzadeh Taher et al. 2021's code for X-ray segmentation
(albumentations, inputs 224 px; the paper's App. names RandomBrightnessContrast, RandomGamma,
OpticalDistortion, elastic transformation and grid distortion):
  OneOf([RandomBrightnessContrast(), RandomGamma()], p=0.3),
  OneOf([ElasticTransform(alpha=120, sigma=120*0.05, alpha_affine=120*0.03), GridDistortion(),
         OpticalDistortion(distort_limit=2, shift_limit=0.5)], p=0.3),
  RandomSizedCrop(min_max_height=(156, 224), 224, 224, p=0.25);
no flip and no rotation (both available here, off by default). For the fundus task (DRIVE vessels)
the paper names rotation, Gaussian noise, colour jitter and horizontal / vertical / diagonal flips,
without magnitudes; `configs/fundus_segmentation.py` sets its readings of them (the vertical and
diagonal flips, colour jitter and noise: off by default). Each op is written here from the
op's published definition, not ported; these are the readings taken:
  * crop (p = seg.crop_prob): a square of side U{ceil(crop_min_side x S) .. S} pixels at a
    uniform integer offset, resized back to S (their RandomSizedCrop with w2h_ratio 1);
  * flip (p = seg.flip_prob): left-right;
  * vertical flip (p = seg.vflip_prob): up-down; diagonal flip (p = seg.transpose_prob): the
    transpose about the main diagonal;
  * rotation: angle U(-r, r) degrees about the centre (augment_np.rotate's convention);
  * elastic (Simard et al. 2003, as albumentations does it): a random affine map (three points
    around the centre moved by U(-alpha_affine, alpha_affine) pixels each), then a displacement
    field of U(-1, 1) noise smoothed by a Gaussian of std sigma and scaled by alpha;
  * grid: per axis seg.grid_steps equal cells whose source widths are scaled by
    1 + U(-grid_limit, grid_limit) each; the last cell ends at the image edge (piecewise-linear);
  * optical (OpenCV's radial lens model with k1 = k2 = k, k ~ U(-optical_limit, optical_limit),
    focal lengths = width / height, centre shifted by round(U(-optical_shift, optical_shift))
    pixels): an output point p samples c + (p - c)(1 + k r^2 + k r^4), r^2 = ((x - cx)/W)^2 +
    ((y - cy)/H)^2;
  * brightness / contrast: x * (1 + U(-c, c)) + U(-b, b) (brightness relative to the maximum 1),
    clipped to [0, 1]; gamma: x ** U(gamma_range);
  * colour jitter (p = seg.color_prob): SimCLR's, of strength seg.color_strength
    (augment_np.color_jitter: brightness, contrast, saturation factors U(1 - 0.8s, 1 + 0.8s), hue
    shift U(-0.2s, 0.2s), in a random order);
  * Gaussian noise (p = seg.noise_prob): x + N(0, std^2) per pixel and channel, std ~
    U(seg.noise_std_range), clipped to [0, 1].
Pixel sizes (alpha_affine, sigma, optical shift) were set for 224 px: they are scaled by
k = S / 224 and alpha by k^2, so that a distortion moves the same fraction of the image at any S
(the smoothed noise's amplitude goes as alpha / sigma).

Randomness: a pair is a pure function of (image, mask, seed): op i draws from
`np.random.default_rng([seed[0], seed[1], 1000 + i])`, so a batch is a pure function of
(data seed, step) as in `augment_np.py`.
"""
import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from input_pipeline import augment_np
from input_pipeline.augment_np import _fold

REFERENCE_SIZE = 224
# Each op's random stream is its index here: new ops go at the end (the others' draws stay the same).
OPS = ("crop", "flip", "rotation", "distortion", "intensity", "vflip", "transpose", "color", "noise")


def op_rngs(seed: Sequence[int]) -> dict:
  s0, s1 = (int(v) % 2**64 for v in np.asarray(seed).reshape(2))
  return {name: np.random.default_rng([s0, s1, 1000 + i]) for i, name in enumerate(OPS)}


# ---- coordinate maps: fn(y, x) -> (source y, source x), float arrays of any shape -----------


def crop_map(size: int, oy: int, ox: int, side: int):
  """Output (S x S) samples the square [oy, oy + side) x [ox, ox + side), half-pixel centres."""
  scale = side / size
  return lambda y, x: (oy + (y + 0.5) * scale - 0.5, ox + (x + 0.5) * scale - 0.5)


def flip_map(width: int):
  return lambda y, x: (y, (width - 1) - x)


def vflip_map(height: int):
  return lambda y, x: ((height - 1) - y, x)


def transpose_map():
  """The diagonal flip (about the main diagonal): output (y, x) samples input (x, y)."""
  return lambda y, x: (x, y)


def rotation_map(h: int, w: int, angle: float):
  """Counter-clockwise rotation by `angle` radians about the centre (augment_np.rotate's map)."""
  cy, cx = (h - 1) / 2, (w - 1) / 2
  cos, sin = math.cos(angle), math.sin(angle)
  return lambda y, x: (cy + sin * (x - cx) + cos * (y - cy), cx + cos * (x - cx) - sin * (y - cy))


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """2x3 matrix A with A @ [x, y, 1] = dst for the three (x, y) points of src."""
  design = np.concatenate([src, np.ones((3, 1))], axis=1)
  return np.linalg.solve(design, dst).T


def elastic_map(h: int, w: int, rng: np.random.Generator, alpha: float, sigma: float, alpha_affine: float):
  """Affine then smoothed-noise displacement; returns the map on the output grid (h, w)."""
  centre = np.array([w / 2, h / 2])
  half = min(h, w) / 3
  pts = np.array([centre + half, [centre[0] + half, centre[1] - half], centre - half])
  moved = pts + rng.uniform(-alpha_affine, alpha_affine, size=pts.shape)
  inverse = affine_from_points(moved, pts)  # output point -> input point of the forward affine
  dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha
  dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha

  def fn(y, x):
    # The displacement field lives on the output grid: the distortion is the last geometric op,
    # so it is always evaluated at integer output pixels.
    yi, xi = np.asarray(y, np.int64), np.asarray(x, np.int64)
    px, py = x + dx[yi, xi], y + dy[yi, xi]
    return inverse[1, 0] * px + inverse[1, 1] * py + inverse[1, 2], inverse[0, 0] * px + inverse[0, 1] * py + inverse[0, 2]
  return fn


def grid_axis(size: int, steps: int, multipliers: np.ndarray) -> tuple:
  """(output knots, source knots) of one axis: equal output cells, scaled source cells, both
  ending at the last pixel."""
  out_knots = np.linspace(0.0, size - 1.0, steps + 1)
  src_knots = np.concatenate([[0.0], np.cumsum(multipliers[:steps] * (size - 1.0) / steps)])
  src_knots[-1] = size - 1.0
  return out_knots, src_knots


def grid_map(h: int, w: int, rng: np.random.Generator, steps: int, limit: float):
  ky = grid_axis(h, steps, 1.0 + rng.uniform(-limit, limit, steps))
  kx = grid_axis(w, steps, 1.0 + rng.uniform(-limit, limit, steps))
  return lambda y, x: (np.interp(y, *ky), np.interp(x, *kx))


def optical_map(h: int, w: int, k: float, dx: float, dy: float):
  cy, cx = (h - 1) / 2 + dy, (w - 1) / 2 + dx

  def fn(y, x):
    u, v = (x - cx) / w, (y - cy) / h
    r2 = u * u + v * v
    f = 1.0 + k * r2 + k * r2 * r2
    return cy + (y - cy) * f, cx + (x - cx) * f
  return fn


# ---- sampling ------------------------------------------------------------------------------


def sample(array: np.ndarray, src_y: np.ndarray, src_x: np.ndarray, order: int) -> np.ndarray:
  """array (H, W[, C]) at the (in-range) source points: order 1 bilinear, 0 nearest neighbour."""
  h, w = array.shape[:2]
  if order == 0:
    yi = np.clip(np.floor(src_y + 0.5).astype(np.int64), 0, h - 1)
    xi = np.clip(np.floor(src_x + 0.5).astype(np.int64), 0, w - 1)
    return array[yi, xi]
  a = np.asarray(array, np.float32)
  if a.ndim == 2:
    return sample(a[..., None], src_y, src_x, 1)[..., 0]
  y0 = np.clip(np.floor(src_y).astype(np.int64), 0, h - 1)
  x0 = np.clip(np.floor(src_x).astype(np.int64), 0, w - 1)
  y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
  fy, fx = (src_y - y0).astype(np.float32)[..., None], (src_x - x0).astype(np.float32)[..., None]
  top = a[y0, x0] * (1 - fx) + a[y0, x1] * fx
  bottom = a[y1, x0] * (1 - fx) + a[y1, x1] * fx
  return top * (1 - fy) + bottom * fy


def compose(maps: list, h: int, w: int):
  """The source point of every output pixel through `maps` (forward order), folded into the
  image (REFLECT_101) after each map."""
  y, x = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
  for fn in reversed(maps):
    y, x = fn(y, x)
    y, x = _fold(np.asarray(y, np.float64), h, "reflect"), _fold(np.asarray(x, np.float64), w, "reflect")
  return y, x


# ---- the plan ------------------------------------------------------------------------------


def geometric_maps(cfg, size: int, rngs: dict) -> list:
  """The coordinate maps of one draw for square (size x size) inputs, in forward order."""
  k = size / REFERENCE_SIZE
  maps = []
  r = rngs["crop"]
  if cfg.crop_prob > 0 and r.random() < cfg.crop_prob:
    lo = min(size, max(1, math.ceil(float(cfg.crop_min_side) * size - 1e-9)))
    side = int(r.integers(lo, size + 1))
    maps.append(crop_map(size, int(r.integers(0, size - side + 1)), int(r.integers(0, size - side + 1)), side))
  r = rngs["flip"]
  if cfg.flip_prob > 0 and r.random() < cfg.flip_prob:
    maps.append(flip_map(size))
  r = rngs["vflip"]
  if cfg.vflip_prob > 0 and r.random() < cfg.vflip_prob:
    maps.append(vflip_map(size))
  r = rngs["transpose"]
  if cfg.transpose_prob > 0 and r.random() < cfg.transpose_prob:
    maps.append(transpose_map())
  if cfg.rotation_degrees > 0:
    angle = rngs["rotation"].uniform(-cfg.rotation_degrees, cfg.rotation_degrees) * math.pi / 180.0
    maps.append(rotation_map(size, size, angle))
  r = rngs["distortion"]
  if cfg.distort_prob > 0 and r.random() < cfg.distort_prob:
    which = int(r.integers(0, 3))
    if which == 0:
      maps.append(elastic_map(size, size, r, cfg.elastic_alpha * k * k, cfg.elastic_sigma * k,
                              cfg.elastic_alpha_affine * k))
    elif which == 1:
      maps.append(grid_map(size, size, r, int(cfg.grid_steps), float(cfg.grid_limit)))
    else:
      kk = r.uniform(-cfg.optical_limit, cfg.optical_limit)
      dx, dy = (round(r.uniform(-cfg.optical_shift, cfg.optical_shift) * k) for _ in range(2))
      maps.append(optical_map(size, size, kk, dx, dy))
  return maps


def intensity(image: np.ndarray, cfg, rng: np.random.Generator) -> np.ndarray:
  """One of brightness/contrast or gamma with probability seg.intensity_prob; [0, 1] in and out."""
  if cfg.intensity_prob <= 0 or rng.random() >= cfg.intensity_prob:
    return image
  if rng.integers(0, 2) == 0:
    alpha = 1.0 + rng.uniform(-cfg.contrast_limit, cfg.contrast_limit)
    beta = rng.uniform(-cfg.brightness_limit, cfg.brightness_limit)
    return np.clip(image * alpha + beta, 0.0, 1.0).astype(np.float32)
  gamma = rng.uniform(*cfg.gamma_range)
  return np.power(np.clip(image, 0.0, 1.0), gamma).astype(np.float32)


def color(image: np.ndarray, cfg, rng: np.random.Generator) -> np.ndarray:
  """SimCLR's colour jitter of strength seg.color_strength (augment_np.color_jitter) with probability
  seg.color_prob; [0, 1] in and out."""
  if cfg.color_prob <= 0 or cfg.color_strength <= 0 or rng.random() >= cfg.color_prob:
    return image
  return augment_np.color_jitter(image, rng, float(cfg.color_strength))


def noise(image: np.ndarray, cfg, rng: np.random.Generator) -> np.ndarray:
  """Additive Gaussian noise with probability seg.noise_prob: std ~ U(seg.noise_std_range) (intensities
  in [0, 1]), one draw per pixel and channel, clipped to [0, 1]."""
  if cfg.noise_prob <= 0 or rng.random() >= cfg.noise_prob:
    return image
  std = rng.uniform(*cfg.noise_std_range)
  return np.clip(image + rng.normal(0.0, std, image.shape), 0.0, 1.0).astype(np.float32)


def augment_pair(image: np.ndarray, mask: np.ndarray, seed, cfg, image_order: int = 1):
  """(image float32 (S, S, C) in [0, 1], mask uint8 (S, S)) of one draw. `image` is uint8 or
  float in [0, 1] (S, S, C), `mask` (S, S) binary; `cfg` has the `seg.*` settings.
  `image_order` 0 samples the image by nearest neighbour too (tests of the alignment)."""
  image = np.asarray(image)
  image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
  h, w = image.shape[:2]
  if h != w or mask.shape[:2] != (h, w):
    raise ValueError(f"expected a square image and a mask of its size; got {image.shape} and {mask.shape}")
  rngs = op_rngs(seed)
  maps = geometric_maps(cfg, h, rngs)
  if maps:
    sy, sx = compose(maps, h, w)
    image, mask = sample(image, sy, sx, image_order), sample(mask, sy, sx, 0)
  image = intensity(image, cfg, rngs["intensity"])
  image = color(image, cfg, rngs["color"])
  image = noise(image, cfg, rngs["noise"])
  return image.astype(np.float32), np.asarray(mask, np.uint8)
