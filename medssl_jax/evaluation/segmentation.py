"""Segmentation metrics on the host (NumPy): per-image Dice and IoU of binary masks, their mean
over the test images with a bootstrap 95% interval over images, and a PNG overlay of a few test
predictions.

Hosseinzadeh Taher et al. 2021 (App. B) report the Dice coefficient of the test set (lung
segmentation on Montgomery: the "mean Dice score"); here it is the mean of the per-image Dice,
with an interval from resampling the test images (evaluation/bootstrap.py: Azizi et al. 2021
App. B.1.1, 1,000 replicates, 2.5% and 97.5% percentiles). Pass `groups` (e.g. the patient of
each image) to resample patients rather than images.

Per image, with P the predicted and G the true foreground pixels:
  Dice = 2 |P & G| / (|P| + |G|),   IoU = |P & G| / |P | G|.
Convention for empty masks: P and G both empty -> Dice = IoU = 1.0 (the prediction is exactly
right); exactly one empty -> 0.0. Probabilities become a binary prediction by `p >= threshold`.
"""
import io

import numpy as np

from medssl_jax import jsonio
from medssl_jax.evaluation.bootstrap import bootstrap_ci


def binarize(probs, threshold: float = 0.5):
  """Binary prediction `probs >= threshold` (probabilities or boolean masks)."""
  return np.asarray(probs) >= threshold


def _binary_pair(masks, preds):
  masks, preds = np.asarray(masks), np.asarray(preds)
  if masks.shape != preds.shape:
    raise ValueError(f"masks {masks.shape} and predictions {preds.shape} differ in shape")
  if masks.ndim < 2:
    raise ValueError(f"need masks (N, H, W) or (N, H, W, 1); got {masks.shape}")
  for name, a in (("masks", masks), ("predictions", preds)):
    if a.dtype != bool and not np.all((a == 0) | (a == 1)):
      raise ValueError(f"{name} must be binary (0/1 or bool); threshold probabilities with binarize()")
  n = len(masks)
  return masks.reshape(n, -1).astype(bool), preds.reshape(n, -1).astype(bool)


def dice_per_image(masks, preds) -> np.ndarray:
  """(N,) Dice of binary predictions; both empty -> 1.0."""
  g, p = _binary_pair(masks, preds)
  inter = np.sum(g & p, axis=1).astype(np.float64)
  total = np.sum(g, axis=1) + np.sum(p, axis=1)
  return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def iou_per_image(masks, preds) -> np.ndarray:
  """(N,) intersection over union of binary predictions; both empty -> 1.0."""
  g, p = _binary_pair(masks, preds)
  inter = np.sum(g & p, axis=1).astype(np.float64)
  union = np.sum(g | p, axis=1)
  return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def _mean_of_first(scores, _unused):
  return float(np.mean(scores))


def segmentation_metrics(masks, probs, *, threshold: float = 0.5, num_replicates: int = 1000,
                         seed: int = 0, alpha: float = 0.05, groups=None) -> dict:
  """Mean per-image Dice and IoU with bootstrap intervals over the images.

  masks (N, H, W) binary; probs (N, H, W) foreground probabilities (or a binary prediction).
  Returns {'dice': {value, ci_low, ci_high, n_valid}, 'iou': {...}, 'num_images': N}; the same
  resampled images serve both metrics.
  """
  preds = binarize(probs, threshold)
  dice, iou = dice_per_image(masks, preds), iou_per_image(masks, preds)
  kw = dict(num_replicates=num_replicates, seed=seed, alpha=alpha, groups=groups)
  return {"dice": bootstrap_ci(dice, dice, _mean_of_first, **kw),
          "iou": bootstrap_ci(iou, iou, _mean_of_first, **kw),
          "num_images": int(len(dice))}


def short_title(name: str, limit: int = 26) -> str:
  """`name` cut in the middle to at most `limit` characters (long file names overlap their neighbours)."""
  name = str(name)
  if len(name) <= limit:
    return name
  keep = limit - 1
  return name[:keep // 2] + "…" + name[len(name) - (keep - keep // 2):]


def overlay_png(images, masks, preds, path, *, max_images: int = 8, columns: int = 4,
                titles=None) -> str:
  """Writes a PNG grid of the first `max_images` images (grey or RGB) with the outline of the
  true mask in green and of the prediction in red (their overlap tinted yellow), each titled with
  its Dice. images (N, H, W), (N, H, W, 1) or (N, H, W, 3); masks and preds (N, H, W) binary.
  Returns `path`. Uses matplotlib's Agg canvas directly, so no display or global backend."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  images = np.asarray(images, np.float64)
  masks, preds = np.asarray(masks).astype(bool), np.asarray(preds).astype(bool)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if masks.ndim == 4 and masks.shape[-1] == 1:
    masks, preds = masks[..., 0], preds[..., 0]
  if images.shape[:3] != masks.shape or masks.shape != preds.shape:
    raise ValueError(f"images {images.shape}, masks {masks.shape} and predictions {preds.shape} do not match")
  n = min(len(images), max_images)
  if n == 0:
    raise ValueError("no images to draw")
  dice = dice_per_image(masks[:n], preds[:n])
  cols = min(columns, n)
  rows = -(-n // cols)
  fig = Figure(figsize=(3 * cols, 3.2 * rows))
  FigureCanvasAgg(fig)
  for i in range(n):
    ax = fig.add_subplot(rows, cols, i + 1)
    img = images[i]
    lo, hi = np.min(img), np.max(img)
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    tint = np.zeros(masks.shape[1:] + (4,))
    tint[masks[i] & preds[i]] = (1.0, 1.0, 0.0, 0.25)
    tint[masks[i] & ~preds[i]] = (0.0, 1.0, 0.0, 0.25)
    tint[~masks[i] & preds[i]] = (1.0, 0.0, 0.0, 0.25)
    ax.imshow(tint, interpolation="nearest")
    for m, colour in ((masks[i], "lime"), (preds[i], "red")):
      if m.any() and not m.all():
        ax.contour(m.astype(float), levels=[0.5], colors=colour, linewidths=1.0)
    label = short_title(titles[i]) if titles is not None else f"image {i}"
    ax.set_title(f"{label}  Dice {dice[i]:.3f}", fontsize=8)
    ax.set_axis_off()
  fig.suptitle("true mask: green   prediction: red   overlap: yellow", fontsize=9)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  jsonio.write_bytes(path, buf.getvalue())
  return str(path)
