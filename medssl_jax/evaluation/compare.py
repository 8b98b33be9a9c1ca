"""Paired comparison of two models on one test set (Azizi et al. 2021 App. B.1.1).

  medssl-jax compare A/predictions_test.npz B/predictions_test.npz \
      [--num_replicates=1000 --seed=0 --out=diff.json]

For every metric: the difference A - B on the test set, its 95% interval over 1,000 paired
bootstrap replicates (the same resampled examples for both models), and whether the interval
excludes zero. Prediction files are written by fine-tuning / linear-evaluation runs.

The metric is the one the runs report: each prediction file records the settings that define
it (task, `eval.case_level`, `eval.exclude_classes` as class indices, the class names), and
compare applies them, so its values of A and of B equal the `test` values of the two runs'
results.json exactly. Case-level files are compared on the case-averaged predictions with the
cases as the resampled units. Two files scored with different settings are refused. A file
from before these settings were recorded takes them from the config.json beside it.
"""
import json

import numpy as np

from medssl_jax import jsonio
from medssl_jax.errors import UserError
from medssl_jax.evaluation import bootstrap
from medssl_jax.evaluation import metrics as metrics_lib
from etils import epath


SETTINGS = ("task", "case_level", "exclude_classes", "class_names")


def save_predictions(path, *, image_ids, case_ids, labels, probs, task, case_level=False, exclude_classes=(),
                     class_names=()) -> None:
  """Predictions plus the settings of the metric computed from them (see the module docstring).
  `path` may be on GCS (gs://; written through etils.epath)."""
  with jsonio.open_atomic(path) as f:
    _savez(f, image_ids=image_ids, case_ids=case_ids, labels=labels, probs=probs, task=task, case_level=case_level,
           exclude_classes=exclude_classes, class_names=class_names)


def _savez(f, *, image_ids, case_ids, labels, probs, task, case_level, exclude_classes, class_names) -> None:
  np.savez(f, image_ids=np.asarray(image_ids).astype(str), case_ids=np.asarray(case_ids).astype(str),
           labels=np.asarray(labels), probs=np.asarray(probs, np.float32), task=np.asarray(task),
           case_level=np.asarray(bool(case_level)),
           exclude_classes=np.asarray([int(c) for c in exclude_classes], np.int64),
           class_names=np.asarray([str(c) for c in class_names], dtype=str))


def _settings_from_config(path) -> dict:
  """Metric settings of a prediction file written before they were recorded: its run's config.json."""
  cfg_path = epath.Path(path).parent / "config.json"
  if not cfg_path.is_file():
    raise UserError(f"{path} does not record the settings of its metric (case_level, exclude_classes) and "
                     f"has no config.json beside it; re-run the run's evaluation to rewrite it")
  ev = json.loads(cfg_path.read_text()).get("eval", {})
  exclude = list(ev.get("exclude_classes", []))
  if any(not isinstance(c, int) for c in exclude):
    raise UserError(f"{path} predates class names in prediction files and {cfg_path} excludes classes by name "
                     f"({exclude}); re-run the run's evaluation to rewrite it")
  return {"case_level": bool(ev.get("case_level", False)), "exclude_classes": tuple(sorted(exclude)),
          "class_names": ()}


def load_predictions(path) -> dict:
  """A prediction file (local or gs://)."""
  if not epath.Path(path).is_file():
    raise UserError(f"prediction file {path} does not exist")
  with epath.Path(path).open("rb") as fh, np.load(fh, allow_pickle=False) as f:
    missing = {"image_ids", "case_ids", "labels", "probs", "task"} - set(f.files)
    if missing:
      raise ValueError(f"{path} is not a prediction file (missing {sorted(missing)})")
    out = {k: f[k] for k in f.files} | {"task": str(f["task"])}
  if "case_level" in out:
    out.update(case_level=bool(out["case_level"]), exclude_classes=tuple(int(c) for c in out["exclude_classes"]),
               class_names=tuple(str(c) for c in out["class_names"]))
  else:
    out.update(_settings_from_config(path))
  return out


def recorded_replicates(path) -> int | None:
  """eval.num_replicates of the run that wrote a prediction file (its config.json beside it), or None."""
  cfg_path = epath.Path(path).parent / "config.json"
  if not cfg_path.is_file():
    return None
  try:
    value = json.loads(cfg_path.read_text()).get("eval", {}).get("num_replicates")
  except (OSError, ValueError, AttributeError):
    return None
  return int(value) if isinstance(value, (int, float)) and value > 0 else None


