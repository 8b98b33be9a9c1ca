"""The embedded synthetic medical-like dataset (the demo's and the tests' default data).

Cases of 1..max_images_per_case images of ONE underlying condition (the case's class). Images of
a case share the case's appearance (background level and tint, a smooth organ-like blob); each
image varies in position, scale and noise. Classes differ only by a SMALL LOCAL PATTERN, a
lesion motif a few pixels wide (dots, horizontal stripes, vertical stripes, ring, cross, ...)
placed 1-3 times at random positions, so a classifier has to look at local texture rather
than global colour. Fully deterministic in NumPy; train/val/test are disjoint sets of cases.
"""
import numpy as np

SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}
_MOTIF = 5  # motif side in pixels


def _motifs(num_classes: int) -> np.ndarray:
  """One 5x5 pattern in {-1, 0, 1} per class."""
  yy, xx = np.mgrid[-2:3, -2:3]
  base = [
      ((yy % 2 == 0) & (xx % 2 == 0)).astype(float),             # dots
      (yy % 2 == 0).astype(float) * 2 - 1,                       # horizontal stripes
      (xx % 2 == 0).astype(float) * 2 - 1,                       # vertical stripes
      ((np.abs(yy) == 2) | (np.abs(xx) == 2)).astype(float),     # ring
      ((yy == 0) | (xx == 0)).astype(float),                     # cross
      (yy == xx).astype(float) * 2 - 1,                          # diagonal
      (np.abs(yy) + np.abs(xx) <= 1).astype(float),              # small blob
      (yy + xx == 0).astype(float) * 2 - 1,                      # anti-diagonal
  ]
  if num_classes > len(base):
    rng = np.random.default_rng(1234)
    base += [rng.choice([-1.0, 1.0], size=(_MOTIF, _MOTIF)) for _ in range(num_classes - len(base))]
  return np.stack(base[:num_classes])


def _case_sizes(rng, num_cases, max_images):
  # Skewed towards small cases, like Derm (1-6 images per case).
  p = 1.0 / np.arange(1, max_images + 1)
  return rng.choice(np.arange(1, max_images + 1), size=num_cases, p=p / p.sum())


def make_synthetic(num_cases: int = 600, num_classes: int = 4, max_images_per_case: int = 6,
                   image_size: int = 32, colour: bool = True, seed: int = 0, split: str = "train"):
  """Returns (images uint8 (N,S,S,C), labels (N,), case_ids (N,), image_ids (N,))."""
  if split not in SPLIT_OFFSETS:
    raise ValueError(f"synthetic data has splits {sorted(SPLIT_OFFSETS)}, not {split!r}")
  if image_size < 2 * _MOTIF:
    raise ValueError(f"data.synthetic.image_size={image_size} is too small (>= {2 * _MOTIF})")
  n_cases = num_cases if split == "train" else max(num_classes, num_cases // 4)
  rng = np.random.default_rng([seed, SPLIT_OFFSETS[split], 7919])
  motifs = _motifs(num_classes)
  labels_c = np.arange(n_cases) % num_classes
  rng.shuffle(labels_c)
  sizes = _case_sizes(rng, n_cases, max_images_per_case)
  s, ch = image_size, 3 if colour else 1
  yy, xx = np.mgrid[0:s, 0:s] / s
  images, labels, case_ids, image_ids = [], [], [], []
  for c in range(n_cases):
    level = rng.uniform(0.25, 0.55)
    tint = rng.uniform(0.8, 1.2, size=ch) if colour else np.ones(1)
    cy, cx, rad = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.4)
    for i in range(sizes[c]):
      dy, dx = rng.normal(0, 0.05, size=2)
      blob = np.exp(-(((yy - cy - dy) ** 2 + (xx - cx - dx) ** 2) / (2 * (rad * rng.uniform(0.9, 1.1)) ** 2)))
      img = level + 0.25 * blob + rng.normal(0, 0.04, size=(s, s))
      for _ in range(rng.integers(1, 4)):
        scale = rng.integers(1, 3) if s >= 24 else 1
        m = np.kron(motifs[labels_c[c]], np.ones((scale, scale)))
        y0, x0 = rng.integers(0, s - m.shape[0] + 1, size=2)
        img[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] += 0.22 * m
      img = np.clip(img[..., None] * tint, 0, 1)
      images.append(np.round(img * 255).astype(np.uint8))
      labels.append(labels_c[c])
      case_ids.append(f"{split}-case-{c:05d}")
      image_ids.append(f"{split}-case-{c:05d}-img{i}")
  return (np.stack(images), np.asarray(labels, np.int64), np.asarray(case_ids), np.asarray(image_ids))
