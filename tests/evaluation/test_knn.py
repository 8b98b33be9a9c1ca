"""The weighted kNN monitor: equal to sklearn's KNeighborsClassifier with cosine distance and the
DINO weights exp(s / T) (its predict_proba: the weighted votes over their sum), to a NumPy
restatement for multi-label targets with unknown entries, and the same sharded as on one device."""
import jax
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from medssl_jax.evaluation import knn
from medssl_jax.training.inference import batched_apply
from medssl_jax.training.sharding import make_mesh


def _data(seed=0, n=120, q=37, d=12, classes=4):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(classes, d))
  y = rng.integers(0, classes, n)
  x = centres[y] + 0.8 * rng.normal(size=(n, d))
  yq = rng.integers(0, classes, q)
  xq = centres[yq] + 0.8 * rng.normal(size=(q, d))
  return x.astype(np.float32), y, xq.astype(np.float32), yq


@pytest.mark.parametrize("k,temperature", [(20, 0.07), (5, 0.5), (1, 0.1)])
def test_multiclass_scores_equal_sklearns_weighted_knn(k, temperature):
  x, y, xq, _ = _data()
  ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                             weights=lambda dist: np.exp((1.0 - dist) / temperature)).fit(x, y)
  targets, known = knn.one_hot_targets(y, 4)
  ours = np.asarray(knn.knn_scores(x, targets, known, xq, k=k, temperature=temperature))
  np.testing.assert_allclose(ours, ref.predict_proba(xq), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(ours.argmax(1), ref.predict(xq))


def test_k_above_the_bank_uses_the_whole_bank():
  x, y, xq, _ = _data(n=7)
  targets, known = knn.one_hot_targets(y, 4)
  capped = knn.knn_scores(x, targets, known, xq, k=50, temperature=0.1)
  np.testing.assert_allclose(capped, knn.knn_scores(x, targets, known, xq, k=7, temperature=0.1), rtol=1e-6)


def test_multilabel_scores_are_the_weighted_share_of_known_positives():
  rng = np.random.default_rng(1)
  x, xq = rng.normal(size=(50, 6)).astype(np.float32), rng.normal(size=(9, 6)).astype(np.float32)
  labels = rng.integers(0, 2, (50, 3)).astype(np.float32)
  labels[rng.random((50, 3)) < 0.3] = np.nan
  k, t = 10, 0.2
  targets, known = knn.multilabel_targets(labels)
  ours = np.asarray(knn.knn_scores(x, targets, known, xq, k=k, temperature=t))
  xn, qn = x / np.linalg.norm(x, axis=1, keepdims=True), xq / np.linalg.norm(xq, axis=1, keepdims=True)
  for i in range(len(xq)):
    sim = xn @ qn[i]
    nn = np.argsort(-sim)[:k]
    w = np.exp(sim[nn] / t)
    for j in range(3):
      ok = ~np.isnan(labels[nn, j])
      np.testing.assert_allclose(ours[i, j], np.sum(w[ok] * labels[nn, j][ok]) / np.sum(w[ok]), rtol=1e-4)


def test_sharded_queries_equal_one_device():
  x, y, xq, _ = _data(q=40)
  targets, known = knn.one_hot_targets(y, 4)
  fn = lambda q: knn.knn_scores(x, targets, known, q, k=20, temperature=0.07)  # noqa: E731
  eight = batched_apply(fn, xq, make_mesh(jax.devices()), 16)
  one = batched_apply(fn, xq, make_mesh(jax.devices()[:1]), 16)
  np.testing.assert_allclose(eight, one, rtol=1e-6)
  np.testing.assert_allclose(eight, np.asarray(fn(xq)), rtol=1e-6)
