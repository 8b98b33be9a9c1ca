"""The embedded synthetic medical-like data set (the demo's and the tests' default data).

A case (patient, lesion) has 1..max_images_per_case images of ONE underlying condition, its
class. Its images share the case's appearance: background level and tint and a smooth
organ-like blob; each image varies in blob position, blob scale and noise. Classes differ only
by a SMALL LOCAL PATTERN, a lesion motif of 5x5 (or 10x10) pixels (dots, horizontal stripes,
vertical stripes, ring, cross, ...) stamped 1-3 times at random places with a per-case
contrast, so a classifier has to look at local texture rather than global colour: a linear
model on raw pixels stays far below a small CNN.

Fully deterministic in NumPy. 'train', 'val' and 'test' are disjoint sets of cases drawn from
different random streams, with case ids such as 'train-case-00012'; class balance is exact
at the case level (case labels are a shuffled round robin).
"""
import functools

import numpy as np

from input_pipeline.sources.base import Source, check_no_leakage, unknown_split

SPLITS = ("train", "val", "test")
MOTIF = 5  # motif side in pixels at scale 1


def split_num_cases(num_cases: int, num_classes: int, split: str) -> int:
  """train: num_cases; val and test: num_cases // 4 each (at least one case per class)."""
  return num_cases if split == "train" else max(num_classes, num_cases // 4)


def motifs(num_classes: int) -> np.ndarray:
  """(num_classes, 5, 5) float patterns in [-1, 1], one lesion motif per class."""
  yy, xx = np.mgrid[-2:3, -2:3]
  base = [
      (yy % 2 == 0) & (xx % 2 == 0),          # dots
      np.where(yy % 2 == 0, 1, -1),           # horizontal stripes
      np.where(xx % 2 == 0, 1, -1),           # vertical stripes
      (abs(yy) == 2) | (abs(xx) == 2),        # ring
      (yy == 0) | (xx == 0),                  # cross
      np.where(yy == xx, 1, -1),              # diagonal stripe
      abs(yy) + abs(xx) <= 1,                 # small diamond
      np.where(yy == -xx, 1, -1),             # anti-diagonal stripe
  ]
  base = [np.asarray(b, np.float64) for b in base]
  rng = np.random.default_rng(1234)
  while len(base) < num_classes:  # more classes than hand-made motifs: random +-1 patterns
    base.append(rng.choice([-1.0, 1.0], size=(MOTIF, MOTIF)))
  return np.stack(base[:num_classes])


def _case_sizes(rng, n, max_images):
  # Skewed towards small cases (1/k), like dermatology cases of 1-6 images.
  k = np.arange(1, max_images + 1)
  return rng.choice(k, size=n, p=(1.0 / k) / np.sum(1.0 / k))


def make_synthetic(num_cases: int = 600, num_classes: int = 4, max_images_per_case: int = 6,
                   image_size: int = 32, colour: bool = True, seed: int = 0,
                   split: str = "train") -> Source:
  """Generates one split as an in-memory Source (uint8 images (N, S, S, 3 or 1))."""
  if split not in SPLITS:
    raise ValueError(f"synthetic data has splits {list(SPLITS)}, not {split!r}")
  if image_size < 2 * MOTIF:
    raise ValueError(f"data.synthetic.image_size={image_size} is too small (need >= {2 * MOTIF})")
  if num_classes < 2 or num_cases < 1 or max_images_per_case < 1:
    raise ValueError(f"synthetic data needs num_classes >= 2, num_cases >= 1 and max_images_per_case >= 1; "
                     f"got {num_classes}, {num_cases}, {max_images_per_case}")
  n = split_num_cases(num_cases, num_classes, split)
  rng = np.random.default_rng([seed, SPLITS.index(split), 7919])
  patterns = motifs(num_classes)
  case_labels = rng.permutation(np.arange(n) % num_classes)
  sizes = _case_sizes(rng, n, max_images_per_case)
  s, ch = image_size, (3 if colour else 1)
  yy, xx = np.mgrid[0:s, 0:s] / s
  total = int(sizes.sum())
  images = np.empty((total, s, s, ch), np.uint8)
  labels = np.repeat(case_labels, sizes).astype(np.int64)
  case_ids = np.array([f"{split}-case-{c:05d}" for c in range(n) for _ in range(sizes[c])])
  image_ids = np.array([f"{split}-case-{c:05d}-img{i}" for c in range(n) for i in range(sizes[c])])
  j = 0
  for c in range(n):
    # Case-level appearance, shared by all images of the case.
    level = rng.uniform(0.25, 0.55)
    tint = rng.uniform(0.75, 1.25, size=ch) if colour else np.ones(1)
    cy, cx, radius = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.4)
    contrast = rng.uniform(0.15, 0.3)
    motif = patterns[case_labels[c]]
    for _ in range(sizes[c]):
      # Image-level variation: blob position and scale, noise, lesion count and places.
      dy, dx = rng.normal(0.0, 0.05, size=2)
      r = radius * rng.uniform(0.85, 1.15)
      blob = np.exp(-((yy - cy - dy) ** 2 + (xx - cx - dx) ** 2) / (2 * r * r))
      img = level + 0.25 * blob + rng.normal(0.0, 0.04, size=(s, s))
      for _ in range(rng.integers(1, 4)):
        scale = int(rng.integers(1, 3)) if s >= 24 else 1
        m = np.kron(motif, np.ones((scale, scale)))
        y0, x0 = rng.integers(0, s - m.shape[0] + 1, size=2)
        img[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] += contrast * m
      images[j] = np.round(np.clip(img[..., None] * tint, 0.0, 1.0) * 255)
      j += 1
  return Source(f"synthetic:{split}", labels, case_ids, image_ids, num_classes, images=images)


# ---- the reader -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _synthetic_split(num_cases, num_classes, max_images, size, colour, seed, split) -> Source:
  src = make_synthetic(num_cases, num_classes, max_images, size, colour, seed, split)
  src.images.setflags(write=False)  # cached: shared by every caller
  return src


def load(data_cfg, split):
  if split not in SPLITS:
    raise unknown_split("synthetic data", split, SPLITS)
  s = data_cfg.synthetic
  args = (int(s.num_cases), int(s.num_classes), int(s.max_images_per_case), int(s.image_size), bool(s.colour),
          int(s.get("seed", 0)))
  splits = {name: _synthetic_split(*args, name) for name in SPLITS}
  check_no_leakage(splits)
  return splits[split]
