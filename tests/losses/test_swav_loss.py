"""SwAV's Sinkhorn-Knopp codes and swapped-prediction loss against a NumPy restatement of the paper
(Caron et al. 2020, Sec. 3.1 and App. A.1, float64), a hand-computed case, and their properties:
codes sum to 1 per example and spread equally over the prototypes, carry no gradient; the loss with
local views averages the other views' predictions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax.losses import sinkhorn_codes, swav_loss


def np_sinkhorn(scores, eps, iterations):
  """The paper's Algorithm (App. A.1) as written, in float64: Q = exp(s/eps)^T, normalised; rows to
  1/K, columns to 1/B, `iterations` times; then times B."""
  q = np.exp(np.asarray(scores, np.float64) / eps).T
  q /= q.sum()
  k, b = q.shape
  for _ in range(iterations):
    q /= q.sum(axis=1, keepdims=True)
    q /= k
    q /= q.sum(axis=0, keepdims=True)
    q /= b
  return (q * b).T


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def np_swav_loss(scores, codes, tau):
  total = 0.0
  for i, q in enumerate(codes):
    sub = [-np.mean(np.sum(q * np_log_softmax(np.asarray(s) / tau), axis=1)) for v, s in enumerate(scores) if v != i]
    total += np.mean(sub)
  return total / len(codes)


def _unit_scores(rng, n, k, d=8):
  z = rng.normal(size=(n, d))
  c = rng.normal(size=(d, k))
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  c /= np.linalg.norm(c, axis=0, keepdims=True)
  return (z @ c).astype(np.float32)


@pytest.mark.parametrize("eps,iterations", [(0.05, 3), (0.1, 1), (0.5, 10)])
def test_sinkhorn_matches_the_papers_algorithm(eps, iterations):
  s = _unit_scores(np.random.default_rng(0), 24, 10)
  got = np.asarray(sinkhorn_codes(jnp.asarray(s), eps, iterations))
  np.testing.assert_allclose(got, np_sinkhorn(s, eps, iterations), rtol=2e-4, atol=1e-7)
  np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)  # each example's codes sum to 1


def test_sinkhorn_spreads_the_examples_equally_over_the_prototypes():
  # All examples nearest prototype 0: the softmax alone would put them all there; the codes, after
  # enough iterations, give each prototype B/K of the mass.
  rng = np.random.default_rng(1)
  s = rng.uniform(-0.2, 0.2, size=(32, 4)).astype(np.float32)
  s[:, 0] += 0.5
  codes = np.asarray(sinkhorn_codes(jnp.asarray(s), 0.05, 50))
  np.testing.assert_allclose(codes.sum(axis=0), 32 / 4, rtol=1e-3)
  softmax = np.exp(s / 0.05) / np.exp(s / 0.05).sum(axis=1, keepdims=True)
  assert softmax.sum(axis=0)[0] > 0.9 * 32  # what equipartition corrects


def test_sinkhorn_is_shift_invariant_and_finite_at_small_epsilon():
  s = _unit_scores(np.random.default_rng(2), 16, 6)
  np.testing.assert_allclose(np.asarray(sinkhorn_codes(jnp.asarray(s + 0.3), 0.05, 3)),
                             np.asarray(sinkhorn_codes(jnp.asarray(s), 0.05, 3)), rtol=1e-4, atol=1e-7)
  tiny = np.asarray(sinkhorn_codes(jnp.asarray(s), 0.002, 3))  # exp(s / 0.002) under- and overflows in float32
  assert np.isfinite(tiny).all()
  np.testing.assert_allclose(tiny.sum(axis=1), 1.0, rtol=1e-5)


def test_two_view_loss_by_hand():
  # N = 1, K = 2, tau = 1: codes q_a = (1, 0), q_b = (0.5, 0.5); s_a = (0, 0), s_b = (log 3, 0).
  # l(z_b, q_a) = -log(3/4); l(z_a, q_b) = -(0.5 log 0.5 + 0.5 log 0.5) = log 2.
  s_a, s_b = jnp.array([[0.0, 0.0]]), jnp.array([[np.log(3.0), 0.0]])
  q_a, q_b = jnp.array([[1.0, 0.0]]), jnp.array([[0.5, 0.5]])
  want = 0.5 * (-np.log(0.75) + np.log(2.0))
  np.testing.assert_allclose(float(swav_loss([s_a, s_b], [q_a, q_b], 1.0)), want, rtol=1e-6)


@pytest.mark.parametrize("num_local", [0, 3])
def test_loss_matches_the_numpy_restatement(num_local):
  rng = np.random.default_rng(3)
  scores = [_unit_scores(rng, 8, 12) for _ in range(2 + num_local)]
  codes = [np_sinkhorn(s, 0.05, 3).astype(np.float32) for s in scores[:2]]
  got = float(swav_loss([jnp.asarray(s) for s in scores], [jnp.asarray(q) for q in codes], 0.1))
  np.testing.assert_allclose(got, np_swav_loss(scores, codes, 0.1), rtol=1e-5)


def test_the_codes_carry_no_gradient():
  rng = np.random.default_rng(4)
  s_a, s_b = jnp.asarray(_unit_scores(rng, 8, 5)), jnp.asarray(_unit_scores(rng, 8, 5))

  def loss(a, b):
    return swav_loss([a, b], [sinkhorn_codes(a, 0.05, 3), sinkhorn_codes(b, 0.05, 3)], 0.1)

  g_a = jax.grad(loss)(s_a, s_b)
  # Only view a's prediction term depends on s_a: -1/2 mean_n sum_k q_b log softmax(s_a / tau).
  q_b = np_sinkhorn(np.asarray(s_b), 0.05, 3)
  p_a = np.exp(np_log_softmax(np.asarray(s_a) / 0.1))
  want = 0.5 * (p_a - q_b) / 0.1 / 8
  np.testing.assert_allclose(np.asarray(g_a), want, rtol=1e-3, atol=1e-6)


def test_bad_shapes_are_refused():
  a = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match="one shape"):
    swav_loss([a, jnp.zeros((4, 2))], [a], 0.1)
  with pytest.raises(ValueError, match="at least 2 views"):
    swav_loss([a], [a], 0.1)
  with pytest.raises(ValueError, match="prototypes"):
    sinkhorn_codes(jnp.zeros(3), 0.05, 3)
