"""Independent two-sample t-test between the scores of two models over repeated runs.

Hosseinzadeh Taher et al. 2021 report the mean and standard deviation of each model over 10
runs and compare models with "an independent two-sample t-test" at p = 0.05 (Sec. 3, Table 2
caption, App. B). The paper does not say whether the variances are pooled; the test of that name
is Student's, with a pooled variance (equal variances assumed), which is also scipy's default,
so that is the default here. `equal_var=False` gives Welch's test (separate variances,
Welch-Satterthwaite degrees of freedom), safer when the two models' run-to-run spreads differ.
Two-sided p-values. Standard deviations are the sample ones (ddof=1), those the test uses.
"""
import numpy as np
from scipy import stats


def independent_t_test(a, b, *, equal_var: bool = True) -> dict:
  """Two-sided independent two-sample t-test of mean(a) == mean(b).

  Returns {t, p, df, mean_a, std_a, n_a, mean_b, std_b, n_b, equal_var}; t > 0 when a's mean
  is the larger.
  """
  a = np.asarray(a, np.float64).ravel()
  b = np.asarray(b, np.float64).ravel()
  if len(a) < 2 or len(b) < 2:
    raise ValueError(f"a t-test needs at least 2 values per group; got {len(a)} and {len(b)}")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    raise ValueError("t-test inputs contain NaN or infinity")
  res = stats.ttest_ind(a, b, equal_var=equal_var)
  return {"t": float(res.statistic), "p": float(res.pvalue), "df": float(res.df),
          "mean_a": float(np.mean(a)), "std_a": float(np.std(a, ddof=1)), "n_a": int(len(a)),
          "mean_b": float(np.mean(b)), "std_b": float(np.std(b, ddof=1)), "n_b": int(len(b)),
          "equal_var": bool(equal_var)}
