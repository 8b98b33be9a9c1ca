"""The papers' classification metrics, as small pure functions of (labels, probabilities).

Multi-class (labels (N,) int, probs (N, K)): top-k accuracy, top-k sensitivity averaged over
the classes present (optionally leaving some out, e.g. Derm's 'Other'), one-vs-rest AUC and
average precision (macro over classes present in the labels), Cohen's kappa with quadratic
weights. Multi-label (labels (N, L) in {0, 1} with NaN = ignore, scores (N, L)): AUC and AUPRC
per label and their means (over the labels not left out by `exclude_classes`, e.g. findings with
too few positives in the test split: `eval.min_positives`). sklearn computes each metric but ROC
AUC, and this module picks the inputs. ROC AUC is the Mann-Whitney statistic on mid-ranks
(`binary_auc`): the same number as sklearn's roc_auc_score (ties included; tested to 1e-12), about
18x faster, which is what a bootstrap of 1,000 replicates per comparison spends its time on.
"""
import numpy as np
from scipy import stats
from sklearn import metrics as skm

from medssl_jax.errors import UserError


def _check_multiclass(labels, probs):
  labels, probs = np.asarray(labels), np.asarray(probs, np.float64)
  if probs.ndim != 2 or labels.shape != (len(probs),):
    raise ValueError(f"need labels (N,) and probs (N, K); got {labels.shape} and {probs.shape}")
  if np.any(np.isnan(probs)):
    raise ValueError("probabilities contain NaN")
  if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
    bad = labels[(labels < 0) | (labels >= probs.shape[1])][0]
    raise ValueError(f"label {bad} outside the class range [0, {probs.shape[1]})")
  return labels.astype(np.int64), probs


def top_k_accuracy(labels, probs, k: int) -> float:
  labels, probs = _check_multiclass(labels, probs)
  topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]
  return float(np.mean(np.any(topk == labels[:, None], axis=1)))


def top_k_sensitivity(labels, probs, k: int, exclude_classes=()) -> float:
  """Recall of the top-k prediction per class, averaged over the classes present."""
  labels, probs = _check_multiclass(labels, probs)
  hit = np.any(np.argsort(-probs, axis=1, kind="stable")[:, :k] == labels[:, None], axis=1)
  classes = [c for c in np.unique(labels) if c not in set(exclude_classes)]
  if not classes:
    return float("nan")
  return float(np.mean([hit[labels == c].mean() for c in classes]))


def binary_auc(is_positive, scores) -> float:
  """ROC AUC of scores for a binary target: P(score of a positive > score of a negative), ties
  counting 1/2, = (sum of the positives' mid-ranks - n1 (n1 + 1) / 2) / (n1 n0)."""
  y = np.asarray(is_positive).astype(bool)
  n1 = int(y.sum())
  n0 = len(y) - n1
  if n1 == 0 or n0 == 0:
    raise ValueError("ROC AUC needs both a positive and a negative example")
  ranks = stats.rankdata(np.asarray(scores, np.float64))
  return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_ovr(labels, probs) -> float:
  """Macro one-vs-rest ROC AUC over the classes present (nan if fewer than 2 present)."""
  labels, probs = _check_multiclass(labels, probs)
  present = np.unique(labels)
  if len(present) < 2:
    return float("nan")
  return float(np.mean([binary_auc(labels == c, probs[:, c]) for c in present]))


def auprc(labels, probs) -> float:
  labels, probs = _check_multiclass(labels, probs)
  present = np.unique(labels)
  return float(np.mean([skm.average_precision_score(labels == c, probs[:, c]) for c in present]))


def cohen_kappa_quadratic(labels, probs) -> float:
  labels, probs = _check_multiclass(labels, probs)
  return float(skm.cohen_kappa_score(labels, np.argmax(probs, 1), weights="quadratic",
                                     labels=np.arange(probs.shape[1])))


def _per_label(fn, labels, scores):
  labels, scores = np.asarray(labels, np.float64), np.asarray(scores, np.float64)
  if labels.shape != scores.shape or labels.ndim != 2:
    raise ValueError(f"need labels and scores of one (N, L) shape; got {labels.shape} and {scores.shape}")
  out = []
  for j in range(labels.shape[1]):
    keep = ~np.isnan(labels[:, j])
    y = labels[keep, j]
    out.append(fn(y, scores[keep, j]) if len(np.unique(y)) == 2 else np.nan)
  return np.asarray(out)


def auc_per_label(labels, scores) -> np.ndarray:
  return _per_label(binary_auc, labels, scores)


def auprc_per_label(labels, scores) -> np.ndarray:
  return _per_label(skm.average_precision_score, labels, scores)


