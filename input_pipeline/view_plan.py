"""One augmented view, written once for both host pipelines (tf.data and NumPy).

`ViewPlan` reads the `aug` config (medssl_jax/settings.py) into plain numbers; `apply` runs its ops in
the one order both pipelines share: crop + resize, rotation, channels, flip, colour jitter,
grayscale (3 channels only), App. A.2 brightness / contrast, blur. The geometric ops come first
and take the decoded image as it is (uint8, 1 or 3 channels): only their small result is
converted to float and tiled to 3 channels (or reduced to its luma), so no full-size image is
ever converted (the NumPy ops stay in uint8 until then; TF's resize reads uint8 directly). The
ops themselves come from an `Ops` bundle: TensorFlow ops in `augment.py`, NumPy ops in
`augment_np.py`. This module imports neither library, so adding an op here adds it to both
pipelines.

Every op draws from its own key (`keys[CROP]`, ...), so switching one op on or off does not
change the random draws of the others.

Crops (`aug.crop_mode`):
  * 'inception': the random resized crop (area fraction and aspect ratio drawn from ranges),
    whose draws differ between the pipelines. When no box meets the ranges it returns the whole
    image; such a fallback is counted (`CROP_FALLBACKS`, `inception_crop_fell_back`) and logged.
  * 'fixed': a square of side floor(aug.fixed_crop_fraction x the short side) at a uniformly
    random offset, then resized to data.image_size. On a non-square image the square lies
    anywhere inside it (the reading of "resize the short side to 256, random crop 224": the
    same square, resampled once instead of twice). Its offsets are an integer hash of the view
    seed (`fixed_crop_offsets`), computed with the same integer operators by both pipelines,
    so both crop the SAME box for the same seed (bit-equal, not only equal in distribution).
  * evaluation (`aug.eval_crop_fraction`): 1.0 resizes the whole image (aspect not kept); < 1
    takes the centred square of that fraction of the short side (`center_crop_offsets`), then
    resizes, the SimCLR code's evaluation transform at 0.875.
"""
import dataclasses
import math
import threading
from typing import Any, Callable, Sequence, Tuple

from absl import logging

NUM_OPS = 8
CROP, ROTATE, FLIP, COLOR, GRAY, BRIGHT, CONTRAST, BLUR = range(NUM_OPS)


CROP_MODES = ("inception", "fixed")


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
  crop_mode: str
  fixed_crop_fraction: float
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
    """`aug`: any object with the attributes of medssl_jax/settings.py's `aug`."""
    if channels not in (1, 3):
      raise ValueError(f"channels must be 1 or 3, got {channels}")
    # Stand-ins for `aug` written before these keys existed read as the Inception crop.
    crop_mode = str(getattr(aug, "crop_mode", "inception"))
    if crop_mode not in CROP_MODES:
      raise ValueError(f"aug.crop_mode={crop_mode!r}: expected one of {CROP_MODES}")
    fraction = check_fraction("aug.fixed_crop_fraction", getattr(aug, "fixed_crop_fraction", 0.875))
    return cls(image_size=int(image_size), channels=int(channels), crop=bool(aug.crop),
               crop_mode=crop_mode, fixed_crop_fraction=fraction,
               area_range=(float(aug.crop_area_min), float(aug.crop_area_max)),
               aspect_range=(float(aug.crop_aspect_min), float(aug.crop_aspect_max)),
               rotation_degrees=float(aug.rotation_degrees), flip=bool(aug.flip),
               color_strength=float(aug.color_strength), color_prob=float(aug.color_prob),
               grayscale_prob=float(aug.grayscale_prob), additive_brightness=float(aug.additive_brightness),
               std_contrast=float(aug.std_contrast), blur_prob=float(aug.blur_prob),
               blur_kernel_size=blur_kernel_size(image_size))

  def host_part(self) -> "ViewPlan":
    """The ops the host keeps with `aug.on_device` (crop, resize, rotation); the others run in
    the train step (input_pipeline/augment_device.py)."""
    return dataclasses.replace(self, flip=False, color_prob=0.0, grayscale_prob=0.0, additive_brightness=0.0,
                               std_contrast=0.0, blur_prob=0.0)


# ---- multi-crop: the local views (aug.local_crops) ------------------------------------------------
# Local view j of an example is cropped from the pair's image a (j even) or b (j odd) with the seed
# `local_seed` of that view's seed: an integer formula of the same int64 operators in both host
# pipelines, so tf.data and NumPy give local views of the same seeds, and the draws of one local view
# do not depend on how many others there are.
LOCAL_SEED_STRIDE = 2**32


