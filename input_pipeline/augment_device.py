"""Augmentation on the accelerator (`aug.on_device`), in JAX, inside the jitted train step.

`aug.on_device` is True, False or 'auto' (the default): 'auto' is on for a pretraining run whose JAX
backend is a GPU or TPU and off on the CPU, where the host and the step share the same cores and
the step gains nothing from the host's work moving into it (`resolve_on_device`; the pretraining
run resolves it once, logs it and records it in results.json).

With this mode the host pipelines only decode, crop, resize and rotate (the geometric ops, which
need the whole decoded image) and send uint8 views: a quarter of float32's bytes. The rest of
`view_plan.apply`'s ops, in its order, run here per example: flip, colour jitter (random order),
grayscale, App. A.2 brightness / contrast, blur, clip. Each op is the NumPy pipeline's op
(`augment_np`) written in `jax.numpy`, with the same formula and the same REFLECT padding, so for
the same parameters the two agree to float rounding (tests/input_pipeline/test_augment_device.py).

Random draws: the key of one view is fold_in(fold_in(fold_in(fold_in(PRNGKey(seed), step),
example), view), op) with `example` the index in the GLOBAL batch and `step` the train state's
step. A view is therefore a pure function of (seed, step, example, view, its uint8 input): resume
(the step is restored with the state) and multi-process runs (the global batch is one array) give
the same views, whatever the number of devices or processes. The draws follow the same
distributions as the host pipelines' but are not the same numbers.

The host's view is rounded to uint8 (steps of 1/255) before these ops, where the host path keeps
float32 throughout; that is the only difference in what the network sees.
"""
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from input_pipeline import view_plan
from medssl_jax.errors import UserError

_LUMA = (0.2989, 0.5870, 0.1140)
ACCELERATOR_BACKENDS = ("gpu", "tpu", "cuda", "rocm")  # jax.default_backend() names where 'auto' is on
BLUR_SIGMA_RANGE = (0.1, 2.0)
VIEW_KEYS = ("view_a", "view_b")


def resolve_on_device(value, backend: str) -> bool:
  """The aug.on_device of a pretraining run on `backend` (`jax.default_backend()`): True or False as
  set; 'auto' is True on an accelerator (ACCELERATOR_BACKENDS), False on the CPU (or any other backend)."""
  if isinstance(value, str) and value.strip().lower() == "auto":
    return str(backend).lower() in ACCELERATOR_BACKENDS
  if isinstance(value, str) and value.strip().lower() in ("true", "false"):
    return value.strip().lower() == "true"
  if type(value).__name__ in ("bool", "bool_"):  # Python's and NumPy's (1.x: bool_, 2.x: bool)
    return bool(value)
  raise UserError(f"aug.on_device={value!r}: expected True, False or 'auto'")


# ---- the ops, with their parameters given (each equals augment_np's op) -------------------


def luma(x):
  """0.2989 R + 0.5870 G + 0.1140 B, keeping a channel axis of size 1."""
  return (x[..., 0:1] * _LUMA[0] + x[..., 1:2] * _LUMA[1] + x[..., 2:3] * _LUMA[2]).astype(x.dtype)


def flip(x):
  return x[:, ::-1]


def contrast(x, factor):
  """mean_c + factor (x - mean_c), mean per channel over the image."""
  mean = jnp.mean(x, axis=(0, 1), keepdims=True)
  return mean + factor * (x - mean)


def saturation(x, factor):
  gray = luma(x)
  return gray + factor * (x - gray)


def rgb_to_hsv(rgb):
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v = jnp.max(rgb, axis=-1)
  delta = v - jnp.min(rgb, axis=-1)
  safe = jnp.where(delta > 0, delta, 1.0)
  s = jnp.where(v > 0, delta / jnp.where(v > 0, v, 1.0), 0.0)
  h = jnp.where(v == r, (g - b) / safe, jnp.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
  h = jnp.where(delta > 0, jnp.mod(h / 6.0, 1.0), 0.0)
  return jnp.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv):
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  out = []
  for n in (5.0, 3.0, 1.0):  # R, G, B.
    k = jnp.mod(n + 6.0 * h, 6.0)
    out.append(v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0))
  return jnp.stack(out, axis=-1)


def adjust_hue(x, delta):
  hsv = rgb_to_hsv(x)
  return hsv_to_rgb(hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + delta, 1.0)))


def grayscale(x):
  return x if x.shape[-1] == 1 else jnp.tile(luma(x), (1, 1, 3))


def gaussian_kernel_1d(sigma, size: int):
  t = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
  k = jnp.exp(-jnp.square(t) / (2.0 * jnp.square(sigma)))
  return k / jnp.sum(k)


def gaussian_blur(x, sigma, kernel_size: int):
  """Separable Gaussian blur, REFLECT padding (np.pad mode='reflect'), as augment_np."""
  if kernel_size % 2 != 1:
    raise ValueError(f"kernel_size must be odd, got {kernel_size}")
  h, w = x.shape[:2]
  r = kernel_size // 2
  k = gaussian_kernel_1d(sigma, kernel_size)
  p = jnp.pad(x, [(r, r), (r, r), (0, 0)], mode="reflect")
  p = sum(k[i] * p[i:i + h] for i in range(kernel_size))
  return sum(k[i] * p[:, i:i + w] for i in range(kernel_size))


def color_ops(x, factors) -> list:
  """The jitter's ops as functions of the image (brightness, contrast[, saturation, hue]);
  `factors` = (brightness, contrast, saturation, hue shift)."""
  ops = [lambda y: y * factors[0], lambda y: contrast(y, factors[1])]
  if x.shape[-1] == 3:
    ops += [lambda y: saturation(y, factors[2]), lambda y: adjust_hue(y, factors[3])]
  return ops


