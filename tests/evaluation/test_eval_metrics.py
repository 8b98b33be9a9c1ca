"""Metrics against sklearn and hand-computed cases; bootstrap intervals; paired comparisons."""
import json

import numpy as np
import pytest
from sklearn import metrics as skm

from medssl_jax import errors
from medssl_jax.commands import common
from medssl_jax.commands import compare as compare_command
from medssl_jax.evaluation import bootstrap, compare, metrics


def _mc(n=200, k=4, seed=0, signal=2.0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, k, n)
  logits = rng.normal(size=(n, k))
  logits[np.arange(n), y] += signal
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  return y, p


def test_multiclass_metrics_match_sklearn():
  y, p = _mc()
  assert metrics.top_k_accuracy(y, p, 1) == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
  assert metrics.top_k_accuracy(y, p, 3) == pytest.approx(skm.top_k_accuracy_score(y, p, k=3))
  assert metrics.auc_ovr(y, p) == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
  assert metrics.top_k_sensitivity(y, p, 1) == pytest.approx(skm.recall_score(y, p.argmax(1), average="macro"))
  assert metrics.cohen_kappa_quadratic(y, p) == pytest.approx(skm.cohen_kappa_score(y, p.argmax(1), weights="quadratic"))
  onehot = np.eye(4)[y]
  assert metrics.auprc(y, p) == pytest.approx(skm.average_precision_score(onehot, p, average="macro"))


def test_hand_computed_cases():
  y = np.array([0, 1, 2, 2])
  p = np.array([[.5, .3, .2], [.1, .2, .7], [.2, .3, .5], [.6, .3, .1]])
  assert metrics.top_k_accuracy(y, p, 1) == 0.5            # rows 0 and 2
  assert metrics.top_k_accuracy(y, p, 2) == 0.75           # + row 1 (1 is 2nd); row 3 has 2 last
  # Sensitivity: class 0 1/1, class 1 0/1, class 2 1/2 -> mean 0.5; without class 0: 0.25.
  assert metrics.top_k_sensitivity(y, p, 1) == 0.5
  assert metrics.top_k_sensitivity(y, p, 1, exclude_classes=(0,)) == 0.25


def test_absent_class_and_ties():
  y = np.array([0, 0, 1, 1])                  # class 2 absent from the test set
  p = np.array([[.6, .2, .2], [.4, .4, .2], [.3, .6, .1], [.2, .7, .1]])
  expected = np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in (0, 1)])
  assert metrics.auc_ovr(y, p) == pytest.approx(expected)
  # A tie in the top score is broken towards the lower class index (stable sort).
  assert metrics.top_k_accuracy(np.array([0]), np.array([[.4, .4, .2]]), 1) == 1.0
  assert np.isnan(metrics.auc_ovr(np.array([1, 1]), p[:2]))


def test_multilabel_ignores_nan():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, (50, 3)).astype(np.float32)
  s = y * 0.5 + rng.random((50, 3))
  y[:5, 1] = np.nan
  aucs = metrics.auc_per_label(y, s)
  keep = ~np.isnan(y[:, 1])
  assert aucs[1] == pytest.approx(skm.roc_auc_score(y[keep, 1], s[keep, 1]))
  assert aucs[0] == pytest.approx(skm.roc_auc_score(y[:, 0], s[:, 0]))
  m = metrics.compute_metrics(y, s, "multilabel")
  assert m["mean_auc"] == pytest.approx(aucs.mean()) and m["auc_2"] == pytest.approx(aucs[2])


def test_bad_inputs():
  with pytest.raises(ValueError, match="label 3 outside the class range"):
    metrics.top_k_accuracy(np.array([0, 3]), np.full((2, 3), 1 / 3), 1)
  with pytest.raises(ValueError, match="NaN"):
    metrics.auc_ovr(np.array([0, 1]), np.array([[np.nan, 1], [0, 1]]))
  with pytest.raises(ValueError, match="task="):
    metrics.compute_metrics(np.array([0]), np.ones((1, 2)), "regression")


