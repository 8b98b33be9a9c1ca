"""InfoNCE with a queue (MoCo, He et al. 2020 Eq. 1) against an independent NumPy implementation."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from medssl_jax.losses import info_nce, info_nce_with_accuracy


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_info_nce(q, k, queue, tau):
  """Float64, one query at a time: -log(exp(q.k/t) / (exp(q.k/t) + sum_j exp(q.n_j/t)))."""
  q, k = _unit(np.asarray(q, np.float64)), _unit(np.asarray(k, np.float64))
  queue = np.asarray(queue, np.float64)
  logits = np.zeros((len(q), 1 + len(queue)))
  losses = []
  for i in range(len(q)):
    pos = np.dot(q[i], k[i]) / tau
    neg = np.array([np.dot(q[i], n) / tau for n in queue])
    logits[i, 0], logits[i, 1:] = pos, neg
    losses.append(-(pos - np.log(np.exp(pos) + np.sum(np.exp(neg)))))
  return np.mean(losses), logits


def reference_grad_q(q, k, queue, tau):
  """Analytic dL/dq: softmax-weighted candidates minus the positive, through the normalisation."""
  q = np.asarray(q, np.float64)
  qn, kn = _unit(q), _unit(np.asarray(k, np.float64))
  grads = np.zeros_like(q)
  for i in range(len(q)):
    cands = np.concatenate([kn[i:i + 1], np.asarray(queue, np.float64)])   # (1+K, D)
    logits = cands @ qn[i] / tau
    p = np.exp(logits - logits.max())
    p /= p.sum()
    d_qn = (p @ cands - kn[i]) / tau / len(q)
    r = np.linalg.norm(q[i])
    grads[i] = (d_qn - qn[i] * np.dot(qn[i], d_qn)) / r
  return grads


def _inputs(n, d, size, seed):
  rng = np.random.default_rng(seed)
  # q and k not normalised (rows of different scales): the loss normalises them itself.
  q = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=(n, 1))
  k = q + 0.5 * rng.normal(size=(n, d))
  queue = _unit(rng.normal(size=(size, d)))
  return q, k, queue


@pytest.mark.parametrize("n,d,size,tau", [(1, 3, 1, 1.0), (4, 8, 16, 0.2), (7, 5, 13, 0.07), (16, 32, 64, 0.5)])
def test_matches_numpy_reference(n, d, size, tau):
  q, k, queue = _inputs(n, d, size, seed=n * 1000 + size)
  loss, logits, labels = info_nce(*(jnp.asarray(a, jnp.float32) for a in (q, k, queue)), temperature=tau)
  ref_loss, ref_logits = reference_info_nce(q, k, queue, tau)
  assert logits.shape == (n, 1 + size) and labels.shape == (n,)
  assert labels.dtype == jnp.int32 and not np.any(np.asarray(labels))
  np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5, atol=1e-5)


def test_positive_is_column_zero():
  q, k, queue = _inputs(6, 4, 10, seed=3)
  _, logits, _ = info_nce(jnp.asarray(q), jnp.asarray(k), jnp.asarray(queue), temperature=0.2)
  cos = np.sum(_unit(q) * _unit(k), axis=1)
  np.testing.assert_allclose(np.asarray(logits[:, 0]), cos / 0.2, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(logits[:, 1:]), _unit(q) @ queue.T / 0.2, rtol=1e-5, atol=1e-5)


def test_hand_computed():
  # q = k = e0, queue = [e1, e2], tau = 1: logits [1, 0, 0], loss -log(e / (e + 2)).
  e = jnp.eye(3)
  loss, logits, _ = info_nce(e[:1], e[:1], e[1:], temperature=1.0)
  np.testing.assert_allclose(np.asarray(logits), [[1.0, 0.0, 0.0]], atol=1e-7)
  np.testing.assert_allclose(float(loss), -np.log(np.e / (np.e + 2)), rtol=1e-6)


def test_gradients_flow_only_into_q():
  q, k, queue = (jnp.asarray(a, jnp.float32) for a in _inputs(5, 6, 9, seed=7))
  gq, gk, gqueue = jax.grad(lambda *a: info_nce(*a, temperature=0.2)[0], argnums=(0, 1, 2))(q, k, queue)
  assert not np.any(np.asarray(gk)) and not np.any(np.asarray(gqueue))
  np.testing.assert_allclose(np.asarray(gq), reference_grad_q(q, k, queue, 0.2), rtol=1e-4, atol=1e-6)
  assert np.abs(np.asarray(gq)).max() > 1e-3


def test_accuracy():
  e = jnp.eye(8)
  # q == k and the queue holds other unit vectors: the positive (cosine 1) always wins.
  q = e[:4] * jnp.array([[1.0], [2.0], [0.5], [3.0]])
  _, acc = info_nce_with_accuracy(q, q, e[4:], temperature=0.2)
  assert float(acc) == 1.0
  # Keys orthogonal to their queries and the queries themselves in the queue: nothing is right.
  _, acc = info_nce_with_accuracy(e[:4], e[4:], e[:4], temperature=0.2)
  assert float(acc) == 0.0
  # Half the queries see themselves in the queue.
  _, acc = info_nce_with_accuracy(e[:4], e[4:], e[:2], temperature=0.2)
  assert float(acc) == 0.5


def test_jit_on_sharded_global_arrays():
  mesh = Mesh(np.array(jax.devices()), ("data",))
  assert mesh.size == 8, "conftest sets 8 simulated CPU devices"
  q, k, queue = _inputs(24, 16, 40, seed=11)
  batch, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  fn = jax.jit(functools.partial(info_nce, temperature=0.2))
  loss, logits, _ = fn(jax.device_put(q.astype(np.float32), batch), jax.device_put(k.astype(np.float32), batch),
                       jax.device_put(queue.astype(np.float32), repl))
  ref_loss, ref_logits = reference_info_nce(q, k, queue, 0.2)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-5, atol=1e-4)


def test_shape_errors():
  with pytest.raises(ValueError, match="one"):
    info_nce(jnp.zeros((4, 3)), jnp.zeros((5, 3)), jnp.zeros((8, 3)), temperature=0.2)
  with pytest.raises(ValueError, match="queue"):
    info_nce(jnp.ones((4, 3)), jnp.ones((4, 3)), jnp.ones((8, 4)), temperature=0.2)