def color_jitter(x, factors, order):
  """The jitter's ops in `order` (a permutation, traced or not), clipped to [0, 1] after each."""
  ops = color_ops(x, factors)
  for p in range(len(ops)):
    x = jnp.clip(jax.lax.switch(order[p], ops, x), 0.0, 1.0)
  return x


# ---- random draws and the whole device view -------------------------------------------------


def _apply_with_prob(key, prob: float, fn: Callable, x):
  if prob <= 0:
    return x
  if prob >= 1:
    return fn(x)
  return jnp.where(jax.random.uniform(key) < prob, fn(x), x)


def _color(x, key, strength: float, prob: float):
  if prob <= 0 or strength <= 0:
    return x
  k_apply, k_b, k_c, k_s, k_h, k_order = jax.random.split(key, 6)
  lo, hi = max(0.0, 1.0 - 0.8 * strength), 1.0 + 0.8 * strength
  u = lambda k, a, b: jax.random.uniform(k, (), jnp.float32, a, b)
  factors = (u(k_b, lo, hi), u(k_c, lo, hi), u(k_s, lo, hi), u(k_h, -0.2 * strength, 0.2 * strength))
  order = jax.random.permutation(k_order, 4 if x.shape[-1] == 3 else 2)
  return _apply_with_prob(k_apply, prob, lambda y: color_jitter(y, factors, order), x)


def augment_view(plan: view_plan.ViewPlan, x, key):
  """The device part of `view_plan.apply` on one float32 (S, S, C) view in [0, 1]."""
  k = lambda op: jax.random.fold_in(key, op)
  if plan.flip:
    x = _apply_with_prob(k(view_plan.FLIP), 0.5, flip, x)
  x = _color(x, k(view_plan.COLOR), plan.color_strength, plan.color_prob)
  if plan.channels == 3:
    x = _apply_with_prob(k(view_plan.GRAY), plan.grayscale_prob, grayscale, x)
  if plan.additive_brightness > 0:
    d = plan.additive_brightness
    x = x + jax.random.uniform(k(view_plan.BRIGHT), (), jnp.float32, -d, d)
  if plan.std_contrast > 0:
    d = plan.std_contrast
    x = contrast(x, 1.0 + jax.random.uniform(k(view_plan.CONTRAST), (), jnp.float32, -d, d))
  if plan.additive_brightness > 0 or plan.std_contrast > 0:
    x = jnp.clip(x, 0.0, 1.0)
  if plan.blur_prob > 0:
    k_apply, k_sigma = jax.random.split(k(view_plan.BLUR))
    sigma = jax.random.uniform(k_sigma, (), jnp.float32, *BLUR_SIGMA_RANGE)
    x = _apply_with_prob(k_apply, plan.blur_prob, lambda y: gaussian_blur(y, sigma, plan.blur_kernel_size), x)
  return jnp.clip(x, 0.0, 1.0)


def view_keys(seed: int, step, batch_size: int, view: int):
  """(batch_size,) keys of one view slot for global examples 0..batch_size-1 at `step`."""
  base = jax.random.fold_in(jax.random.PRNGKey(seed), step)
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(base, i), view))(
      jnp.arange(batch_size, dtype=jnp.uint32))


def augment_batch(plan: view_plan.ViewPlan, batch: dict, seed: int, step,
                  view_names: Sequence[str] = VIEW_KEYS) -> dict:
  """`batch` with its uint8 views replaced by augmented float32 views in [0, 1]."""
  out = dict(batch)
  for v, name in enumerate(view_names):
    images = batch[name]
    if images.dtype != jnp.uint8:
      raise ValueError(f"aug.on_device expects uint8 views from the host, got {name} of dtype {images.dtype}")
    keys = view_keys(seed, step, images.shape[0], v)
    x = images.astype(jnp.float32) / 255.0
    out[name] = jax.vmap(lambda img, key: augment_view(plan, img, key))(x, keys)
  return out


def augment_local_views(plan: view_plan.ViewPlan, local_views, seed: int, step):
  """uint8 (N, L, s, s, C) local views (aug.local_crops) -> augmented float32 ones; local view j
  draws from view slot 2 + j (the global views have slots 0 and 1)."""
  if local_views.dtype != jnp.uint8:
    raise ValueError(f"aug.on_device expects uint8 local views from the host, got {local_views.dtype}")
  x = local_views.astype(jnp.float32) / 255.0
  views = []
  for j in range(local_views.shape[1]):
    keys = view_keys(seed, step, local_views.shape[0], len(VIEW_KEYS) + j)
    views.append(jax.vmap(lambda img, key: augment_view(plan, img, key))(x[:, j], keys))
  return jnp.stack(views, axis=1)


def wrap_step(train_step: Callable, config) -> Callable:
  """`train_step` preceded by the device augmentation of its batch, keyed by the state's step."""
  plan = view_plan.ViewPlan.from_config(config.aug, config.data.image_size, config.data.channels)
  local = (view_plan.ViewPlan.from_config(view_plan.LocalAug(config.aug), config.aug.local_crop_size,
                                          config.data.channels) if view_plan.num_local_crops(config.aug) else None)
  seed = int(config.seed)

  def step(state, batch):
    out = augment_batch(plan, batch, seed, state.step)
    if local is not None and "local_views" in batch:
      out["local_views"] = augment_local_views(local, batch["local_views"], seed, state.step)
    return train_step(state, out)

  return step
