"""Stateless image augmentation for the host-side (tf.data) input pipeline.

A view is a deterministic function of (image, seed): every random draw comes from a
stateless TF op keyed by a seed split off the one `seed` argument, never from global TF
state. All functions trace inside `tf.data.Dataset.map`, accept images of any H x W and
work with 1 (grey) or 3 (colour) channels.

Choices: resizes are bicubic with antialiasing (then clipped to [0, 1]), read straight from the
decoded uint8 image, whose channels are tiled (grey to 3) or reduced (colour to its luma) only
after the resize and rotation (so for colour made grey each channel is clipped before the luma);
rotation is bilinear with REFLECT fill (no black corners); blur pads with REFLECT. The fixed-size crop and
the evaluation centre crop take `view_plan`'s boxes (integer arithmetic on the view seed), the
same boxes as the NumPy pipeline; the Inception crop's fallbacks to the whole image are counted
(`view_plan.CROP_FALLBACKS`).
"""
import functools
import math
from typing import Callable, Sequence, Tuple

import ml_collections
import numpy as np
import tensorflow as tf

from input_pipeline import view_plan
from input_pipeline.view_plan import blur_kernel_size  # noqa: F401  (part of this module's API)

ImageFn = Callable[[tf.Tensor], tf.Tensor]


# ---- seeds and random helpers ----------------------------------------------------------


def _as_seed(seed) -> tf.Tensor:
  """A shape [2] int64 seed (int32 and int64 inputs give the same stream)."""
  seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
  return tf.reshape(seed, [2])


def _split(seed: tf.Tensor, num: int) -> Sequence[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(_as_seed(seed), num=num))


def _uniform(seed: tf.Tensor, minval: float = 0.0, maxval: float = 1.0) -> tf.Tensor:
  return tf.random.stateless_uniform(
      [], _as_seed(seed), minval=minval, maxval=maxval, dtype=tf.float32)


def _random_apply(fn: ImageFn, image: tf.Tensor, seed: tf.Tensor, prob: float) -> tf.Tensor:
  """fn(image) with probability `prob`, else image."""
  image = tf.convert_to_tensor(image)
  if prob <= 0:
    return image
  if prob >= 1:
    return fn(image)
  out = tf.cond(_uniform(seed) < prob, lambda: fn(image), lambda: image)
  out.set_shape(image.shape)
  return out


# ---- channels and resizing -------------------------------------------------------------


def _luma(rgb: tf.Tensor) -> tf.Tensor:
  """0.2989 R + 0.5870 G + 0.1140 B, keeping a channel axis of size 1."""
  return tf.image.rgb_to_grayscale(rgb)


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
  """Float32 [0, 1] image with `channels` (1 or 3) channels.

  Integer inputs are scaled by their dtype's maximum. Grey -> colour tiles, colour -> grey
  takes the luma; a 4th (alpha) channel is dropped.
  """
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  image = tf.image.convert_image_dtype(image, tf.float32)
  image = tf.ensure_shape(image, [None, None, None])
  c_in = image.shape[-1]
  if channels == 3:
    from_rgb = lambda: image[..., :3]
    from_grey = lambda: tf.tile(image[..., :1], [1, 1, 3])
  else:
    from_rgb = lambda: _luma(image[..., :3])
    from_grey = lambda: image[..., :1]
  if c_in is not None:
    out = from_rgb() if c_in >= 3 else from_grey()
  else:
    out = tf.cond(tf.shape(image)[-1] >= 3, from_rgb, from_grey)
  out.set_shape([None, None, channels])
  return out


def resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """Bicubic, antialiased resize to (image_size, image_size), float32 clipped to [0, 1], channels kept.

  An integer image is read as it is (tf.image.resize computes in float32 from any dtype) and
  scaled by its dtype's maximum afterwards: the full-size image is never converted to float.
  """
  image = tf.convert_to_tensor(image)
  out = tf.image.resize(image, [image_size, image_size],
                        method=tf.image.ResizeMethod.BICUBIC, antialias=True)
  if image.dtype.is_integer:  # a product, as convert_image_dtype scales (a quotient may be rewritten when traced)
    out = out * (1.0 / image.dtype.max)
  return tf.clip_by_value(out, 0.0, 1.0)


# ---- 1. random resized crop ------------------------------------------------------------


