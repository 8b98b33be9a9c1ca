"""Metrics per subgroup: the evaluated split cut by a column the data source provides
(`Source.subgroups`, e.g. view PA / AP and sex F / M of NIH ChestX-ray14), each part scored as
the whole split is (same task, case-level setting and excluded classes), with bootstrap 95%
intervals over its own images (or cases, when case-level).

Only a few headline metrics per part (`SUMMARY`): a part is small, and every metric costs a
bootstrap. Fine-tuning and linear evaluation write the result to results.json `test_subgroups`.
"""
import numpy as np

from medssl_jax.evaluation import bootstrap
from medssl_jax.evaluation import metrics as metrics_lib

SUMMARY = {"multiclass": ("top1", "auc"), "multilabel": ("mean_auc",)}


def subgroup_metrics(labels, probs, task: str, subgroups: dict, *, case_ids=None, case_level: bool = False,
                     exclude_classes=(), num_replicates: int = 1000, seed: int = 0, metric_names=None) -> dict:
  """{column: {value: {"num_images", "num_cases", ["positives"], metric: {value, ci_low, ci_high, n_valid}}}}.

  Args:
    labels, probs: the split's per-image labels and predictions (as the run scores them).
    subgroups: column name -> one value per image.
    case_ids: per image; needed for `case_level` (the part's images of a case are averaged).
    metric_names: the metrics to report (default SUMMARY[task]).
  """
  labels, probs = np.asarray(labels), np.asarray(probs)
  case_ids = np.arange(len(labels)).astype(str) if case_ids is None else np.asarray(case_ids).astype(str)
  fns = metrics_lib.metric_functions(task, probs.shape[1], tuple(exclude_classes))
  names = tuple(metric_names or SUMMARY[task])
  unknown = [k for k in names if k not in fns]
  if unknown:
    raise ValueError(f"subgroup metrics {unknown} are not metrics of task {task!r}: {list(fns)}")
  out = {}
  for column, values in subgroups.items():
    values = np.asarray(values).astype(str)
    if values.shape != (len(labels),):
      raise ValueError(f"subgroup {column!r} has {values.shape} values for {len(labels)} images")
    out[column] = {}
    for value in sorted(set(values.tolist())):
      keep = values == value
      y, p, cases = labels[keep], probs[keep], case_ids[keep]
      if case_level:
        _, y, p = metrics_lib.aggregate_by_case(cases, y, p)
      entry = {"num_images": int(keep.sum()), "num_cases": int(len(np.unique(cases)))}
      if task == "multilabel":
        entry["positives"] = [int(v) for v in np.nansum(np.asarray(y, np.float64) > 0.5, axis=0)]
      for k in names:
        entry[k] = bootstrap.bootstrap_ci(y, p, fns[k], num_replicates=num_replicates, seed=seed)
      out[column][value] = entry
  return out
