"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, Eq. 1).

For a global batch of N pairs (z_a[k], z_b[k]) the loss of view i with positive j is
  l(i, j) = -log( exp(sim(i, j)/tau) / sum_{m != i} exp(sim(i, m)/tau) ),
the sum running over all 2N-1 other views of the GLOBAL batch, and the value returned is
Algorithm 1 of Azizi et al. 2021: L = 1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)]
(half of the SimCLR reference code's mean(loss_a + loss_b)).

Two ways to call it:
- on global arrays (`axis_name=None`), e.g. inside `jax.jit` with the batch sharded on a mesh:
  the similarity matrix is (N, 2N) per view side and XLA partitions its rows over devices;
- inside `shard_map` on per-device shards with `axis_name` set: each device gathers the other
  devices' embeddings as negatives and holds only its (n_local, 2N) block of logits.
"""
import jax
import jax.numpy as jnp

_MASK = 1e9  # subtracted from self-similarities; finite so that 0 * mask stays 0.


def _l2_normalize(z):
  z = z.astype(jnp.float32)
  return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-12))


def nt_xent_with_accuracy(z_a, z_b, *, temperature: float, axis_name=None):
  """Returns (loss, top-1 accuracy of picking the positive among all 2N-1 candidates)."""
  if z_a.shape != z_b.shape or z_a.ndim != 2:
    raise ValueError(f"nt_xent needs two (batch, dim) arrays of one shape, got {z_a.shape} and {z_b.shape}")
  z_a, z_b = _l2_normalize(z_a), _l2_normalize(z_b)
  n = z_a.shape[0]
  if axis_name is None:
    all_a, all_b, offset = z_a, z_b, 0
  else:
    all_a = jax.lax.all_gather(z_a, axis_name, tiled=True)
    all_b = jax.lax.all_gather(z_b, axis_name, tiled=True)
    offset = jax.lax.axis_index(axis_name) * n
  rows = offset + jnp.arange(n)
  self_mask = jax.nn.one_hot(rows, all_a.shape[0], dtype=jnp.float32) * _MASK
  inv_t = 1.0 / temperature
  positive = jnp.sum(z_a * z_b, axis=-1) * inv_t                     # (n,)
  logits_a = jnp.concatenate([z_a @ all_b.T * inv_t, z_a @ all_a.T * inv_t - self_mask], axis=1)
  logits_b = jnp.concatenate([z_b @ all_a.T * inv_t, z_b @ all_b.T * inv_t - self_mask], axis=1)
  loss_sum = jnp.sum(jax.nn.logsumexp(logits_a, axis=1) - positive)
  loss_sum += jnp.sum(jax.nn.logsumexp(logits_b, axis=1) - positive)
  correct = jnp.sum(jnp.argmax(logits_a, axis=1) == rows) + jnp.sum(jnp.argmax(logits_b, axis=1) == rows)
  count = 2 * n
  if axis_name is not None:
    loss_sum, correct = jax.lax.psum((loss_sum, correct), axis_name)
    count = 2 * all_a.shape[0]
  return loss_sum / count, correct.astype(jnp.float32) / count


def nt_xent(z_a, z_b, *, temperature: float, axis_name=None):
  """NT-Xent over the global batch; see the module docstring."""
  return nt_xent_with_accuracy(z_a, z_b, temperature=temperature, axis_name=axis_name)[0]