def crop_box(image_shape, seed, area_range: Tuple[float, float] = (0.08, 1.0),
             aspect_range: Tuple[float, float] = (3 / 4, 4 / 3),
             min_object_covered: float = 0.1, max_attempts: int = 100):
  """Inception-style crop box (offset_y, offset_x, height, width), int32 scalars.

  Area fraction and aspect ratio (width / height) are drawn uniformly from the ranges;
  after `max_attempts` failures the box is the whole image. As in SimCLR the crop must
  cover `min_object_covered` of the image (capped at area_range[1]).
  """
  image_shape = tf.convert_to_tensor(image_shape, dtype=tf.int32)
  if image_shape.shape[0] == 2:
    image_shape = tf.concat([image_shape, [1]], axis=0)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_size=image_shape,
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]], tf.float32),
      seed=_as_seed(seed),
      min_object_covered=min(min_object_covered, area_range[1]),
      aspect_ratio_range=list(aspect_range),
      area_range=list(area_range),
      max_attempts=max_attempts,
      use_image_if_no_bounding_boxes=True)
  return begin[0], begin[1], size[0], size[1]


def _record_fallback(area_range, aspect_range):
  """A numpy_function body: counts (view_plan.CROP_FALLBACKS) a whole-image box of an h x w
  image that the ranges do not allow; returns 1 if it was such a fallback, else 0."""

  def record(h, w):
    h, w = int(h), int(w)
    if view_plan.inception_crop_fell_back(h, w, (0, 0, h, w), area_range, aspect_range):
      view_plan.CROP_FALLBACKS.record(h, w, area_range, aspect_range)
      return np.int64(1)
    return np.int64(0)

  return record


def _crop(image, seed, area_range, aspect_range):
  """The `crop_box` region; a whole-image box is checked (in Python, so only then) and counted
  when it is a fallback (`view_plan.inception_crop_fell_back`)."""
  shape = tf.shape(image)
  oy, ox, h, w = crop_box(shape, seed, area_range, aspect_range)
  whole = tf.reduce_all(tf.equal(tf.stack([oy, ox, h, w]), tf.stack([0, 0, shape[0], shape[1]])))
  counted = tf.cond(
      whole,
      lambda: tf.numpy_function(_record_fallback(tuple(area_range), tuple(aspect_range)),
                                [shape[0], shape[1]], tf.int64, stateful=True),
      lambda: tf.constant(0, tf.int64))
  with tf.control_dependencies([counted]):
    return tf.identity(image[oy:oy + h, ox:ox + w])


# ---- 1b. fixed-size random crop and centre crop (shared boxes, see view_plan) ----------


def _crop_side(short, fraction: float) -> tf.Tensor:
  """view_plan.crop_side in TF: floor(fraction x short + 1e-9) in float64, at least 1 (int64)."""
  side = tf.floor(float(fraction) * tf.cast(short, tf.float64) + 1e-9)
  return tf.maximum(tf.cast(side, tf.int64), 1)


def _hw(image_shape):
  shape = tf.cast(tf.convert_to_tensor(image_shape), tf.int64)
  return shape[0], shape[1]


def fixed_crop_box(image_shape, seed, fraction: float):
  """The fixed crop's (offset_y, offset_x, side, side), int32 scalars: a square of side
  floor(fraction x short side) at offsets hashed from the view seed
  (`view_plan.fixed_crop_offsets`), equal to `view_plan.fixed_crop_box` (and so to the NumPy
  pipeline's box) for the same seed. It never falls back: the square always fits."""
  h, w = _hw(image_shape)
  side = _crop_side(tf.minimum(h, w), fraction)
  s = _as_seed(seed)
  oy, ox = view_plan.fixed_crop_offsets(h, w, side, s[0], s[1])
  return tuple(tf.cast(v, tf.int32) for v in (oy, ox, side, side))


def fixed_crop(image: tf.Tensor, seed, fraction: float) -> tf.Tensor:
  """The `fixed_crop_box` square of `image` (not resized)."""
  oy, ox, h, w = fixed_crop_box(tf.shape(image), seed, fraction)
  return image[oy:oy + h, ox:ox + w]


def center_crop_box(image_shape, fraction: float):
  """view_plan.center_crop_box in TF, int32 scalars (fraction < 1: the centred square)."""
  h, w = _hw(image_shape)
  side = _crop_side(tf.minimum(h, w), fraction)
  oy, ox = view_plan.center_crop_offsets(h, w, side)
  return tuple(tf.cast(v, tf.int32) for v in (oy, ox, side, side))


def center_crop(image: tf.Tensor, fraction: float) -> tf.Tensor:
  """The centred square of `fraction` of the short side (not resized)."""
  oy, ox, h, w = center_crop_box(tf.shape(image), fraction)
  return image[oy:oy + h, ox:ox + w]


def random_resized_crop(image: tf.Tensor, seed, image_size: int,
                        area_range: Tuple[float, float] = (0.08, 1.0),
                        aspect_range: Tuple[float, float] = (3 / 4, 4 / 3)) -> tf.Tensor:
  """Crops the `crop_box` region, then resizes it to (image_size, image_size)."""
  return resize(_crop(image, seed, area_range, aspect_range), image_size)


# ---- 2. rotation -----------------------------------------------------------------------