def local_seed(seed, j: int):
  """The length-2 seed of local view j of the global view with `seed` (NumPy array or tf tensor)."""
  return seed + [0, (j + 1) * LOCAL_SEED_STRIDE]


class LocalAug:
  """`aug` seen by a local view: its crop area range is (aug.local_crop_area_min, max); the rest
  (aspect range, flip, colour, blur...) is the global views'."""

  def __init__(self, aug):
    self._aug = aug

  def __getattr__(self, name):
    if name == "crop_area_min":
      return self._aug.local_crop_area_min
    if name == "crop_area_max":
      return self._aug.local_crop_area_max
    if name == "crop_mode":
      return "inception"
    return getattr(self._aug, name)


def num_local_crops(aug) -> int:
  return int(getattr(aug, "local_crops", 0) or 0)


@dataclasses.dataclass(frozen=True)
class Ops:
  """One pipeline's op library. `key` is whatever its random draws take (a TF seed, a NumPy
  generator). The crops, `resize` and `rotation` take the image in its decoded dtype and channels
  (uint8, or the float the resize gave, C = 1 or 3) and keep its channels; images are float
  (H, W, C) in [0, 1] with the plan's channels after `to_channels`."""
  crop: Callable[[Any, Any, Tuple[float, float], Tuple[float, float]], Any]  # (x, key, area, aspect)
  fixed_crop: Callable[[Any, Any, float], Any]          # (x, view seed, fraction of the short side)
  center_crop: Callable[[Any, float], Any]              # (x, fraction of the short side)
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


def apply(plan: ViewPlan, ops: Ops, image, keys: Sequence[Any], seed: Any = None):
  """The view of `image`: the plan's ops in order, op i drawing from keys[i].

  `seed` is the view's own length-2 seed; the fixed crop needs it (its offsets are
  `fixed_crop_offsets` of it, the same in both pipelines).
  """
  x = image
  if plan.crop:  # The crop box only depends on H, W: crop before converting (cheaper).
    if plan.crop_mode == "fixed":
      if seed is None:
        raise ValueError("crop_mode='fixed' needs the view seed: apply(..., seed=seed)")
      x = ops.fixed_crop(x, seed, plan.fixed_crop_fraction)
    else:
      x = ops.crop(x, keys[CROP], plan.area_range, plan.aspect_range)
  # Geometry on the image's own dtype and channels, then float and channels on the small result:
  # resize and rotation treat each channel alike and the tiling / luma is linear, so the order
  # changes a view only by rounding (NumPy's integer levels) and, for colour made grey, where a
  # bicubic resize overshoots [0, 1] (tf.data clips each channel before the luma, not the luma).
  x = ops.resize(x, plan.image_size)
  if plan.rotation_degrees > 0:
    x = ops.rotation(x, keys[ROTATE], plan.rotation_degrees)
  x = ops.to_channels(x, plan.channels)
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


def apply_eval(ops: Ops, image, image_size: int, channels: int, crop_fraction: float = 1.0):
  """The evaluation view: the centred square of `crop_fraction` of the short side (none at
  1.0), then resize to image_size, channels and clip; no random op."""
  crop_fraction = check_fraction("aug.eval_crop_fraction", crop_fraction)
  x = image
  if crop_fraction < 1.0:
    x = ops.center_crop(x, crop_fraction)
  return ops.clip(ops.to_channels(ops.resize(x, image_size), channels))


# ---- crop boxes shared by both pipelines -------------------------------------------------
# Written with the operators &, ^, *, +, // and % only, which Python ints and TF int64 tensors
# both support with the same (floor) semantics, so the NumPy pipeline (Python ints) and the
# tf.data pipeline (traced int64 tensors) compute the same numbers from the same seed.

_M32 = 0xFFFFFFFF


def check_fraction(name: str, value) -> float:
  """`value` as a float in (0, 1], else a ValueError naming the key."""
  value = float(value)
  if not 0.0 < value <= 1.0:
    raise ValueError(f"{name}={value}: expected a fraction of the short side in (0, 1]")
  return value


def crop_side(short: int, fraction: float) -> int:
  """floor(fraction x short), at least 1 (the fixed and centre crops' square side).

  E.g. 0.875 x 256 = 224 (App. A.2's "random crop 224" of a 256 image), 0.875 x 28 = 24,
  0.875 x 320 = 280. The 1e-9 keeps products such as 0.7 x 10 from flooring to 6; TF
  computes the same float64 expression (augment.py).
  """
  return max(1, int(math.floor(float(fraction) * int(short) + 1e-9)))


def _mul32(x, c: int):
  """(x * c) mod 2**32 for 0 <= x, c < 2**32, without leaving int64 (16-bit halves of x)."""
  lo, hi = x & 0xFFFF, x // 0x10000
  return (lo * c + ((hi * c) & 0xFFFF) * 0x10000) & _M32


