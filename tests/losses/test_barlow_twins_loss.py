"""The Barlow Twins loss (Zbontar et al. 2021, Eq. 1-2) against a NumPy restatement, a hand-checked case,
and the global batch: sharded == unsharded under jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from medssl_jax.losses import barlow_twins_loss, barlow_twins_terms, cross_correlation


def reference_barlow(z_a, z_b, lambd, eps=1e-5):
  """Float64, element by element: C_ij = sum_n a_ni b_nj / N of standardised features."""
  a, b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
  a = (a - a.mean(0)) / np.sqrt(a.var(0) + eps)
  b = (b - b.mean(0)) / np.sqrt(b.var(0) + eps)
  n, d = a.shape
  loss = 0.0
  for i in range(d):
    for j in range(d):
      c = sum(a[k, i] * b[k, j] for k in range(n)) / n
      loss += (1 - c) ** 2 if i == j else lambd * c ** 2
  return loss


def _inputs(n=8, d=4, seed=2):
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=(1, d)) + 2).astype(np.float32) for _ in range(2)]


def test_matches_the_numpy_restatement():
  z_a, z_b = _inputs()
  for lambd in (5e-3, 1.0):
    np.testing.assert_allclose(barlow_twins_loss(z_a, z_b, lambd=lambd), reference_barlow(z_a, z_b, lambd), rtol=1e-5)


def test_decorrelated_identical_views_give_zero():
  # Rows of a scaled Hadamard matrix without its constant column: zero-mean, unit-variance, uncorrelated.
  h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], np.float32)[:, 1:]
  z = np.concatenate([h, h]) * 3.0 + 7.0  # any scale and shift: the loss standardises
  np.testing.assert_allclose(cross_correlation(z, z, eps=0.0), np.eye(3), atol=1e-6)
  assert float(barlow_twins_loss(z, z, lambd=5e-3, eps=0.0)) == pytest.approx(0.0, abs=1e-10)
  # Perfectly correlated features (all equal): C is all ones, on-diagonal 0, off-diagonal d(d-1) = 6.
  zc = np.repeat(h[:, :1], 3, axis=1)
  loss, on, off = barlow_twins_terms(zc, zc, lambd=0.5, eps=0.0)
  assert (float(on), float(off), float(loss)) == pytest.approx((0.0, 6.0, 3.0), abs=1e-5)


def test_sharded_batch_equals_unsharded():
  z_a, z_b = _inputs(n=16, d=4)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  shard = NamedSharding(mesh, P("data"))
  f = jax.jit(lambda a, b: barlow_twins_loss(a, b, lambd=5e-3))
  sharded = f(jax.device_put(z_a, shard), jax.device_put(z_b, shard))
  np.testing.assert_allclose(sharded, reference_barlow(z_a, z_b, 5e-3), rtol=1e-5)
  # A per-shard normalisation would differ: the test can fail.
  per_shard = np.mean([reference_barlow(z_a[i:i + 2], z_b[i:i + 2], 5e-3) for i in range(0, 16, 2)])
  assert abs(float(sharded) - per_shard) > 1e-2


def test_gradient_matches_finite_differences():
  z_a, z_b = map(jnp.asarray, _inputs())
  g = jax.grad(lambda a: barlow_twins_loss(a, z_b, lambd=5e-3))(z_a)
  a0, eps, (i, j) = np.asarray(z_a, np.float64), 1e-4, (3, 1)
  plus, minus = a0.copy(), a0.copy()
  plus[i, j] += eps
  minus[i, j] -= eps
  fd = (reference_barlow(plus, z_b, 5e-3) - reference_barlow(minus, z_b, 5e-3)) / (2 * eps)
  np.testing.assert_allclose(np.asarray(g)[i, j], fd, rtol=2e-3, atol=1e-5)


def test_refuses_mismatched_shapes():
  with pytest.raises(ValueError, match="one shape"):
    cross_correlation(np.zeros((3, 4)), np.zeros((3, 5)))
