"""The VICReg loss (Bardes et al. 2022, Eq. 1-6 / Algorithm 1) against a NumPy restatement, hand-checked
cases, and the global batch: sharded == unsharded under jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from medssl_jax.losses import covariance_term, variance_term, vicreg_loss, vicreg_terms


def reference_vicreg(z_a, z_b, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4):
  """Float64, feature by feature, from the paper's definitions."""
  a, b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
  n, d = a.shape
  s = np.sum((a - b) ** 2) / (n * d)

  def v(z):
    return sum(max(0.0, gamma - np.sqrt(np.sum((z[:, j] - z[:, j].mean()) ** 2) / (n - 1) + eps)) for j in range(d)) / d

  def c(z):
    zc = z - z.mean(0)
    return sum((zc[:, i] @ zc[:, j] / (n - 1)) ** 2 for i in range(d) for j in range(d) if i != j) / d

  return lam * s + mu * (v(a) + v(b)) + nu * (c(a) + c(b))


def _inputs(n=8, d=4, seed=3):
  rng = np.random.default_rng(seed)
  # feature scales on both sides of gamma = 1, so the hinge is active for some features only
  return [(rng.normal(size=(n, d)) * np.array([0.2, 0.7, 1.5, 3.0]) + 1).astype(np.float32) for _ in range(2)]


def test_matches_the_numpy_restatement():
  z_a, z_b = _inputs()
  np.testing.assert_allclose(vicreg_loss(z_a, z_b), reference_vicreg(z_a, z_b), rtol=1e-5)
  np.testing.assert_allclose(vicreg_loss(z_a, z_b, sim_weight=1.0, var_weight=2.0, cov_weight=3.0),
                             reference_vicreg(z_a, z_b, 1.0, 2.0, 3.0), rtol=1e-5)


def test_hand_checked_values():
  # Identical views of uncorrelated features with std >= 1: all three terms 0.
  h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], np.float32)[:, 1:]
  z = np.concatenate([h, h]) * 2.0 + 5.0   # unbiased std 2 * sqrt(8/7) > 1
  s, v, c = vicreg_terms(z, z)
  assert (float(s), float(v), float(c)) == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)
  # A collapsed embedding (constant): variance hinge 1 - sqrt(eps) per view, no covariance.
  flat = np.ones((8, 3), np.float32)
  assert float(variance_term(flat)) == pytest.approx(1 - 1e-2, abs=1e-6)
  assert float(covariance_term(flat)) == pytest.approx(0.0, abs=1e-9)
  # Two equal features of variance 1 (n = 8, unbiased): C_01 = C_10 = 1, c = 2 / d = 1.
  x = np.concatenate([h[:, :1], h[:, :1]]) * np.sqrt(7 / 8)
  assert float(covariance_term(np.repeat(x, 2, axis=1))) == pytest.approx(1.0, abs=1e-5)
  # Views differing by 1 in every entry: invariance 1.
  assert float(vicreg_terms(z, z + 1)[0]) == pytest.approx(1.0, abs=1e-6)


def test_sharded_batch_equals_unsharded():
  z_a, z_b = _inputs(n=16)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  shard = NamedSharding(mesh, P("data"))
  sharded = jax.jit(vicreg_loss)(jax.device_put(z_a, shard), jax.device_put(z_b, shard))
  np.testing.assert_allclose(sharded, reference_vicreg(z_a, z_b), rtol=1e-5)
  per_shard = np.mean([reference_vicreg(z_a[i:i + 2], z_b[i:i + 2]) for i in range(0, 16, 2)])
  assert abs(float(sharded) - per_shard) > 1e-2   # per-device statistics would differ: the test can fail


def test_gradient_matches_finite_differences():
  z_a, z_b = map(jnp.asarray, _inputs())
  g = jax.grad(lambda a: vicreg_loss(a, z_b))(z_a)
  a0, eps, (i, j) = np.asarray(z_a, np.float64), 1e-4, (5, 1)
  plus, minus = a0.copy(), a0.copy()
  plus[i, j] += eps
  minus[i, j] -= eps
  fd = (reference_vicreg(plus, z_b) - reference_vicreg(minus, z_b)) / (2 * eps)
  np.testing.assert_allclose(np.asarray(g)[i, j], fd, rtol=2e-3, atol=1e-5)


def test_refuses_bad_shapes():
  with pytest.raises(ValueError, match="one shape"):
    vicreg_terms(np.zeros((3, 4)), np.zeros((3, 5)))
  with pytest.raises(ValueError, match="at least 2"):
    vicreg_terms(np.zeros((1, 4)), np.zeros((1, 4)))