def _mix32(h):
  """A bijective 32-bit avalanche mix (xor-shift-multiply, MurmurHash3's finaliser constants)."""
  h = h ^ (h // 0x10000)
  h = _mul32(h, 0x85EBCA6B)
  h = h ^ (h // 0x2000)
  h = _mul32(h, 0xC2B2AE35)
  return h ^ (h // 0x10000)


def seed_hash(s0, s1, op: int, draw: int):
  """A 32-bit hash of the view seed (s0, s1) (int64 values, any sign), an op index and a draw
  index: the low and high 32 bits of s0 and s1, then op and draw, each mixed in turn."""
  h = (s0 & _M32) ^ 0x9E3779B9
  for word in ((s0 // 0x100000000) & _M32, s1 & _M32, (s1 // 0x100000000) & _M32, op, draw):
    h = _mix32(h) ^ word
  return _mix32(h)


def fixed_crop_offsets(h, w, side, s0, s1):
  """(offset_y, offset_x) of the fixed crop's side x side square in an h x w image: each
  uniform over its 0 .. (h - side) or 0 .. (w - side) positions (up to a modulo bias below
  1e-6 for images under 4,000 px), drawn by `seed_hash` of the view seed with op CROP."""
  return (seed_hash(s0, s1, CROP, 0) % (h - side + 1),
          seed_hash(s0, s1, CROP, 1) % (w - side + 1))


def center_crop_offsets(h, w, side):
  """(offset_y, offset_x) of the centred side x side square; an odd margin puts the extra
  pixel before the square (offset rounded up)."""
  return (h - side + 1) // 2, (w - side + 1) // 2


def fixed_crop_box(h: int, w: int, seed, fraction: float) -> Tuple[int, int, int, int]:
  """The fixed crop's (offset_y, offset_x, side, side) for an h x w image and a length-2 view
  seed, in Python ints: the reference both pipelines' crops equal."""
  s0, s1 = (int(v) for v in seed)
  s0, s1 = (((v + 2**63) % 2**64) - 2**63 for v in (s0, s1))  # as int64, like the TF seed
  side = crop_side(min(h, w), fraction)
  oy, ox = fixed_crop_offsets(h, w, side, s0, s1)
  return int(oy), int(ox), side, side


def center_crop_box(h: int, w: int, fraction: float) -> Tuple[int, int, int, int]:
  """The evaluation crop's (offset_y, offset_x, height, width): the whole image at fraction
  1.0, else the centred square of `crop_side(min(h, w), fraction)`."""
  if fraction >= 1.0:
    return 0, 0, h, w
  side = crop_side(min(h, w), fraction)
  oy, ox = center_crop_offsets(h, w, side)
  return oy, ox, side, side


# ---- Inception crop fallbacks ------------------------------------------------------------


def inception_crop_fell_back(h: int, w: int, box, area_range: Tuple[float, float],
                             aspect_range: Tuple[float, float]) -> bool:
  """Whether an Inception crop box is a fallback: the whole image, although the whole image is
  outside the requested ranges (area fraction 1 above area_range, or the image's own aspect
  w / h outside aspect_range). A whole-image box the ranges allow is a legitimate draw."""
  oy, ox, ch, cw = (int(v) for v in box)
  if (oy, ox, ch, cw) != (0, 0, int(h), int(w)):
    return False
  eps = 1e-6
  allowed = (area_range[0] - eps <= 1.0 <= area_range[1] + eps
             and aspect_range[0] - eps <= w / h <= aspect_range[1] + eps)
  return not allowed


class FallbackCounter:
  """Thread-safe count of Inception-crop fallbacks in this process, both pipelines together.

  Each fallback is a view that silently trained on the whole image instead of a crop; the first
  one and every power-of-two count after it are logged as warnings with the image size and
  the ranges, so a run whose crop never fires says so in its log.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._count = 0

  def record(self, h: int, w: int, area_range, aspect_range) -> int:
    with self._lock:
      self._count += 1
      n = self._count
    if n & (n - 1) == 0:
      logging.warning("Inception crop fell back to the whole image (%d time(s) so far in this process; "
                      "latest: a %dx%d image, area_range=%s, aspect_range=%s): no box met the ranges. "
                      "For a crop of a fixed size use aug.crop_mode='fixed'.",
                      n, int(h), int(w), tuple(area_range), tuple(aspect_range))
    return n

  def count(self) -> int:
    with self._lock:
      return self._count

  def reset(self) -> int:
    """Sets the count to 0 and returns the count before."""
    with self._lock:
      n, self._count = self._count, 0
    return n


CROP_FALLBACKS = FallbackCounter()
