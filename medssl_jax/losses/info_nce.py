"""InfoNCE with a queue of negatives, the loss of MoCo (He et al. 2020, Eq. 1; MoCo v2, Chen et al. 2020).

For a query q_i, its positive key k_i (the other view of the same image, from the momentum
encoder) and K negative keys n_1..n_K held in a queue:
  l_i = -log( exp(q_i.k_i / tau) / (exp(q_i.k_i / tau) + sum_j exp(q_i.n_j / tau)) ),
with q and k L2-normalised. As in the MoCo reference code this is a (1+K)-way cross-entropy whose
logits are [q.k, q.queue^T] / tau and whose label is 0 (the positive is column 0); the loss is the
mean over the N queries of the global batch. MoCo v2 default tau = 0.2 (`../shared/PROTOCOLS.md`).

Gradients: the keys and the queue come from the momentum encoder, which is not trained by
back-propagation, so `k` and `queue` pass through `jax.lax.stop_gradient` here; only `q`
receives gradients.

Sharding: all arguments are global arrays. Under `jax.jit` with q and k sharded on their batch
axis and the queue replicated, every logit row needs only its own q_i, k_i and the whole queue,
so XLA partitions the rows over devices with no collective except the final mean; no
`axis_name` variant is needed.
"""
import jax
import jax.numpy as jnp


def _l2_normalize(z):
  z = z.astype(jnp.float32)
  return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-12))


def info_nce(q, k, queue, *, temperature: float):
  """Returns (loss, logits (N, 1+K), labels (N,) int32 zeros); see the module docstring.

  q, k: (N, D) query and key embeddings (normalised here); queue: (K, D) negatives, expected
  already L2-normalised (as `medssl_jax.methods.momentum.enqueue` stores them).
  """
  if q.ndim != 2 or q.shape != k.shape:
    raise ValueError(f"info_nce needs q and k of one (batch, dim) shape, got {q.shape} and {k.shape}")
  if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
    raise ValueError(f"info_nce needs a (K, {q.shape[1]}) queue, got {queue.shape}")
  q = _l2_normalize(q)
  k = jax.lax.stop_gradient(_l2_normalize(k))
  queue = jax.lax.stop_gradient(queue.astype(jnp.float32))
  inv_t = 1.0 / temperature
  positive = jnp.sum(q * k, axis=-1, keepdims=True)                  # (N, 1)
  negative = q @ queue.T                                              # (N, K)
  logits = jnp.concatenate([positive, negative], axis=1) * inv_t
  labels = jnp.zeros((q.shape[0],), jnp.int32)
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[:, 0])
  return loss, logits, labels


def info_nce_with_accuracy(q, k, queue, *, temperature: float):
  """Returns (loss, top-1 accuracy of the positive among the 1+K candidates)."""
  loss, logits, labels = info_nce(q, k, queue, temperature=temperature)
  accuracy = jnp.mean((jnp.argmax(logits, axis=1) == labels).astype(jnp.float32))
  return loss, accuracy
