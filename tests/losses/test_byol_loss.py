"""BYOL's symmetric normalised MSE (Grill et al. 2020, Eq. 2) against a NumPy restatement of the paper."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax.losses import byol_loss, normalized_mse


def reference_byol(p_a, p_b, z_a, z_b):
  """Float64, one example at a time: ||p/||p|| - z/||z||||^2 for both (view, other view) orders."""
  total = 0.0
  for i in range(len(p_a)):
    for p, z in ((p_a[i], z_b[i]), (p_b[i], z_a[i])):
      p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
      total += np.sum((p / np.linalg.norm(p) - z / np.linalg.norm(z)) ** 2)
  return total / len(p_a)


def _inputs(n=6, d=5, seed=0):
  rng = np.random.default_rng(seed)
  # rows of different scales: the loss normalises them itself.
  return [(rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=(n, 1))).astype(np.float32) for _ in range(4)]


def test_matches_the_numpy_restatement():
  p_a, p_b, z_a, z_b = _inputs()
  np.testing.assert_allclose(byol_loss(p_a, p_b, z_a, z_b), reference_byol(p_a, p_b, z_a, z_b), rtol=1e-5)


def test_hand_checked_values():
  x = np.array([[1.0, 0.0], [0.0, 3.0]], np.float32)
  # Identical directions (any scale) give 0; opposite ones 2 - 2(-1) = 4 per term, 8 in all;
  # orthogonal ones 2 per term.
  assert float(byol_loss(x, 2 * x, 5 * x, x)) == pytest.approx(0.0, abs=1e-6)
  assert float(byol_loss(x, x, -x, -x)) == pytest.approx(8.0, abs=1e-6)
  assert float(byol_loss(x, x, x[::-1], x[::-1])) == pytest.approx(4.0, abs=1e-6)
  np.testing.assert_allclose(normalized_mse(x, x[::-1]), [2.0, 2.0], atol=1e-6)


def test_no_gradient_flows_into_the_targets():
  p_a, p_b, z_a, z_b = map(jnp.asarray, _inputs())
  g_p, g_z = jax.grad(lambda p, z: byol_loss(p, p_b, z, z_b), argnums=(0, 1))(p_a, z_a)
  assert np.abs(np.asarray(g_p)).max() > 1e-3
  np.testing.assert_array_equal(np.asarray(g_z), 0.0)
  # and the prediction's gradient is the reference's finite difference.
  ref = lambda p: reference_byol(p, p_b, z_a, z_b)  # noqa: E731
  p0, eps, (i, j) = np.asarray(p_a, np.float64), 1e-4, (2, 3)
  plus, minus = p0.copy(), p0.copy()
  plus[i, j] += eps
  minus[i, j] -= eps
  np.testing.assert_allclose(np.asarray(g_p)[i, j], (ref(plus) - ref(minus)) / (2 * eps), rtol=1e-3, atol=1e-6)


def test_refuses_mismatched_shapes():
  with pytest.raises(ValueError, match="one shape"):
    normalized_mse(np.zeros((3, 4)), np.zeros((3, 5)))
