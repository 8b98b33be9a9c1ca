"""TensorFlow-free NumPy twin of `augment.py`, for machines where TensorFlow is absent.

The same ops as `augment.py`, in `view_plan`'s shared order and switches, but the random draws come
from NumPy generators, so a view is NOT bit-equal to the TF pipeline's view for the same
seed; it follows the same distributions. A view is a pure function of (image, seed): each op
gets its own `np.random.default_rng([seed[0], seed[1], op_index])`, so switching one op on or
off does not change the draws of the others.

Geometry first, on the image's own integer levels: the crop, the resize and the rotation run on the
decoded uint8 (or uint16) image, the resize and rotation in OpenCV (`resize`, `rotate`: the same
sampling as the float ops, each rounded to the nearest level), and only the small result becomes
float32 (H, W, C) in [0, 1] with the view's C = 1 or 3 channels (grey tiled, colour reduced to its
luma: `to_channels`) for the photometric ops. With `on_device` a uint8 view never becomes float
here. Float images take the float32 NumPy ops (`resize_bilinear`, `rotate`'s float branch), which
are also the reference the integer path is tested against (tests/input_pipeline/test_uint8_geometry.py:
within 1 level after the resize, 1.5 after resize and rotation).

Differences from `augment.py`, all deliberate (NumPy and OpenCV, no scipy / PIL):
  * resizes are bilinear with half-pixel centres (no antialiasing), not antialiased bicubic
    (OpenCV's INTER_LINEAR samples the points of `resize_bilinear`);
  * the Inception crop box is drawn directly (area fraction uniform, aspect ratio log-uniform),
    with no `min_object_covered` constraint (the fixed crop, crop_mode='fixed', and the
    evaluation centre crop take exactly the tf.data pipeline's boxes: `view_plan`);
  * saturation blends with the luma (gray + f * (x - gray)) instead of scaling HSV saturation;
  * none for rotation: it fills as TF's ImageProjectiveTransform "REFLECT" does, which is
    half-sample symmetric (dcba|abcd|dcba), here fill_mode="symmetric" (the default);
    fill_mode="reflect" mirrors about the edge pixel centres (cb|abcd|cb).
"""
import dataclasses
import math
from typing import Callable, Sequence, Tuple

import cv2
import numpy as np

from input_pipeline import view_plan
from input_pipeline.view_plan import blur_kernel_size  # noqa: F401  (part of this module's API)

# The host pipelines run one view per thread (numpy_pipeline) or process (grain); OpenCV's own thread pool
# on top of that would only oversubscribe the cores.
cv2.setNumThreads(1)

# Dtypes whose geometry runs in OpenCV on the integer levels; other dtypes run in float32 NumPy.
_LEVEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))

_LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)

ImageFn = Callable[[np.ndarray], np.ndarray]


# ---- random helpers --------------------------------------------------------------------


def op_rngs(seed: Sequence[int]) -> Sequence[np.random.Generator]:
  """The per-op generators of a length-2 seed, keyed by (seed[0], seed[1], op index) in
  `view_plan`'s op order (negative entries taken mod 2**64)."""
  s0, s1 = (int(v) % 2**64 for v in np.asarray(seed).reshape(2))
  return [np.random.default_rng([s0, s1, i]) for i in range(view_plan.NUM_OPS)]


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
  # A Python float, so float32 images stay float32 when multiplied by it.
  return float(rng.uniform(lo, hi))


def _random_apply(fn: ImageFn, image: np.ndarray, rng: np.random.Generator,
                  prob: float) -> np.ndarray:
  """fn(image) with probability `prob`, else image.

  prob <= 0 draws nothing; otherwise one uniform is always drawn first (also for prob >= 1),
  so fn's own draws do not depend on whether prob is exactly 1.
  """
  if prob <= 0:
    return image
  if rng.random() < prob:
    return fn(image)
  return image


# ---- dtype, channels and resizing ------------------------------------------------------


