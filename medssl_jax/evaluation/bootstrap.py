"""Bootstrap 95% intervals (Azizi et al. 2021 App. B.1.1): resample the test set with
replacement 1,000 times, recompute the metric, take the 2.5% and 97.5% percentiles. Paired
differences use the same resampled indices for both models. Seeded, so reproducible."""
import numpy as np

from medssl_jax.evaluation import metrics as metrics_lib


def _indices(n, num_replicates, seed, groups=None):
  rng = np.random.default_rng(seed)
  if groups is None:
    return [rng.integers(0, n, n) for _ in range(num_replicates)]
  uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
  members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
  return [np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))]) for _ in range(num_replicates)]


def _interval(point, reps, alpha):
  reps = np.asarray(reps, np.float64)
  reps = reps[~np.isnan(reps)]
  if not len(reps):
    return {"value": float(point), "ci_low": float("nan"), "ci_high": float("nan"), "n_valid": 0}
  lo, hi = np.percentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)])
  return {"value": float(point), "ci_low": float(lo), "ci_high": float(hi), "n_valid": int(len(reps))}


def bootstrap_ci(labels, probs, metric_fn, *, num_replicates=1000, seed=0, alpha=0.05, groups=None) -> dict:
  labels, probs = np.asarray(labels), np.asarray(probs)
  reps = [metric_fn(labels[i], probs[i]) for i in _indices(len(labels), num_replicates, seed, groups)]
  return _interval(metric_fn(labels, probs), reps, alpha)


def bootstrap_all(labels, probs, task, *, num_replicates=1000, seed=0, alpha=0.05, groups=None,
                  exclude_classes=()) -> dict:
  labels, probs = np.asarray(labels), np.asarray(probs)
  fns = metrics_lib.metric_functions(task, probs.shape[1], exclude_classes)
  idx = _indices(len(labels), num_replicates, seed, groups)
  out = {}
  for name, fn in fns.items():
    out[name] = _interval(fn(labels, probs), [fn(labels[i], probs[i]) for i in idx], alpha)
  return out


def paired_bootstrap_difference(labels, probs_a, probs_b, metric_fn, *, num_replicates=1000, seed=0,
                                alpha=0.05, groups=None) -> dict:
  labels, probs_a, probs_b = np.asarray(labels), np.asarray(probs_a), np.asarray(probs_b)
  reps = [metric_fn(labels[i], probs_a[i]) - metric_fn(labels[i], probs_b[i])
          for i in _indices(len(labels), num_replicates, seed, groups)]
  r = _interval(metric_fn(labels, probs_a) - metric_fn(labels, probs_b), reps, alpha)
  return {"difference": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
          "excludes_zero": bool(r["ci_low"] > 0 or r["ci_high"] < 0)}
