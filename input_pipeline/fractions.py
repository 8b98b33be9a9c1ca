"""Label fractions: which training cases keep their labels (Azizi et al. Sec. 5.5, MoCo-CXR).

Sampling is per CASE (all images of a case go together), stratified by class (a case's class
is its first image's label), deterministic per seed and NESTED: for one seed, the cases of a
smaller fraction are a subset of those of any larger fraction (each stratum's cases are put in
one seeded random order and a prefix is taken). Each stratum keeps round(fraction x its cases),
at least one.

Multi-label data (a 2-D label array; 1 = positive): a case's stratum is its RAREST positive label
(the one with the fewest positive cases), or "no positive label". A reading, as the papers say
only "a fraction of the training set": one stratum per label keeps the sample near the asked
fraction (at most one extra case per label) while every label with a positive case keeps at
least one positive case. (Stratifying by the full pattern of labels, as before, kept one case
per pattern: at 10% of NIH's 165 training patients it kept 34.)
"""
import numpy as np


def _case_strata(labels, case_ids):
  labels, case_ids = np.asarray(labels), np.asarray(case_ids)
  cases, first = np.unique(case_ids, return_index=True)
  if labels.ndim == 2:
    positive = labels[first] == 1                       # cases x labels
    rarity = positive.sum(axis=0)                        # positive cases per label
    keys = []
    for row in positive:
      present = np.flatnonzero(row)
      # Rarest label first; ties by label index, so the stratum does not depend on the seed.
      keys.append(f"label {present[np.argmin(rarity[present])]}" if len(present) else "none")
  else:
    keys = labels[first].astype(str)
  return cases, np.asarray(keys)


def sample_fraction(labels, case_ids, fraction: float, seed: int) -> np.ndarray:
  """Sorted indices of the images of the selected cases."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"label fraction {fraction} must be in (0, 1]: an empty fraction leaves no labelled case")
  case_ids = np.asarray(case_ids)
  cases, strata = _case_strata(labels, case_ids)
  rng = np.random.default_rng([seed, 7])
  chosen = []
  for key in sorted(set(strata.tolist())):
    members = cases[strata == key]
    order = members[rng.permutation(len(members))]
    n = int(round(fraction * len(members)))
    chosen.extend(order[:max(n, 1)].tolist())
  selected = np.flatnonzero(np.isin(case_ids, chosen))
  if not len(selected):
    raise ValueError(f"label fraction {fraction} selects no image (empty fraction)")
  return selected


def fraction_draws(labels, case_ids, fraction: float, num_draws: int, seed: int = 0) -> list:
  return [sample_fraction(labels, case_ids, fraction, seed + d) for d in range(num_draws)]
