"""The monitor's linear head: its full-batch Adam fit from zero reaches the optimum sklearn's
unregularised logistic regression finds on the same standardised features (multi-class, and per
label with unknown entries left out), deterministically, and the same with the rows sharded."""
import jax
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from medssl_jax.evaluation import linear_head
from medssl_jax.training.inference import shard_host_array
from medssl_jax.training.sharding import make_mesh


def _overlapping(seed=0, n=400, d=5, classes=3):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n)
  x = rng.normal(size=(classes, d))[y] * 0.7 + rng.normal(size=(n, d)) * 3.0 + 5.0
  return x.astype(np.float32), y


def test_multiclass_fit_reaches_sklearns_optimum():
  x, y = _overlapping()
  head = linear_head.fit(x, y.astype(np.int32), num_outputs=3, multilabel=False, steps=2000, lr=0.01)
  ours = np.asarray(linear_head.predict(head, x, multilabel=False))
  scaler = StandardScaler().fit(x)
  ref = LogisticRegression(C=np.inf, max_iter=10000, tol=1e-10).fit(scaler.transform(x), y)
  np.testing.assert_allclose(ours, ref.predict_proba(scaler.transform(x)), atol=1e-3)


def test_multilabel_fit_leaves_unknown_labels_out():
  x, _ = _overlapping(seed=1, d=4)
  rng = np.random.default_rng(2)
  logits = x @ rng.normal(size=(4, 2)) * 0.2
  y = (rng.random(logits.shape) < 1 / (1 + np.exp(-(logits - logits.mean(0))))).astype(np.float32)
  y[rng.random(y.shape) < 0.25] = np.nan
  head = linear_head.fit(x, y, num_outputs=2, multilabel=True, steps=2000, lr=0.01)
  ours = np.asarray(linear_head.predict(head, x, multilabel=True))
  xs = StandardScaler().fit(x).transform(x)  # standardised on all rows, as the head does
  for j in range(2):
    ok = ~np.isnan(y[:, j])
    ref = LogisticRegression(C=np.inf, max_iter=10000, tol=1e-10).fit(xs[ok], y[ok, j])
    np.testing.assert_allclose(ours[:, j], ref.predict_proba(xs)[:, 1], atol=1e-3)


def test_the_fit_is_deterministic_and_sharded_equals_one_device():
  x, y = _overlapping(n=64)
  y = y.astype(np.int32)
  fits = []
  for devices in (jax.devices(), jax.devices()[:1], jax.devices()):
    mesh = make_mesh(devices)
    head = linear_head.fit(shard_host_array(x, mesh), shard_host_array(y, mesh), num_outputs=3, multilabel=False,
                           steps=50, lr=0.05)
    fits.append(jax.device_get(head))
  assert np.abs(fits[0]["w"]).max() > 0  # it moved from zero
  for key in ("w", "b", "mean", "std"):
    np.testing.assert_array_equal(fits[0][key], fits[2][key])
    np.testing.assert_allclose(fits[0][key], fits[1][key], rtol=1e-4, atol=1e-6)