def metric_functions(task: str, num_outputs: int, exclude_classes=()) -> dict:
  """name -> fn(labels, probs) for the task's default metrics."""
  if task == "multiclass":
    fns = {"top1": lambda y, p: top_k_accuracy(y, p, 1), "top1_sensitivity": lambda y, p: top_k_sensitivity(y, p, 1, exclude_classes),
           "auc": auc_ovr, "auprc": auprc, "kappa": cohen_kappa_quadratic}
    if num_outputs > 3:
      fns["top3"] = lambda y, p: top_k_accuracy(y, p, 3)
      fns["top3_sensitivity"] = lambda y, p: top_k_sensitivity(y, p, 3, exclude_classes)
    return fns
  if task == "multilabel":
    keep = [j for j in range(num_outputs) if j not in {int(c) for c in exclude_classes}]
    fns = {"mean_auc": lambda y, p: float(np.nanmean(auc_per_label(y[:, keep], p[:, keep]))),
           "mean_auprc": lambda y, p: float(np.nanmean(auprc_per_label(y[:, keep], p[:, keep])))}
    for j in range(num_outputs):
      fns[f"auc_{j}"] = lambda y, p, j=j: float(auc_per_label(y[:, j:j + 1], p[:, j:j + 1])[0])
    return fns
  raise ValueError(f"task={task!r}: expected 'multiclass' or 'multilabel'")


def resolve_classes(spec, class_names=(), num_classes: int | None = None, key: str = "eval.exclude_classes") -> tuple:
  """Class indices for `spec`, a sequence of class names (str) and/or class indices (int).

  A name is looked up in `class_names` (the source's, e.g. a manifest's sorted label strings);
  an index must lie in [0, num_classes). Either kind that does not exist is a ValueError naming
  it and the known classes, so a class is never silently left in or the wrong one left out.
  """
  class_names = tuple(str(c) for c in class_names)
  out = []
  for c in tuple(spec):
    if isinstance(c, str):
      if not class_names:
        raise UserError(f"{key} names class {c!r} but the data has no class names (integer labels); "
                         f"give class indices instead, e.g. {key}=(26,)")
      if c not in class_names:
        raise UserError(f"{key}: unknown class {c!r}; the data's classes are {list(class_names)}")
      out.append(class_names.index(c))
    elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
      n = len(class_names) if class_names else num_classes
      if n is not None and not 0 <= int(c) < n:
        known = f"the data's classes are {list(class_names)}" if class_names else f"the data has {n} classes"
        raise UserError(f"{key}: class index {int(c)} does not exist ({known}); give an index in [0, {n}) "
                         f"or a class name")
      out.append(int(c))
    else:
      raise UserError(f"{key}: {c!r} is neither a class name nor a class index")
  return tuple(sorted(set(out)))


def log_loss(labels, probs, task: str, eps: float = 1e-7) -> float:
  """Mean cross-entropy of predicted probabilities: -log p[label] per image (multiclass), or the
  binary cross-entropy of each present label (multilabel; NaN labels are missing and left out).
  Probabilities are clipped to [eps, 1 - eps] (float32 softmax / sigmoid outputs reach 0 and 1)."""
  p = np.clip(np.asarray(probs, np.float64), eps, 1.0 - eps)
  if task == "multiclass":
    y = np.asarray(labels, np.int64)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))
  y = np.asarray(labels, np.float64)
  present = ~np.isnan(y)
  if not present.any():
    return float("nan")
  bce = -(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))
  return float(np.mean(bce[present]))


def compute_metrics(labels, probs, task: str, exclude_classes=()) -> dict:
  return {k: fn(labels, probs) for k, fn in metric_functions(task, np.shape(probs)[1], exclude_classes).items()}


def aggregate_by_case(case_ids, labels, probs):
  """Averages the predictions of each case's images; a case's labels must agree."""
  case_ids, labels, probs = np.asarray(case_ids), np.asarray(labels), np.asarray(probs)
  uniq, inverse = np.unique(case_ids, return_inverse=True)
  out_p = np.zeros((len(uniq),) + probs.shape[1:])
  np.add.at(out_p, inverse, probs)
  out_p /= np.bincount(inverse)[:, None]
  first = np.zeros(len(uniq), np.int64)
  first[inverse[::-1]] = np.arange(len(case_ids))[::-1]
  out_y = labels[first]
  same = np.array([np.array_equal(labels[i], out_y[inverse[i]], equal_nan=labels.dtype.kind == "f")
                   for i in range(len(labels))])
  if not same.all():
    raise ValueError(f"case {case_ids[~same][0]} has images with different labels")
  return uniq, out_y, out_p
