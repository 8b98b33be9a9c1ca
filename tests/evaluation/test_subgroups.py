"""Subgroup metrics and the multi-label mean over labels with enough test positives, against sklearn."""
import numpy as np
import pytest
from sklearn import metrics as skm

from configs.base import get_base_config
from input_pipeline.sources import Source
from medssl_jax.runs import classify
from medssl_jax.evaluation import compare, metrics, subgroups


def _multilabel(n=60, labels=4, seed=0):
  rng = np.random.default_rng(seed)
  y = (rng.random((n, labels)) < 0.4).astype(np.float32)
  y[:, 3] = 0.0
  y[:2, 3] = 1.0  # label 3: only two positives
  p = np.clip(0.3 * y + 0.7 * rng.random((n, labels)), 0, 1).astype(np.float32)
  return y, p


def test_multilabel_mean_leaves_out_excluded_labels():
  y, p = _multilabel()
  every = np.mean([skm.roc_auc_score(y[:, j], p[:, j]) for j in range(4)])
  kept = np.mean([skm.roc_auc_score(y[:, j], p[:, j]) for j in range(3)])
  kept_ap = np.mean([skm.average_precision_score(y[:, j], p[:, j]) for j in range(3)])
  assert metrics.compute_metrics(y, p, "multilabel")["mean_auc"] == pytest.approx(every)
  got = metrics.compute_metrics(y, p, "multilabel", exclude_classes=(3,))
  assert got["mean_auc"] == pytest.approx(kept) and got["mean_auprc"] == pytest.approx(kept_ap)
  assert got["auc_3"] == pytest.approx(skm.roc_auc_score(y[:, 3], p[:, 3]))  # still reported on its own
  assert kept != pytest.approx(every)


def test_min_positives_picks_labels_from_the_test_split_and_compare_agrees(tmp_path):
  y, p = _multilabel()
  c = get_base_config()
  c.finetune.task, c.eval.min_positives = "multilabel", 3
  src = Source("t", y, np.arange(len(y)), np.arange(len(y)), 4, images=np.zeros((len(y), 2, 2, 1), np.uint8),
               class_names=("a", "b", "c", "rare"))
  assert classify.sparse_labels(c, src) == (3,)
  summary = classify.label_summary(c, src, (3,))
  assert summary["mean_over_labels"] == ["a", "b", "c"] and summary["test_positives"]["rare"] == 2
  assert summary["test_positives"]["a"] == int(y[:, 0].sum())
  c.eval.min_positives = 0
  assert classify.sparse_labels(c, src) == ()
  # A prediction file records the left-out labels; compare's value is the run's mean over the rest.
  path = str(tmp_path / "pred.npz")
  compare.save_predictions(path, image_ids=np.arange(len(y)), case_ids=np.arange(len(y)), labels=y, probs=p,
                           task="multilabel", exclude_classes=(3,))
  other = str(tmp_path / "other.npz")
  compare.save_predictions(other, image_ids=np.arange(len(y)), case_ids=np.arange(len(y)), labels=y,
                           probs=np.full_like(p, 0.5), task="multilabel", exclude_classes=(3,))
  r = compare.compare(compare.load_predictions(path), compare.load_predictions(other), num_replicates=20)
  kept = np.mean([skm.roc_auc_score(y[:, j], p[:, j]) for j in range(3)])
  assert r["mean_auc"]["a"] == pytest.approx(kept) and r["mean_auc"]["b"] == pytest.approx(0.5)


def test_subgroup_metrics_match_sklearn_on_each_part():
  rng = np.random.default_rng(1)
  n = 80
  y = rng.integers(0, 2, n)
  p1 = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
  probs = np.stack([1 - p1, p1], 1)
  view = np.where(rng.random(n) < 0.6, "PA", "AP")
  sex = np.where(np.arange(n) % 2, "M", "F")
  out = subgroups.subgroup_metrics(y, probs, "multiclass", {"view": view, "sex": sex}, num_replicates=50, seed=0)
  assert set(out) == {"view", "sex"} and set(out["view"]) == {"AP", "PA"} and set(out["sex"]) == {"F", "M"}
  for col, values in (("view", view), ("sex", sex)):
    for v, entry in out[col].items():
      m = values == v
      assert entry["num_images"] == int(m.sum()) == entry["num_cases"]
      assert entry["auc"]["value"] == pytest.approx(skm.roc_auc_score(y[m], p1[m]))
      assert entry["top1"]["value"] == pytest.approx(np.mean((p1[m] > 0.5) == y[m]))
      assert entry["auc"]["ci_low"] <= entry["auc"]["value"] <= entry["auc"]["ci_high"]
  # Deterministic for a seed.
  again = subgroups.subgroup_metrics(y, probs, "multiclass", {"view": view}, num_replicates=50, seed=0)
  assert again["view"] == out["view"]


def test_subgroup_metrics_multilabel_case_level_and_exclusions():
  y, p = _multilabel(n=40)
  cases = np.repeat(np.arange(20), 2).astype(str)
  y[1::2] = y[::2]  # a case's two images share labels
  group = np.where(np.arange(40) < 24, "PA", "AP")
  out = subgroups.subgroup_metrics(y, p, "multilabel", {"view": group}, case_ids=cases, case_level=True,
                                   exclude_classes=(3,), num_replicates=20)
  m = group == "PA"
  ids, yc, pc = metrics.aggregate_by_case(cases[m], y[m], p[m])
  expect = np.nanmean([skm.roc_auc_score(yc[:, j], pc[:, j]) for j in range(3) if len(np.unique(yc[:, j])) == 2])
  assert out["view"]["PA"]["num_cases"] == len(ids) == 12 and out["view"]["PA"]["num_images"] == 24
  assert out["view"]["PA"]["mean_auc"]["value"] == pytest.approx(expect)
  assert out["view"]["PA"]["positives"] == [int(v) for v in yc.sum(0)]
  with pytest.raises(ValueError, match="values for"):
    subgroups.subgroup_metrics(y, p, "multilabel", {"view": group[:5]})