def to_float(image) -> np.ndarray:
  """Float32 (H, W, C) image: integers scaled by their dtype's maximum (uint8: / 255)."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3:
    raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
  if np.issubdtype(image.dtype, np.integer):
    return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
  if image.dtype == np.bool_:
    return image.astype(np.float32)
  return image.astype(np.float32, copy=False)


def _luma(rgb: np.ndarray) -> np.ndarray:
  """0.2989 R + 0.5870 G + 0.1140 B, keeping a channel axis of size 1."""
  return np.tensordot(rgb[..., :3], _LUMA, axes=([-1], [0]))[..., None].astype(np.float32)


def to_channels(image, channels: int) -> np.ndarray:
  """Float32 image with `channels` (1 or 3) channels.

  Grey -> colour tiles, colour -> grey takes the luma; a 4th (alpha) channel is dropped.
  """
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  image = to_float(image)
  if image.shape[-1] >= 3:
    return image[..., :3] if channels == 3 else _luma(image)
  grey = image[..., :1]
  return np.tile(grey, (1, 1, 3)) if channels == 3 else grey


def to_channels_uint8(image: np.ndarray, channels: int) -> np.ndarray:
  """A uint8 image with `channels` (1 or 3) channels: np.round(to_channels(image) * 255), the
  tiles and slices without leaving uint8 (the view the host sends with `aug.on_device`)."""
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"expected a uint8 image, got {image.dtype}")
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] >= 3 and channels == 1:  # the luma: computed in float, as to_channels does
    return np.round(np.clip(to_channels(image, 1), 0.0, 1.0) * 255.0).astype(np.uint8)
  if image.shape[-1] >= 3:
    return image[..., :3]
  return np.tile(image[..., :1], (1, 1, 3)) if channels == 3 else image[..., :1]


def _bilinear_axis(size_in: int, size_out: int):
  """Lower / upper source indices and upper weights for a half-pixel-centre resize."""
  src = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5
  src = np.clip(src, 0.0, size_in - 1)
  lo = np.floor(src).astype(np.int64)
  hi = np.minimum(lo + 1, size_in - 1)
  return lo, hi, (src - lo).astype(np.float32)


def resize_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """Bilinear resize of an (H, W, C) image in float32, half-pixel centres, edges clamped."""
  image = np.asarray(image, np.float32)
  h, w = image.shape[:2]
  if (h, w) == (out_h, out_w):
    return image.copy()
  y0, y1, fy = _bilinear_axis(h, out_h)
  x0, x1, fx = _bilinear_axis(w, out_w)
  fy, fx = fy[:, None, None], fx[None, :, None]
  rows = image[y0] * (1 - fy) + image[y1] * fy
  return (rows[:, x0] * (1 - fx) + rows[:, x1] * fx).astype(np.float32)


def resize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """Bilinear resize of an (H, W, C) image, half-pixel centres, edges clamped, no antialiasing.

  uint8 and uint16 images stay in their dtype: OpenCV's INTER_LINEAR (the sampling points of
  `resize_bilinear`, fixed-point weights, rounded to the nearest level: within 1 level of
  `resize_bilinear`'s exact value). Other dtypes: `resize_bilinear` (float32).
  """
  x = np.asarray(image)
  if x.dtype not in _LEVEL_DTYPES:
    return resize_bilinear(x, out_h, out_w)
  if x.shape[:2] == (out_h, out_w):
    return x.copy()
  return cv2.resize(x, (int(out_w), int(out_h)), interpolation=cv2.INTER_LINEAR).reshape(out_h, out_w, x.shape[2])


# ---- 1. random resized crop ------------------------------------------------------------


def crop_box(h: int, w: int, rng: np.random.Generator,
             area_range: Tuple[float, float] = (0.08, 1.0),
             aspect_range: Tuple[float, float] = (3 / 4, 4 / 3),
             max_attempts: int = 100) -> Tuple[int, int, int, int]:
  """Inception-style crop box (offset_y, offset_x, height, width).

  Area fraction ~ U(area_range), aspect ratio (width / height) log-uniform in aspect_range;
  after `max_attempts` boxes that do not fit, the box is the whole image.
  """
  log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
  for _ in range(max_attempts):
    area = rng.uniform(area_range[0], area_range[1]) * h * w
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    ch = int(round(math.sqrt(area / aspect)))
    cw = int(round(math.sqrt(area * aspect)))
    if 0 < ch <= h and 0 < cw <= w:
      oy = int(rng.integers(0, h - ch + 1))
      ox = int(rng.integers(0, w - cw + 1))
      return oy, ox, ch, cw
  return 0, 0, h, w


def _crop(image, rng, area_range, aspect_range):
  """The `crop_box` region; a fallback box (`view_plan.inception_crop_fell_back`) is counted in
  `view_plan.CROP_FALLBACKS`, as in the tf.data pipeline."""
  h, w = image.shape[0], image.shape[1]
  box = crop_box(h, w, rng, area_range, aspect_range)
  if view_plan.inception_crop_fell_back(h, w, box, area_range, aspect_range):
    view_plan.CROP_FALLBACKS.record(h, w, area_range, aspect_range)
  oy, ox, ch, cw = box
  return image[oy:oy + ch, ox:ox + cw]


# ---- 1b. fixed-size random crop and centre crop (shared boxes, see view_plan) ----------


def fixed_crop(image: np.ndarray, seed, fraction: float) -> np.ndarray:
  """The `view_plan.fixed_crop_box` square of `image` (not resized): side floor(fraction x
  short side), offsets hashed from the view seed, the very box augment.fixed_crop takes."""
  oy, ox, ch, cw = view_plan.fixed_crop_box(image.shape[0], image.shape[1],
                                            np.asarray(seed).reshape(2), fraction)
  return image[oy:oy + ch, ox:ox + cw]


def center_crop(image: np.ndarray, fraction: float) -> np.ndarray:
  """The centred square of `fraction` of the short side (`view_plan.center_crop_box`)."""
  oy, ox, ch, cw = view_plan.center_crop_box(image.shape[0], image.shape[1], fraction)
  return image[oy:oy + ch, ox:ox + cw]


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, image_size: int,
                        area_range: Tuple[float, float] = (0.08, 1.0),
                        aspect_range: Tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
  """Crops the `crop_box` region, then resizes it to (image_size, image_size) (`resize`)."""
  return resize(_crop(image, rng, area_range, aspect_range), image_size, image_size)


# ---- 2. rotation -----------------------------------------------------------------------


def _fold(coord: np.ndarray, size: int, fill_mode: str) -> np.ndarray:
  """Maps continuous coordinates into [0, size - 1] by mirroring."""
  if size == 1:
    return np.zeros_like(coord)
  if fill_mode == "reflect":  # Mirror about the edge pixel centres: cb|abcd|cb.
    period = 2 * (size - 1)
    c = np.mod(coord, period)
    c = np.where(c > size - 1, period - c, c)
  elif fill_mode == "symmetric":  # Mirror about the pixel edges, TF's REFLECT: ba|abcd|dc.
    c = np.mod(coord + 0.5, 2 * size)
    c = np.where(c >= size, 2 * size - c, c) - 0.5
  else:
    raise ValueError(f"fill_mode must be 'reflect' or 'symmetric', got {fill_mode!r}")
  return np.clip(c, 0.0, size - 1)


# OpenCV's border for each fill mode: both mirror the pixel grid onto itself, so folding the
# coordinate (`_fold`) and mirroring the neighbour indices give the same bilinear samples.
_CV2_BORDERS = {"symmetric": cv2.BORDER_REFLECT, "reflect": cv2.BORDER_REFLECT_101}


def rotate(image: np.ndarray, angle: float, fill_mode: str = "symmetric") -> np.ndarray:
  """Rotates an (H, W, C) image counter-clockwise by `angle` radians about its centre.

  Bilinear sampling; out-of-image points mirror back in (`fill_mode`, see `_fold`). For a
  square image a quarter turn equals np.rot90. Angle 0 returns an exact copy. uint8 and uint16
  images stay in their dtype (OpenCV's warpAffine, the same map, rounded to the nearest level);
  others are sampled in float32 NumPy.
  """
  if fill_mode not in _CV2_BORDERS:
    raise ValueError(f"fill_mode must be 'reflect' or 'symmetric', got {fill_mode!r}")
  image = np.asarray(image)
  if image.dtype not in _LEVEL_DTYPES:
    image = image.astype(np.float32, copy=False)
  if angle == 0:
    return image.copy()
  h, w = image.shape[:2]
  cy, cx = (h - 1) / 2, (w - 1) / 2
  cos, sin = math.cos(angle), math.sin(angle)
  if image.dtype in _LEVEL_DTYPES:
    # Output pixel (x, y) samples (cos x - sin y + tx, sin x + cos y + ty): the map below, as a matrix.
    m = np.array([[cos, -sin, cx - cos * cx + sin * cy], [sin, cos, cy - sin * cx - cos * cy]], np.float64)
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=_CV2_BORDERS[fill_mode])
    return out.reshape(image.shape)
  y, x = np.meshgrid(np.arange(h, dtype=np.float64) - cy, np.arange(w, dtype=np.float64) - cx,
                     indexing="ij")
  # The input point each output pixel samples (same map as augment.rotate).
  src_x = _fold(cx + cos * x - sin * y, w, fill_mode)
  src_y = _fold(cy + sin * x + cos * y, h, fill_mode)
  x0 = np.floor(src_x).astype(np.int64)
  y0 = np.floor(src_y).astype(np.int64)
  x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
  fx = (src_x - x0).astype(np.float32)[..., None]
  fy = (src_y - y0).astype(np.float32)[..., None]
  top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
  bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
  return (top * (1 - fy) + bottom * fy).astype(np.float32)


def rotation_angle(rng: np.random.Generator, max_degrees: float) -> float:
  """Angle in radians, uniform in [-max_degrees, max_degrees] degrees."""
  return _uniform(rng, -max_degrees, max_degrees) * (math.pi / 180.0)


def random_rotation(image: np.ndarray, rng: np.random.Generator,
                    max_degrees: float) -> np.ndarray:
  return rotate(image, rotation_angle(rng, max_degrees))


# ---- 3. flip ---------------------------------------------------------------------------


def random_flip(image: np.ndarray, rng: np.random.Generator, prob: float = 0.5) -> np.ndarray:
  """Left-right flip with probability `prob`."""
  return _random_apply(lambda x: x[:, ::-1].copy(), image, rng, prob)


# ---- 4. colour distortion --------------------------------------------------------------


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
  """(..., 3) RGB in [0, 1] -> HSV, all three in [0, 1] (hue in turns)."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v = rgb.max(axis=-1)
  delta = v - rgb.min(axis=-1)
  safe = np.where(delta > 0, delta, 1.0)
  s = np.where(v > 0, delta / np.where(v > 0, v, 1.0), 0.0)
  h = np.where(v == r, (g - b) / safe,
               np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
  h = np.where(delta > 0, np.mod(h / 6.0, 1.0), 0.0)
  return np.stack([h, s, v], axis=-1).astype(rgb.dtype)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """Inverse of `rgb_to_hsv`."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  out = []
  for n in (5.0, 3.0, 1.0):  # R, G, B.
    k = np.mod(n + 6.0 * h, 6.0)
    out.append(v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
  return np.stack(out, axis=-1).astype(hsv.dtype)


def adjust_hue(image: np.ndarray, delta: float) -> np.ndarray:
  """Adds `delta` (in turns) to the hue of an RGB image."""
  hsv = rgb_to_hsv(image)
  hsv[..., 0] = np.mod(hsv[..., 0] + delta, 1.0)
  return hsv_to_rgb(hsv)


def _contrast(x: np.ndarray, factor: float) -> np.ndarray:
  mean = x.mean(axis=(0, 1), keepdims=True)
  return mean + factor * (x - mean)


def _saturation(x: np.ndarray, factor: float) -> np.ndarray:
  gray = _luma(x)
  return gray + factor * (x - gray)


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  """SimCLR colour jitter of strength s, its ops in a random order, clipped after each.

  Brightness: multiply by U(max(0, 1 - 0.8s), 1 + 0.8s); contrast (about the per-channel
  mean) and saturation (blend with the luma): factor from the same range; hue: shift
  U(-0.2s, 0.2s). Saturation and hue apply to colour images only. Draws: brightness,
  contrast, [saturation, hue], then the order (rng.permutation).
  """
  image = np.asarray(image, np.float32)
  s = float(strength)
  lo, hi = max(0.0, 1.0 - 0.8 * s), 1.0 + 0.8 * s
  bright = _uniform(rng, lo, hi)
  contrast = _uniform(rng, lo, hi)
  ops = [lambda x: x * bright, lambda x: _contrast(x, contrast)]
  if image.shape[-1] == 3:
    saturation = _uniform(rng, lo, hi)
    hue = _uniform(rng, -0.2 * s, 0.2 * s)
    ops += [lambda x: _saturation(x, saturation), lambda x: adjust_hue(x, hue)]
  for i in rng.permutation(len(ops)):
    image = np.clip(ops[i](image), 0.0, 1.0).astype(np.float32)
  return image


def random_color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float,
                        prob: float) -> np.ndarray:
  """`color_jitter` with probability `prob`.

  A no-op when prob <= 0 or strength <= 0, and then it draws NO random numbers.
  """
  if prob <= 0 or strength <= 0:
    return image
  return _random_apply(lambda x: color_jitter(x, rng, strength), image, rng, prob)


# ---- 5. grayscale ----------------------------------------------------------------------


def to_grayscale(image: np.ndarray) -> np.ndarray:
  """Luma tiled to 3 channels; grey images pass through."""
  if image.shape[-1] == 1:
    return image
  return np.tile(_luma(image), (1, 1, 3))


def random_grayscale(image: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
  return _random_apply(to_grayscale, image, rng, prob)


# ---- 6. Azizi et al. App. A.2 brightness and contrast ---------------------------------


def random_additive_brightness(image: np.ndarray, rng: np.random.Generator,
                               max_delta: float) -> np.ndarray:
  """Adds one U(-max_delta, max_delta) to every pixel and channel (no clipping)."""
  return (image + _uniform(rng, -max_delta, max_delta)).astype(np.float32)


def random_std_contrast(image: np.ndarray, rng: np.random.Generator,
                        max_delta: float) -> np.ndarray:
  """mean_c + (1 + U(-d, d)) * (x - mean_c), mean per channel (no clipping)."""
  return _contrast(image, 1.0 + _uniform(rng, -max_delta, max_delta)).astype(np.float32)


# ---- 7. Gaussian blur ------------------------------------------------------------------


def gaussian_kernel_1d(sigma: float, size: int) -> np.ndarray:
  """Normalised float32 1-D Gaussian of `size` taps centred on the middle tap."""
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  k = np.exp(-np.square(x) / (2.0 * float(sigma) ** 2))
  return (k / k.sum()).astype(np.float32)


def gaussian_blur(image: np.ndarray, sigma: float, kernel_size: int) -> np.ndarray:
  """Separable Gaussian blur of an (H, W, C) image, REFLECT padding."""
  if kernel_size % 2 != 1:
    raise ValueError(f"kernel_size must be odd, got {kernel_size}")
  image = np.asarray(image, np.float32)
  h, w = image.shape[:2]
  r = kernel_size // 2
  k = gaussian_kernel_1d(sigma, kernel_size)
  x = np.pad(image, [(r, r), (r, r), (0, 0)], mode="reflect")
  x = sum(k[i] * x[i:i + h] for i in range(kernel_size))
  x = sum(k[i] * x[:, i:i + w] for i in range(kernel_size))
  return x.astype(np.float32)


def blur_sigma(rng: np.random.Generator,
               sigma_range: Tuple[float, float] = (0.1, 2.0)) -> float:
  """Blur sigma, uniform in `sigma_range`."""
  return _uniform(rng, *sigma_range)


def random_blur(image: np.ndarray, rng: np.random.Generator, prob: float, kernel_size: int,
                sigma_range: Tuple[float, float] = (0.1, 2.0)) -> np.ndarray:
  """Gaussian blur with sigma ~ U(sigma_range), with probability `prob`."""
  return _random_apply(lambda x: gaussian_blur(x, blur_sigma(rng, sigma_range), kernel_size),
                       image, rng, prob)


# ---- whole views -----------------------------------------------------------------------


def make_eval_fn(image_size: int, channels: int,
                 crop_fraction: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
  """fn(image) -> float32 (image_size, image_size, channels) in [0, 1], no random op:
  `view_plan.apply_eval` (crop_fraction 1.0: the whole image resized; < 1: its centred square
  of crop_fraction x the short side, resized; aug.eval_crop_fraction). The box is the tf.data
  pipeline's; only the resize differs (bilinear here)."""
  view_plan.check_fraction("aug.eval_crop_fraction", crop_fraction)

  def eval_fn(image):
    x = np.asarray(image)
    if x.ndim == 2:
      x = x[..., None]
    return view_plan.apply_eval(NUMPY_OPS, x, image_size, channels, crop_fraction).astype(np.float32)

  return eval_fn


NUMPY_OPS = view_plan.Ops(crop=_crop, fixed_crop=fixed_crop, center_crop=center_crop, to_channels=to_channels,
                          resize=lambda x, side: resize(x, side, side), rotation=random_rotation,
                          flip=random_flip, color_jitter=random_color_jitter, grayscale=random_grayscale,
                          additive_brightness=random_additive_brightness, std_contrast=random_std_contrast,
                          blur=random_blur, clip=lambda x: np.clip(x, 0.0, 1.0))

# The host part of an on-device view (`ViewPlan.host_part`: geometry only) of a uint8 image, all in uint8:
# the same view as NUMPY_OPS's rounded to uint8, without the float round trip. Only for such plans: the
# photometric ops it leaves in would see uint8 levels.
_UINT8_HOST_OPS = dataclasses.replace(NUMPY_OPS, to_channels=to_channels_uint8, clip=lambda x: x)


def make_view_fn(aug, image_size: int, channels: int,
                 on_device: bool = False) -> Callable[[np.ndarray, Sequence[int]], np.ndarray]:
  """fn(image, seed) -> one augmented float32 (image_size, image_size, channels) view.

  `aug` is any object with the attributes of medssl_jax/settings.py's `aug`; the ops and their order
  are `view_plan.apply`'s (shared with the tf.data pipeline). `seed` is a length-2 integer
  sequence (see `op_rngs`). on_device: only the host's part (`ViewPlan.host_part`: crop,
  resize, rotation), as a uint8 view (a uint8 image never leaves uint8); the train step does
  the rest (input_pipeline/augment_device.py).
  """
  plan = view_plan.ViewPlan.from_config(aug, image_size, channels)
  if on_device:
    plan = plan.host_part()

  def view_fn(image, seed):
    x = np.asarray(image)
    if x.ndim == 2:
      x = x[..., None]
    if on_device and x.dtype == np.uint8:
      return view_plan.apply(plan, _UINT8_HOST_OPS, x, op_rngs(seed), seed=seed)
    x = view_plan.apply(plan, NUMPY_OPS, x, op_rngs(seed), seed=seed).astype(np.float32)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8) if on_device else x

  return view_fn
