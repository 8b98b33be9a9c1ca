"""BYOL's loss (Grill et al. 2020, "Bootstrap your own latent", Sec. 3.1, Eq. 2 and its symmetrised sum).

For an online prediction p of one view and the target projection z' of the other view, both
L2-normalised, the normalised mean squared error is
  l(p, z') = || p/||p|| - z'/||z'|| ||^2 = 2 - 2 cos(p, z'),
and the loss symmetrises it over the two views, averaged over the N examples of the global batch:
  L = 1/N sum_i [ l(p_a[i], z_b[i]) + l(p_b[i], z_a[i]) ]      (0 <= L <= 8).
The targets come from the EMA target network and pass through `jax.lax.stop_gradient` here, so only
the predictions receive gradients (the paper's "sg").

All arguments are global (N, D) arrays: under `jax.jit` every term needs only its own row, so a
sharded batch gives the unsharded value with no collective but the final mean.
"""
import jax
import jax.numpy as jnp


def _l2_normalize(z):
  z = z.astype(jnp.float32)
  return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-12))


def normalized_mse(p, z):
  """(N,) per-example 2 - 2 cos(p, z); z under stop-gradient."""
  if p.ndim != 2 or p.shape != z.shape:
    raise ValueError(f"normalized_mse needs two (batch, dim) arrays of one shape, got {p.shape} and {z.shape}")
  p, z = _l2_normalize(p), jax.lax.stop_gradient(_l2_normalize(z))
  return 2.0 - 2.0 * jnp.sum(p * z, axis=-1)


def byol_loss(p_a, p_b, z_a, z_b):
  """The symmetric BYOL loss: mean over examples of l(p_a, sg z_b) + l(p_b, sg z_a)."""
  return jnp.mean(normalized_mse(p_a, z_b) + normalized_mse(p_b, z_a))
