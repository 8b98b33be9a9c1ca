"""Supervised losses against NumPy formulas."""
import jax.numpy as jnp
import numpy as np

from medssl_jax.losses import masked_sigmoid_cross_entropy, softmax_cross_entropy


def test_softmax_cross_entropy_matches_numpy():
  logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
  labels = np.array([0, 2])
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  expected = -np.mean(np.log(p[np.arange(2), labels]))
  np.testing.assert_allclose(float(softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))), expected, rtol=1e-6)


def test_masked_sigmoid_ignores_nan_labels():
  logits = np.array([[1.0, -2.0], [0.5, 3.0]])
  labels = np.array([[1.0, np.nan], [0.0, 1.0]])
  sig = 1 / (1 + np.exp(-logits))
  terms = [-np.log(sig[0, 0]), -np.log(1 - sig[1, 0]), -np.log(sig[1, 1])]
  got = masked_sigmoid_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(float(got), np.mean(terms), rtol=1e-6)
  # All labels missing: zero loss, not NaN.
  assert float(masked_sigmoid_cross_entropy(jnp.asarray(logits), jnp.full((2, 2), jnp.nan))) == 0.0


def test_weighted_softmax_cross_entropy_leaves_zero_weight_rows_out():
  rng = np.random.default_rng(1)
  logits, labels = rng.normal(size=(6, 3)).astype(np.float32), np.array([0, 2, 1, 1, 0, 2])
  weights = np.array([1, 1, 1, 1, 0, 0], np.float32)
  got = float(softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights)))
  want = float(softmax_cross_entropy(jnp.asarray(logits[:4]), jnp.asarray(labels[:4])))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # Hand-computed on two rows: -log softmax(z)[y], weighted 1 and 3.
  z = np.array([[0.0, 1.0], [2.0, 0.0]], np.float32)
  ce = [np.log(1 + np.e), np.log(1 + np.exp(2.0))]  # -log p(class 0), -log p(class 1)
  got = float(softmax_cross_entropy(jnp.asarray(z), jnp.asarray([0, 1]), jnp.asarray([1.0, 3.0])))
  np.testing.assert_allclose(got, (ce[0] + 3 * ce[1]) / 4, rtol=1e-6)
