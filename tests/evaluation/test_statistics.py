"""independent_t_test against hand formulas (pooled and Welch t, degrees of freedom, and a p-value
from numerically integrating Student's t density, no scipy) and against scipy on fixed numbers."""
import math

import numpy as np
import pytest
from scipy import stats

from medssl_jax.evaluation.statistics import independent_t_test


def _two_sided_p(t, df, num=200_001):
  """2 * P(T > |t|) = 1 - integral of Student's t density over [-|t|, |t|] (Simpson's rule)."""
  c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
  x = np.linspace(-abs(t), abs(t), num)
  f = c * (1 + x**2 / df) ** (-(df + 1) / 2)
  h = x[1] - x[0]
  integral = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
  return 1.0 - integral


def test_pooled_t_hand_case():
  # means 3 and 4, sample variances 2.5 and 2.5: pooled variance 2.5, se = sqrt(2.5 * 2/5) = 1.
  r = independent_t_test([1, 2, 3, 4, 5], [2, 3, 4, 5, 6])
  assert r["t"] == pytest.approx(-1.0, abs=1e-12)
  assert r["df"] == 8
  assert r["p"] == pytest.approx(_two_sided_p(-1.0, 8), abs=1e-9)
  assert r["p"] == pytest.approx(0.346593, abs=1e-6)  # t table, 8 df
  assert (r["mean_a"], r["mean_b"], r["n_a"], r["n_b"]) == (3.0, 4.0, 5, 5)
  assert r["std_a"] == pytest.approx(math.sqrt(2.5)) and r["std_b"] == pytest.approx(math.sqrt(2.5))


# Ten-run Dice-like scores of two encoders (fixed numbers, unequal sizes and spreads).
A = [98.31, 98.25, 98.19, 98.40, 98.22, 98.35, 98.28, 98.30, 98.17, 98.33]
B = [98.19, 98.05, 98.21, 98.10, 97.98, 98.15, 98.30, 98.02]


def test_pooled_against_hand_formula_and_scipy():
  a, b = np.array(A), np.array(B)
  na, nb = len(a), len(b)
  sp2 = ((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2)
  t = (a.mean() - b.mean()) / math.sqrt(sp2 * (1 / na + 1 / nb))
  r = independent_t_test(A, B)
  assert r["t"] == pytest.approx(t, rel=1e-10)
  assert r["df"] == na + nb - 2
  assert r["p"] == pytest.approx(_two_sided_p(t, na + nb - 2), abs=1e-8)
  ref = stats.ttest_ind(A, B)
  assert (r["t"], r["p"]) == (pytest.approx(ref.statistic, rel=1e-12), pytest.approx(ref.pvalue, rel=1e-10))
  assert r["t"] > 0 and r["p"] < 0.05 and r["equal_var"]


def test_welch_against_hand_formula_and_scipy():
  a, b = np.array(A), np.array(B)
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  t = (a.mean() - b.mean()) / math.sqrt(va + vb)
  df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
  r = independent_t_test(A, B, equal_var=False)
  assert r["t"] == pytest.approx(t, rel=1e-10)
  assert r["df"] == pytest.approx(df, rel=1e-10)
  assert df != pytest.approx(len(a) + len(b) - 2)  # the two variants differ here
  assert r["p"] == pytest.approx(_two_sided_p(t, df), abs=1e-8)
  ref = stats.ttest_ind(A, B, equal_var=False)
  assert r["p"] == pytest.approx(ref.pvalue, rel=1e-10) and not r["equal_var"]


def test_swapping_groups_flips_t_only():
  r1, r2 = independent_t_test(A, B), independent_t_test(B, A)
  assert r2["t"] == pytest.approx(-r1["t"]) and r2["p"] == pytest.approx(r1["p"])
  assert (r2["mean_a"], r2["std_a"]) == (r1["mean_b"], r1["std_b"])


def test_refuses_too_few_or_non_finite_values():
  with pytest.raises(ValueError, match="at least 2"):
    independent_t_test([1.0], [1.0, 2.0])
  with pytest.raises(ValueError, match="NaN"):
    independent_t_test([1.0, float("nan")], [1.0, 2.0])
