"""Training subsets and oversampling, the same in every mode (linear evaluation, fine-tuning, DVME).

Truong et al. 2021 (Sec. 4, Table 1) train on Small / Medium / Full class-balanced subsets of the
training images, five draws (folds) each (`finetune.train_size`, `finetune.fold`), and oversample
NIH ChestX-ray14's rare classes (`finetune.oversample`). Pure functions of the labels and seeds,
so each mode, pipeline and process draws the same rows.
"""
import numpy as np

from medssl_jax.errors import UserError


def balanced_counts(size: int, num_classes: int) -> np.ndarray:
  """Images per class (in sorted class order) of a class-balanced subset of `size`: size // C
  each, the remainder one more to each of the first classes."""
  return np.full(num_classes, size // num_classes) + (np.arange(num_classes) < size % num_classes)


def largest_balanced_size(labels: np.ndarray) -> int:
  """The largest `size` that training_subset can draw class-balanced from (N,) labels."""
  classes, counts = np.unique(np.asarray(labels), return_counts=True)
  base = len(classes) * int(counts.min())
  return max(s for s in range(base, base + len(classes)) if np.all(balanced_counts(s, len(classes)) <= counts))


def training_subset(labels: np.ndarray, size: int, fold: int, seed: int) -> np.ndarray:
  """Row indices of Truong et al.'s class-balanced training subsets (Sec. 4, Table 1): `size`
  images, size // C of each of the C classes (the remainder to the first classes), drawn without
  replacement by (seed, fold); each fold is another draw. size 0: every row. Multi-label labels
  have no classes to balance: a plain random draw."""
  n = len(labels)
  if size <= 0 or size >= n:
    return np.arange(n)
  rng = np.random.default_rng([seed, fold])
  if labels.ndim != 1:
    return np.sort(rng.choice(n, size, replace=False))
  classes = np.unique(labels)
  want = balanced_counts(size, len(classes))
  picked = []
  for c, k in zip(classes, want):
    rows = np.flatnonzero(labels == c)
    if k > len(rows):
      raise UserError(f"finetune.train_size={size}: class {c} has {len(rows)} training images, fewer than the "
                      f"{k} a balanced subset needs; use a smaller train_size")
    picked.append(rng.choice(rows, k, replace=False))
  return np.sort(np.concatenate(picked))


def oversample_groups(labels: np.ndarray) -> np.ndarray:
  """The group each training image is balanced in: its class for (N,) labels, or for multi-label
  (N, L) labels its rarest positive label (fewest positives in `labels`; ties: the lower index;
  positive = > 0.5, NaN is not), with L for images without any positive label (Truong's 'other')."""
  labels = np.asarray(labels)
  if labels.ndim == 1:
    return labels.astype(np.int64)
  pos = np.nan_to_num(labels.astype(np.float64), nan=0.0) > 0.5
  freq = pos.sum(0)
  rarity = np.where(pos, freq[None, :], np.iinfo(np.int64).max)   # (N, L); not positive: never picked
  return np.where(pos.any(1), np.argmin(rarity, axis=1), labels.shape[1]).astype(np.int64)


def oversample_rows(labels: np.ndarray, seed: int, epoch: int) -> np.ndarray:
  """Row indices of one oversampled epoch (`finetune.oversample`): N draws with replacement, each row
  with probability 1 / (G * size of its group) over the G groups of `oversample_groups`, so every
  group is drawn N / G times in expectation. A pure function of (labels, seed, epoch).

  Truong et al. (Sec. 4, App. A) "used an oversampling strategy during the training procedure"
  for NIH Chest X-ray's class imbalance without saying which; readings taken here: random
  oversampling with replacement to equal class frequencies, an epoch as long as the training set.
  """
  return oversample_order(oversample_groups(labels), seed, epoch)


def oversample_order(groups: np.ndarray, seed: int, epoch: int) -> np.ndarray:
  """One epoch's rows: len(groups) draws with replacement, each row with probability 1 / (G x the
  size of its group), by (seed, epoch)."""
  _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
  p = 1.0 / (len(counts) * counts[inverse])
  rng = np.random.default_rng([int(seed), int(epoch), 0x0A5])
  return rng.choice(len(groups), size=len(groups), replace=True, p=p / p.sum())


class Oversampled:
  """The unit order of each epoch when units are oversampled (`finetune.oversample` in the host
  pipelines): `oversample_order` of the units' groups, one draw per epoch (cached, dropped when
  pickled to a worker)."""

  def __init__(self, groups, seed: int):
    self.groups, self.seed, self._cache = np.asarray(groups, np.int64), int(seed), {}

  def __call__(self, epoch: int) -> np.ndarray:
    if epoch not in self._cache:
      self._cache = {epoch: oversample_order(self.groups, self.seed, epoch)}
    return self._cache[epoch]

  def __getstate__(self):
    return {"groups": self.groups, "seed": self.seed, "_cache": {}}
