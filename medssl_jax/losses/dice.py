"""Segmentation losses: soft Dice (Milletari et al. 2016, V-Net) and Dice + cross-entropy.

Hosseinzadeh Taher et al. 2021 (App. B) train their U-Nets for Dice; these are the losses for
the project's segmentation fine-tuning. Shapes: logits (N, H, W, C).

- C == 1 (binary): probabilities sigmoid(logits); masks (N, H, W) or (N, H, W, 1) in {0, 1}.
- C > 1 (one class per pixel): probabilities softmax over C; masks (N, H, W) integer labels in
  [0, C), or (N, H, W, C) one-hot.

Soft Dice of one image and class: (2 sum(p g) + eps) / (sum(p) + sum(g) + eps), summed over the
pixels. The loss is 1 - Dice, averaged over the classes (all C, background included when C > 1)
of each image, then over the images. `eps` keeps the ratio defined for an empty mask: an image
whose true mask and prediction are both empty has Dice 1 (loss 0); with an empty true mask and a
total predicted probability s, its Dice is eps / (s + eps). The default eps = 1 (the "+1
smoothing" common in segmentation code) is small beside the pixel counts of real masks.
"""
import jax
import jax.numpy as jnp
import optax


def _probs_and_targets(logits, masks):
  logits = logits.astype(jnp.float32)
  if logits.ndim != 4:
    raise ValueError(f"expected logits (N, H, W, C); got shape {logits.shape}")
  n, h, w, c = logits.shape
  masks = jnp.asarray(masks)
  if c == 1:
    if masks.shape == (n, h, w):
      masks = masks[..., None]
    if masks.shape != (n, h, w, 1):
      raise ValueError(f"binary logits {logits.shape} need masks (N, H, W) or (N, H, W, 1); got {masks.shape}")
    return jax.nn.sigmoid(logits), masks.astype(jnp.float32)
  if masks.shape == (n, h, w):
    targets = jax.nn.one_hot(masks, c, dtype=jnp.float32)
  elif masks.shape == (n, h, w, c):
    targets = masks.astype(jnp.float32)
  else:
    raise ValueError(f"logits {logits.shape} need masks (N, H, W) labels or (N, H, W, {c}) one-hot; got {masks.shape}")
  return jax.nn.softmax(logits, axis=-1), targets


def soft_dice_per_image(logits, masks, *, eps: float = 1.0):
  """(N,) soft Dice coefficients, each the mean over the image's classes."""
  p, g = _probs_and_targets(logits, masks)
  inter = jnp.sum(p * g, axis=(1, 2))
  total = jnp.sum(p, axis=(1, 2)) + jnp.sum(g, axis=(1, 2))
  return jnp.mean((2.0 * inter + eps) / (total + eps), axis=-1)


def soft_dice_loss(logits, masks, *, eps: float = 1.0):
  """1 - soft Dice, per image (mean over its classes), then the mean over the images."""
  return jnp.mean(1.0 - soft_dice_per_image(logits, masks, eps=eps))


def dice_bce_loss(logits, masks, *, dice_weight: float = 1.0, bce_weight: float = 1.0, eps: float = 1.0):
  """dice_weight * soft Dice loss + bce_weight * pixel cross-entropy (mean over all pixels).

  The cross-entropy is binary (sigmoid) for one class and categorical (softmax) for several.
  """
  dice = soft_dice_loss(logits, masks, eps=eps)
  logits = logits.astype(jnp.float32)
  _, g = _probs_and_targets(logits, masks)
  if logits.shape[-1] == 1:
    ce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, g))
  else:
    ce = jnp.mean(optax.softmax_cross_entropy(logits, g))
  return dice_weight * dice + bce_weight * ce
