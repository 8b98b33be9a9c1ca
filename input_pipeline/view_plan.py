"""One augmented view, written once for both host pipelines (tf.data and NumPy).

`ViewPlan` reads the `aug` config (configs/base.py) into plain numbers; `apply` runs its ops in
the one order both pipelines share: crop + resize, rotation, flip, colour jitter, grayscale
(3 channels only), App. A.2 brightness / contrast, blur. The ops themselves come from an `Ops`
bundle: TensorFlow ops in `augment.py`, NumPy ops in `augment_np.py`. This module imports
neither library, so adding an op here adds it to both pipelines.

Every op draws from its own key (`keys[CROP]`, ...), so switching one op on or off does not
change the random draws of the others.
"""
import dataclasses
from typing import Any, Callable, Sequence, Tuple

NUM_OPS = 8
CROP, ROTATE, FLIP, COLOR, GRAY, BRIGHT, CONTRAST, BLUR = range(NUM_OPS)


def blur_kernel_size(image_size: int) -> int:
  """Odd kernel side of about 10% of the image side, at least 3."""
  radius = max(1, (image_size // 10) // 2)
  return 2 * radius + 1


@dataclasses.dataclass(frozen=True)
class ViewPlan:
  """The switches and ranges of a view, read once from the `aug` config."""
  image_size: int
  channels: int
  crop: bool
  area_range: Tuple[float, float]
  aspect_range: Tuple[float, float]
  rotation_degrees: float
  flip: bool
  color_strength: float
  color_prob: float
  grayscale_prob: float
  additive_brightness: float
  std_contrast: float
  blur_prob: float
  blur_kernel_size: int

  @classmethod
  def from_config(cls, aug, image_size: int, channels: int) -> "ViewPlan":
    """`aug`: any object with the attributes of configs/base.py's `aug`."""
    if channels not in (1, 3):
      raise ValueError(f"channels must be 1 or 3, got {channels}")
    return cls(image_size=int(image_size), channels=int(channels), crop=bool(aug.crop),
               area_range=(float(aug.crop_area_min), float(aug.crop_area_max)),
               aspect_range=(float(aug.crop_aspect_min), float(aug.crop_aspect_max)),
               rotation_degrees=float(aug.rotation_degrees), flip=bool(aug.flip),
               color_strength=float(aug.color_strength), color_prob=float(aug.color_prob),
               grayscale_prob=float(aug.grayscale_prob), additive_brightness=float(aug.additive_brightness),
               std_contrast=float(aug.std_contrast), blur_prob=float(aug.blur_prob),
               blur_kernel_size=blur_kernel_size(image_size))


@dataclasses.dataclass(frozen=True)
class Ops:
  """One pipeline's op library. `key` is whatever its random draws take (a TF seed, a NumPy
  generator); images are float (H, W, C) in [0, 1] after `to_channels`."""
  crop: Callable[[Any, Any, Tuple[float, float], Tuple[float, float]], Any]  # (x, key, area, aspect)
  to_channels: Callable[[Any, int], Any]
  resize: Callable[[Any, int], Any]                     # (x, side) -> (side, side, C)
  rotation: Callable[[Any, Any, float], Any]            # (x, key, max degrees)
  flip: Callable[[Any, Any, float], Any]                # (x, key, probability)
  color_jitter: Callable[[Any, Any, float, float], Any]  # (x, key, strength, probability)
  grayscale: Callable[[Any, Any, float], Any]           # (x, key, probability)
  additive_brightness: Callable[[Any, Any, float], Any]  # (x, key, max delta)
  std_contrast: Callable[[Any, Any, float], Any]        # (x, key, max factor change)
  blur: Callable[[Any, Any, float, int], Any]           # (x, key, probability, kernel side)
  clip: Callable[[Any], Any]                            # to [0, 1]


def apply(plan: ViewPlan, ops: Ops, image, keys: Sequence[Any]):
  """The view of `image`: the plan's ops in order, op i drawing from keys[i]."""
  x = image
  if plan.crop:  # The crop box only depends on H, W: crop before converting (cheaper).
    x = ops.crop(x, keys[CROP], plan.area_range, plan.aspect_range)
  x = ops.resize(ops.to_channels(x, plan.channels), plan.image_size)
  if plan.rotation_degrees > 0:
    x = ops.rotation(x, keys[ROTATE], plan.rotation_degrees)
  if plan.flip:
    x = ops.flip(x, keys[FLIP], 0.5)
  x = ops.color_jitter(x, keys[COLOR], plan.color_strength, plan.color_prob)
  if plan.channels == 3:
    x = ops.grayscale(x, keys[GRAY], plan.grayscale_prob)
  if plan.additive_brightness > 0:
    x = ops.additive_brightness(x, keys[BRIGHT], plan.additive_brightness)
  if plan.std_contrast > 0:
    x = ops.std_contrast(x, keys[CONTRAST], plan.std_contrast)
  if plan.additive_brightness > 0 or plan.std_contrast > 0:
    x = ops.clip(x)
  if plan.blur_prob > 0:
    x = ops.blur(x, keys[BLUR], plan.blur_prob, plan.blur_kernel_size)
  return ops.clip(x)
