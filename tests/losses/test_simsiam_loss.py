"""SimSiam's symmetric negative-cosine loss (Chen & He 2021, Eq. 1-4) against a NumPy restatement."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax.losses import negative_cosine, simsiam_loss


def reference_simsiam(p_a, p_b, z_a, z_b):
  """Float64, one example at a time: 1/2 D(p_a, z_b) + 1/2 D(p_b, z_a), D = -p.z / (|p| |z|)."""
  def d(p, z):
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    return -np.dot(p, z) / (np.linalg.norm(p) * np.linalg.norm(z))
  return np.mean([0.5 * d(p_a[i], z_b[i]) + 0.5 * d(p_b[i], z_a[i]) for i in range(len(p_a))])


def _inputs(n=6, d=5, seed=1):
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=(n, 1))).astype(np.float32) for _ in range(4)]


def test_matches_the_numpy_restatement():
  p_a, p_b, z_a, z_b = _inputs()
  np.testing.assert_allclose(simsiam_loss(p_a, p_b, z_a, z_b), reference_simsiam(p_a, p_b, z_a, z_b), rtol=1e-5)


def test_hand_checked_values():
  x = np.array([[2.0, 0.0], [0.0, 0.5]], np.float32)
  assert float(simsiam_loss(x, x, 3 * x, x)) == pytest.approx(-1.0, abs=1e-6)    # identical directions: the minimum
  assert float(simsiam_loss(x, x, -x, -x)) == pytest.approx(1.0, abs=1e-6)       # opposite ones: the maximum
  assert float(simsiam_loss(x, x, x[::-1], x[::-1])) == pytest.approx(0.0, abs=1e-6)  # orthogonal
  np.testing.assert_allclose(negative_cosine(x, x), [-1.0, -1.0], atol=1e-6)


def test_no_gradient_flows_through_the_stop_gradient_branch():
  p_a, p_b, z_a, z_b = map(jnp.asarray, _inputs())
  g_p, g_z = jax.grad(lambda p, z: simsiam_loss(p, p_b, z, z_b), argnums=(0, 1))(p_a, z_a)
  assert np.abs(np.asarray(g_p)).max() > 1e-4
  np.testing.assert_array_equal(np.asarray(g_z), 0.0)
  p0, eps, (i, j) = np.asarray(p_a, np.float64), 1e-4, (1, 2)
  plus, minus = p0.copy(), p0.copy()
  plus[i, j] += eps
  minus[i, j] -= eps
  fd = (reference_simsiam(plus, p_b, z_a, z_b) - reference_simsiam(minus, p_b, z_a, z_b)) / (2 * eps)
  np.testing.assert_allclose(np.asarray(g_p)[i, j], fd, rtol=1e-3, atol=1e-6)


def test_refuses_mismatched_shapes():
  with pytest.raises(ValueError, match="one shape"):
    negative_cosine(np.zeros((3, 4)), np.zeros((2, 4)))
