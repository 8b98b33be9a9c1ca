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
