"""The Barlow Twins loss (Zbontar et al. 2021, "Barlow Twins: self-supervised learning via redundancy
reduction", Eq. 1-2 and Algorithm 1).

Each view's (N, D) embeddings are batch-normalised over the GLOBAL batch, feature by feature:
  z_hat = (z - mean_n z) / sqrt(var_n z + eps)         (biased variance, eps 1e-5: the official code's
                                                        BatchNorm1d without affine parameters),
the cross-correlation of the two views is C = z_hat_a^T z_hat_b / N (D x D), and
  L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2         (lambda 5e-3 in the paper).
Identical views whose features are decorrelated (and not constant) give C = I and L = 0 (up to eps).

Sharding: the arguments are global arrays; the means, variances and C are reductions over the batch
axis, which XLA computes across devices under `jax.jit`, so a sharded batch gives the unsharded value.
"""
import jax.numpy as jnp

BN_EPS = 1e-5


def batch_normalize(z, eps: float = BN_EPS):
  """(N, D) -> each feature standardised over the batch (biased variance, eps inside the root)."""
  z = z.astype(jnp.float32)
  mean = jnp.mean(z, axis=0, keepdims=True)
  var = jnp.mean(jnp.square(z - mean), axis=0, keepdims=True)
  return (z - mean) / jnp.sqrt(var + eps)


def cross_correlation(z_a, z_b, eps: float = BN_EPS):
  """C = z_hat_a^T z_hat_b / N, (D, D)."""
  if z_a.ndim != 2 or z_a.shape != z_b.shape:
    raise ValueError(f"barlow_twins needs two (batch, dim) arrays of one shape, got {z_a.shape} and {z_b.shape}")
  return batch_normalize(z_a, eps).T @ batch_normalize(z_b, eps) / z_a.shape[0]


def barlow_twins_terms(z_a, z_b, *, lambd: float, eps: float = BN_EPS):
  """Returns (loss, on-diagonal sum (1 - C_ii)^2, off-diagonal sum C_ij^2)."""
  c = cross_correlation(z_a, z_b, eps)
  diag = jnp.diagonal(c)
  on = jnp.sum(jnp.square(1.0 - diag))
  off = jnp.sum(jnp.square(c)) - jnp.sum(jnp.square(diag))
  return on + lambd * off, on, off


def barlow_twins_loss(z_a, z_b, *, lambd: float, eps: float = BN_EPS):
  """The Barlow Twins loss; see the module docstring."""
  return barlow_twins_terms(z_a, z_b, lambd=lambd, eps=eps)[0]