def test_case_aggregation():
  ids, y, p = metrics.aggregate_by_case(np.array(["b", "a", "b"]), np.array([1, 0, 1]),
                                        np.array([[.2, .8], [.9, .1], [.6, .4]]))
  assert ids.tolist() == ["a", "b"] and y.tolist() == [0, 1]
  np.testing.assert_allclose(p, [[.9, .1], [.4, .6]])
  with pytest.raises(ValueError, match="case b"):
    metrics.aggregate_by_case(np.array(["b", "b"]), np.array([0, 1]), np.ones((2, 2)) / 2)


def test_bootstrap_is_reproducible_and_sensible():
  y, p = _mc(n=300)
  top1 = lambda a, b: metrics.top_k_accuracy(a, b, 1)
  r1 = bootstrap.bootstrap_ci(y, p, top1, num_replicates=300, seed=5)
  r2 = bootstrap.bootstrap_ci(y, p, top1, num_replicates=300, seed=5)
  assert r1 == r2
  assert r1["ci_low"] < r1["value"] < r1["ci_high"]
  # Normal approximation of a proportion's 95% interval: half-width ~ 1.96 sqrt(p(1-p)/n).
  half = 1.96 * np.sqrt(r1["value"] * (1 - r1["value"]) / 300)
  assert (r1["ci_high"] - r1["ci_low"]) / 2 == pytest.approx(half, rel=0.25)
  big = bootstrap.bootstrap_ci(*_mc(n=3000), top1, num_replicates=200, seed=5)
  assert big["ci_high"] - big["ci_low"] < r1["ci_high"] - r1["ci_low"]
  all_metrics = bootstrap.bootstrap_all(y, p, "multiclass", num_replicates=100)
  assert set(all_metrics) >= {"top1", "top3", "auc", "auprc", "kappa", "top1_sensitivity"}
  assert all_metrics["top1"]["value"] == pytest.approx(r1["value"])


def test_case_bootstrap_resamples_whole_cases():
  y = np.array([0, 0, 1, 1])
  p = np.array([[.9, .1], [.9, .1], [.1, .9], [.8, .2]])
  seen = set()
  for idx in bootstrap._indices(4, 50, 0, groups=np.array(["a", "a", "b", "b"])):
    seen.add(tuple(sorted(idx.tolist())))
  assert seen <= {(0, 0, 1, 1), (0, 1, 2, 3), (2, 2, 3, 3)}
  del y, p


def test_paired_difference():
  y, good = _mc(n=400, signal=3.0)
  _, bad = _mc(n=400, signal=0.0, seed=1)
  top1 = lambda a, b: metrics.top_k_accuracy(a, b, 1)
  same = bootstrap.paired_bootstrap_difference(y, good, good, top1, num_replicates=100)
  assert same["difference"] == same["ci_low"] == same["ci_high"] == 0.0 and not same["excludes_zero"]
  diff = bootstrap.paired_bootstrap_difference(y, good, bad, top1, num_replicates=200)
  assert diff["difference"] > 0.3 and diff["excludes_zero"]