def rotate(image: tf.Tensor, angle, fill_mode: str = "REFLECT") -> tf.Tensor:
  """Rotates a float (H, W, C) image counter-clockwise by `angle` radians about its centre."""
  image = tf.convert_to_tensor(image)
  angle = tf.cast(angle, tf.float32)
  h = tf.cast(tf.shape(image)[0], tf.float32)
  w = tf.cast(tf.shape(image)[1], tf.float32)
  cy, cx = (h - 1) / 2, (w - 1) / 2
  cos, sin = tf.cos(angle), tf.sin(angle)
  zero = tf.zeros_like(cos)
  # Maps each output pixel (x, y) back to the input point it samples.
  transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                        sin, cos, cy - sin * cx - cos * cy, zero, zero])
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
      fill_value=0.0, interpolation="BILINEAR", fill_mode=fill_mode)[0]
  out.set_shape(image.shape)
  return out


def rotation_angle(seed, max_degrees: float) -> tf.Tensor:
  """Angle in radians, uniform in [-max_degrees, max_degrees] degrees."""
  return _uniform(seed, -max_degrees, max_degrees) * (math.pi / 180.0)


def random_rotation(image: tf.Tensor, seed, max_degrees: float) -> tf.Tensor:
  return rotate(image, rotation_angle(seed, max_degrees))


# ---- 3. flip ---------------------------------------------------------------------------


def random_flip(image: tf.Tensor, seed, prob: float = 0.5) -> tf.Tensor:
  """Left-right flip with probability `prob`."""
  return _random_apply(lambda x: tf.reverse(x, axis=[1]), image, seed, prob)


# ---- 4. colour distortion --------------------------------------------------------------


def _clipped(op: ImageFn, image: tf.Tensor) -> tf.Tensor:
  return tf.clip_by_value(op(image), 0.0, 1.0)


def color_jitter(image: tf.Tensor, seed, strength: float) -> tf.Tensor:
  """SimCLR colour jitter of strength s, its ops in a random order, clipped after each.

  Brightness: multiply by U(max(0, 1 - 0.8s), 1 + 0.8s); contrast and saturation: factor
  U(1 - 0.8s, 1 + 0.8s) (floored at 0); hue: shift U(-0.2s, 0.2s). Saturation and hue
  apply to colour images only.
  """
  image = tf.convert_to_tensor(image)
  s = float(strength)
  order_seed, b_seed, c_seed, s_seed, h_seed = _split(seed, 5)
  lo = max(0.0, 1.0 - 0.8 * s)
  bright = _uniform(b_seed, lo, 1.0 + 0.8 * s)
  contrast = _uniform(c_seed, lo, 1.0 + 0.8 * s)
  ops = [lambda x: x * bright, lambda x: tf.image.adjust_contrast(x, contrast)]
  if image.shape[-1] == 3:
    saturation = _uniform(s_seed, lo, 1.0 + 0.8 * s)
    hue = _uniform(h_seed, -0.2 * s, 0.2 * s)
    ops += [lambda x: tf.image.adjust_saturation(x, saturation),
            lambda x: tf.image.adjust_hue(x, hue)]
  # Random permutation: argsort of i.i.d. uniforms.
  order = tf.argsort(tf.random.stateless_uniform([len(ops)], _as_seed(order_seed)))
  for i in range(len(ops)):
    branches = [functools.partial(_clipped, op, image) for op in ops]
    image = tf.ensure_shape(tf.switch_case(order[i], branches), image.shape)
  return image


def random_color_jitter(image: tf.Tensor, seed, strength: float, prob: float) -> tf.Tensor:
  """`color_jitter` with probability `prob`; a no-op when prob or strength is 0."""
  image = tf.convert_to_tensor(image)
  if prob <= 0 or strength <= 0:
    return image
  apply_seed, op_seed = _split(seed, 2)
  return _random_apply(lambda x: color_jitter(x, op_seed, strength), image, apply_seed, prob)


# ---- 5. grayscale ----------------------------------------------------------------------


def to_grayscale(image: tf.Tensor) -> tf.Tensor:
  """Luma tiled to 3 channels; grey images pass through."""
  image = tf.convert_to_tensor(image)
  if image.shape[-1] == 1:
    return image
  return tf.tile(_luma(image), [1, 1, 3])


def random_grayscale(image: tf.Tensor, seed, prob: float) -> tf.Tensor:
  return _random_apply(to_grayscale, image, seed, prob)


# ---- 6. Azizi et al. App. A.2 brightness and contrast ---------------------------------


def random_additive_brightness(image: tf.Tensor, seed, max_delta: float) -> tf.Tensor:
  """Adds one U(-max_delta, max_delta) to every pixel and channel (no clipping)."""
  return image + _uniform(seed, -max_delta, max_delta)


