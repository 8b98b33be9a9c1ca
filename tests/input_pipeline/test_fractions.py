"""Label fractions: per case, stratified, nested across fractions, deterministic."""
import numpy as np
import pytest

from input_pipeline import fractions


def _data():
  rng = np.random.default_rng(0)
  case_labels = np.repeat([0, 1, 2], [100, 50, 20])
  sizes = rng.integers(1, 4, len(case_labels))
  case_ids = np.repeat([f"c{i}" for i in range(len(case_labels))], sizes)
  labels = np.repeat(case_labels, sizes)
  return labels, case_ids


def test_per_case_stratified_nested_deterministic():
  labels, case_ids = _data()
  prev = None
  for f in (0.01, 0.1, 0.5, 1.0):
    idx = fractions.sample_fraction(labels, case_ids, f, seed=3)
    chosen = set(case_ids[idx])
    # Whole cases only.
    assert set(np.flatnonzero(np.isin(case_ids, list(chosen)))) == set(idx)
    # Stratified: per class round(f * cases), at least one.
    for c, n in zip((0, 1, 2), (100, 50, 20)):
      got = len({k for k in chosen if labels[case_ids == k][0] == c})
      assert got == max(1, round(f * n))
    if prev is not None:
      assert prev <= chosen          # nested
    prev = chosen
    np.testing.assert_array_equal(idx, fractions.sample_fraction(labels, case_ids, f, seed=3))
  a = fractions.sample_fraction(labels, case_ids, 0.1, seed=0)
  b = fractions.sample_fraction(labels, case_ids, 0.1, seed=1)
  assert not np.array_equal(a, b)
  assert len(fractions.fraction_draws(labels, case_ids, 0.1, 3)) == 3


def test_bad_fractions():
  labels, case_ids = _data()
  for f in (0.0, -0.1, 1.5):
    with pytest.raises(ValueError, match="must be in"):
      fractions.sample_fraction(labels, case_ids, f, 0)


def test_multilabel_keeps_the_fraction_and_a_positive_of_every_label():
  """Multi-label: strata by the case's rarest positive label, so the sample stays near the fraction
  (one stratum per label, not per label pattern) and every label keeps a positive case."""
  rng = np.random.default_rng(2)
  n_cases, n_labels = 400, 14
  rates = np.linspace(0.01, 0.3, n_labels)                       # rare to common findings
  case_labels = (rng.random((n_cases, n_labels)) < rates).astype(np.int32)
  case_labels[:3, 0] = 1                                           # label 0: at least 3 positives
  case_ids = np.asarray([f"p{i}" for i in range(n_cases)])
  patterns = len({tuple(r) for r in case_labels})
  # Independent reference: each case's stratum by hand.
  rarity = case_labels.sum(axis=0)
  strata = ["none" if not r.any() else int(np.flatnonzero(r)[np.argmin(rarity[np.flatnonzero(r)])])
            for r in case_labels]
  prev = set()
  for f in (0.05, 0.1, 0.5):
    idx = fractions.sample_fraction(case_labels, case_ids, f, seed=0)
    chosen = set(case_ids[idx])
    want = sum(max(1, round(f * strata.count(k))) for k in set(strata))
    assert len(chosen) == want
    assert len(chosen) <= round(f * n_cases) + n_labels + 1
    if f <= 0.1:
      assert len(chosen) < patterns / 2                              # not one case per label pattern
    picked = case_labels[np.isin(case_ids, list(chosen))]
    assert (picked.sum(axis=0)[rarity > 0] >= 1).all()             # every label keeps a positive
    assert prev <= chosen                                             # still nested
    prev = chosen