def test_compare_command(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(errors, "arm_exit_watchdog", lambda code: None)  # never in the test process
  y, good = _mc(n=120, signal=3.0)
  _, bad = _mc(n=120, signal=0.0, seed=1)
  ids = np.array([f"img{i}" for i in range(120)])
  compare.save_predictions(tmp_path / "a.npz", image_ids=ids, case_ids=ids, labels=y, probs=good, task="multiclass")
  order = np.random.default_rng(0).permutation(120)   # same test set, other order
  compare.save_predictions(tmp_path / "b.npz", image_ids=ids[order], case_ids=ids[order], labels=y[order],
                           probs=bad[order], task="multiclass")
  out = tmp_path / "diff.json"
  assert common.call(compare_command.cli, ["medssl-jax compare", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
                                           "--num_replicates", "100", "--out", str(out)]) == 0
  result = json.loads(out.read_text())["metrics"]
  assert result["top1"]["excludes_zero"] and result["top1"]["difference"] > 0.3
  compare.save_predictions(tmp_path / "c.npz", image_ids=ids[:60], case_ids=ids[:60], labels=y[:60],
                           probs=bad[:60], task="multiclass")
  assert common.call(compare_command.cli, ["medssl-jax compare", str(tmp_path / "a.npz"), str(tmp_path / "c.npz")]) == 2
  assert "different test sets" in capsys.readouterr().err


def test_compare_takes_the_replicate_count_the_runs_recorded(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(errors, "arm_exit_watchdog", lambda code: None)
  y, good = _mc(n=80, signal=3.0)
  _, bad = _mc(n=80, signal=0.0, seed=1)
  ids = np.array([f"img{i}" for i in range(80)])
  paths = []
  for name, probs, reps in (("a", good, 50), ("b", bad, 70)):
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(json.dumps({"eval": {"num_replicates": reps}}))
    paths.append(str(tmp_path / name / "predictions_test.npz"))
    compare.save_predictions(paths[-1], image_ids=ids, case_ids=ids, labels=y, probs=probs, task="multiclass")
  out = tmp_path / "diff.json"
  assert common.call(compare_command.cli, ["medssl-jax compare", *paths, f"--out={out}"]) == 0
  saved = json.loads(out.read_text())
  assert saved["num_replicates"] == 70  # the larger of the two runs' counts
  want = compare.compare(compare.load_predictions(paths[0]), compare.load_predictions(paths[1]), 70, 0)
  assert saved["metrics"]["top1"]["ci_low"] == pytest.approx(want["top1"]["ci_low"])
  assert "70 paired bootstrap replicates (as the runs recorded)" in capsys.readouterr().out
  assert common.call(compare_command.cli, ["medssl-jax compare", *paths, "--num_replicates=40", f"--out={out}"]) == 0
  assert json.loads(out.read_text())["num_replicates"] == 40  # asked for: used


def test_binary_auc_is_sklearns_roc_auc_ties_included():
  """The rank-statistic AUC (what every AUC here uses) equals sklearn's roc_auc_score: random
  sizes, class balances and rounded scores (many ties), and two hand-computed cases."""
  rng = np.random.default_rng(0)
  for _ in range(200):
    n = int(rng.integers(2, 400))
    y = rng.random(n) < rng.uniform(0.05, 0.95)
    y[:2] = (True, False)
    s = np.round(rng.random(n), int(rng.integers(1, 4)))
    assert abs(metrics.binary_auc(y, s) - skm.roc_auc_score(y, s)) < 1e-12
  # 3 of the 4 positive-negative pairs ordered right (0.35 < 0.4 is the wrong one): 0.75.
  assert metrics.binary_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
  assert metrics.binary_auc([0, 1, 1], [0.5, 0.5, 0.9]) == 0.75  # a tie counts 1/2
  with pytest.raises(ValueError, match="both a positive and a negative"):
    metrics.binary_auc([1, 1], [0.2, 0.3])


def test_log_loss_is_sklearns_and_leaves_missing_labels_out():
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(4), size=50)
  y = rng.integers(0, 4, size=50)
  assert metrics.log_loss(y, probs, "multiclass") == pytest.approx(skm.log_loss(y, probs, labels=range(4)), rel=1e-9)
  p = rng.uniform(0.01, 0.99, size=(30, 3))
  ym = (rng.random((30, 3)) < 0.4).astype(np.float32)
  ym[::4, 1] = np.nan
  present = ~np.isnan(ym)
  want = np.mean([skm.log_loss([ym[i, j]], [p[i, j]], labels=[0, 1]) for i, j in zip(*np.nonzero(present))])
  assert metrics.log_loss(ym, p, "multilabel") == pytest.approx(want, rel=1e-9)
  assert metrics.log_loss(np.array([0]), np.array([[1.0, 0.0]]), "multiclass") == pytest.approx(1e-7, rel=1e-3)  # clipped: finite