def random_std_contrast(image: tf.Tensor, seed, max_delta: float) -> tf.Tensor:
  """mean_c + (1 + U(-d, d)) * (x - mean_c), mean per channel (no clipping)."""
  mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
  factor = 1.0 + _uniform(seed, -max_delta, max_delta)
  return mean + factor * (image - mean)


# ---- 7. Gaussian blur ------------------------------------------------------------------


def gaussian_kernel_1d(sigma, size: int) -> tf.Tensor:
  """Normalised 1-D Gaussian of `size` taps centred on the middle tap."""
  sigma = tf.cast(sigma, tf.float32)
  x = tf.range(size, dtype=tf.float32) - (size - 1) / 2.0
  k = tf.exp(-tf.square(x) / (2.0 * tf.square(sigma)))
  return k / tf.reduce_sum(k)


def gaussian_blur(image: tf.Tensor, sigma, kernel_size: int) -> tf.Tensor:
  """Separable depthwise Gaussian blur of an (H, W, C) image, REFLECT padding."""
  if kernel_size % 2 != 1:
    raise ValueError(f"kernel_size must be odd, got {kernel_size}")
  image = tf.convert_to_tensor(image)
  channels = image.shape[-1]
  r = kernel_size // 2
  k = gaussian_kernel_1d(sigma, kernel_size)
  k_rows = tf.tile(tf.reshape(k, [kernel_size, 1, 1, 1]), [1, 1, channels, 1])
  k_cols = tf.tile(tf.reshape(k, [1, kernel_size, 1, 1]), [1, 1, channels, 1])
  x = tf.pad(image[None], [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
  x = tf.nn.depthwise_conv2d(x, k_rows, strides=[1, 1, 1, 1], padding="VALID")
  x = tf.nn.depthwise_conv2d(x, k_cols, strides=[1, 1, 1, 1], padding="VALID")
  out = x[0]
  out.set_shape(image.shape)
  return out


def blur_sigma(seed, sigma_range: Tuple[float, float] = (0.1, 2.0)) -> tf.Tensor:
  """Blur sigma, uniform in `sigma_range`."""
  return _uniform(seed, *sigma_range)


def random_blur(image: tf.Tensor, seed, prob: float, kernel_size: int,
                sigma_range: Tuple[float, float] = (0.1, 2.0)) -> tf.Tensor:
  """Gaussian blur with sigma = blur_sigma(second half of split seed), with probability `prob`."""
  apply_seed, sigma_seed = _split(seed, 2)
  sigma = blur_sigma(sigma_seed, sigma_range)
  return _random_apply(lambda x: gaussian_blur(x, sigma, kernel_size), image, apply_seed, prob)


# ---- whole views -----------------------------------------------------------------------


def make_eval_fn(image_size: int, channels: int,
                 crop_fraction: float = 1.0) -> Callable[[tf.Tensor], tf.Tensor]:
  """fn(image) -> float32 (image_size, image_size, channels) in [0, 1], no random op:
  `view_plan.apply_eval` (crop_fraction 1.0: the whole image resized; < 1: its centred square
  of crop_fraction x the short side, resized; aug.eval_crop_fraction)."""
  view_plan.check_fraction("aug.eval_crop_fraction", crop_fraction)

  def eval_fn(image):
    out = view_plan.apply_eval(TF_OPS, image, image_size, channels, crop_fraction)
    return tf.ensure_shape(out, [image_size, image_size, channels])

  return eval_fn


TF_OPS = view_plan.Ops(crop=_crop, fixed_crop=fixed_crop, center_crop=center_crop, to_channels=to_channels,
                       resize=resize, rotation=random_rotation,
                       flip=random_flip, color_jitter=random_color_jitter, grayscale=random_grayscale,
                       additive_brightness=random_additive_brightness, std_contrast=random_std_contrast,
                       blur=random_blur, clip=lambda x: tf.clip_by_value(x, 0.0, 1.0))


def make_view_fn(aug: ml_collections.ConfigDict, image_size: int, channels: int,
                 on_device: bool = False) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """fn(image, seed) -> one augmented float32 (image_size, image_size, channels) view.

  The ops and their order are `view_plan.apply`'s (shared with the NumPy pipeline); each is
  switched by `aug` (see medssl_jax/settings.py) and draws from its own sub-seed of `seed`.
  on_device: only the host's part (`ViewPlan.host_part`: crop, resize, rotation), rounded to a
  uint8 view; the train step does the rest (input_pipeline/augment_device.py).
  """
  plan = view_plan.ViewPlan.from_config(aug, image_size, channels)
  if on_device:
    plan = plan.host_part()

  def view_fn(image, seed):
    x = view_plan.apply(plan, TF_OPS, image, _split(seed, view_plan.NUM_OPS), seed=seed)
    x = tf.ensure_shape(x, [image_size, image_size, channels])
    return tf.cast(tf.round(x * 255.0), tf.uint8) if on_device else x

  return view_fn