def metric_settings(pred: dict) -> dict:
  return {k: pred.get(k, default) for k, default in zip(SETTINGS, ("", False, (), ()))}


def check_same_metric(a: dict, b: dict, name_a="A", name_b="B") -> None:
  """ValueError when two prediction files were scored with different metric settings."""
  sa, sb = metric_settings(a), metric_settings(b)
  diffs = [f"{k}: {sa[k]!r} vs {sb[k]!r}" for k in SETTINGS if sa[k] != sb[k]]
  if diffs:
    raise UserError(f"{name_a} and {name_b} report different metrics ({'; '.join(diffs)}); compare runs "
                     f"evaluated with the same eval settings")


def scored_arrays(pred: dict):
  """(labels, probs) exactly as the run scored them: case-averaged when the run was case-level."""
  labels, probs = np.asarray(pred["labels"]), np.asarray(pred["probs"])
  if pred.get("case_level", False):
    _, labels, probs = metrics_lib.aggregate_by_case(pred["case_ids"], labels, probs)
  return labels, probs


def point_metrics(pred: dict) -> dict:
  """Each metric's value as the run's results.json reports it."""
  labels, probs = scored_arrays(pred)
  return metrics_lib.compute_metrics(labels, probs, pred["task"], tuple(pred.get("exclude_classes", ())))


def align(a: dict, b: dict, name_a="A", name_b="B"):
  """Reorders b to a's image order; errors if the two files do not cover the same test set."""
  if a["task"] != b["task"]:
    raise UserError(f"{name_a} is {a['task']} but {name_b} is {b['task']}; compare runs of one task")
  ids_a, ids_b = a["image_ids"], b["image_ids"]
  if set(ids_a.tolist()) != set(ids_b.tolist()) or len(ids_a) != len(ids_b):
    raise UserError(f"{name_a} and {name_b} are predictions on different test sets "
                     f"({len(ids_a)} vs {len(ids_b)} images, {len(set(ids_a.tolist()) ^ set(ids_b.tolist()))} differ)")
  pos = {k: i for i, k in enumerate(ids_b.tolist())}
  order = np.array([pos[k] for k in ids_a.tolist()])
  b = {k: (v[order] if isinstance(v, np.ndarray) and v.ndim and len(v) == len(order) else v) for k, v in b.items()}
  if not np.array_equal(a["labels"], b["labels"], equal_nan=a["labels"].dtype.kind == "f"):
    raise UserError(f"{name_a} and {name_b} disagree on the labels of the same images; compare runs on one "
                    f"test set with one label policy")
  if not np.array_equal(a["case_ids"], b["case_ids"]):
    raise UserError(f"{name_a} and {name_b} disagree on the case ids of the same images; compare runs on one "
                    f"test set")
  return a, b


def compare(a: dict, b: dict, num_replicates=1000, seed=0, groups=None, metrics=None) -> dict:
  """name -> {"a", "b" (each model's value, as its results.json reports it), "difference" (a - b),
  "ci_low", "ci_high", "excludes_zero"}. `groups` (one per image of a) resamples groups of
  images; case-level files resample their cases and ignore it. `metrics` (names) bootstraps only
  those (each one's interval is the same as in a call for all: every metric draws the same
  replicates from `seed`)."""
  check_same_metric(a, b)
  value_a, value_b = point_metrics(a), point_metrics(b)  # each in its own file's order, as its run did
  a, b = align(a, b)
  if a.get("case_level", False):
    (labels, probs_a), (_, probs_b), groups = scored_arrays(a), scored_arrays(b), None
  else:
    labels, probs_a, probs_b = a["labels"], a["probs"], b["probs"]
  fns = metrics_lib.metric_functions(a["task"], probs_a.shape[1], tuple(a.get("exclude_classes", ())))
  if metrics is not None:
    unknown = sorted(set(metrics) - set(fns))
    if unknown:
      raise ValueError(f"metrics {unknown} are not metrics of this {a['task']} file (it has {sorted(fns)})")
    fns = {k: fns[k] for k in metrics}
  out = {}
  for name, fn in fns.items():
    r = bootstrap.paired_bootstrap_difference(labels, probs_a, probs_b, fn, num_replicates=num_replicates,
                                              seed=seed, groups=groups)
    out[name] = {"a": value_a[name], "b": value_b[name], **r, "difference": value_a[name] - value_b[name]}
  return out
