"""SimSiam's loss (Chen & He 2021, "Exploring simple Siamese representation learning", Eq. 1-4).

With D(p, z) = -cos(p, stopgrad(z)) = -(p/||p||) . (z/||z||), the symmetrised loss is
  L = 1/2 D(p_a, z_b) + 1/2 D(p_b, z_a),
averaged over the N examples of the global batch (-1 <= L <= 1, -1 at the optimum). p are the
predictor's outputs, z the projector's, both of the online network: the stop-gradient on z
(applied here) is what the paper shows keeps the method from collapsing (Sec. 4.1).
Global (N, D) arrays; row-wise, so a sharded batch gives the unsharded value under `jax.jit`.
"""
import jax
import jax.numpy as jnp


def _l2_normalize(z):
  z = z.astype(jnp.float32)
  return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-12))


def negative_cosine(p, z):
  """(N,) per-example D(p, z) = -cos(p, sg z)."""
  if p.ndim != 2 or p.shape != z.shape:
    raise ValueError(f"negative_cosine needs two (batch, dim) arrays of one shape, got {p.shape} and {z.shape}")
  return -jnp.sum(_l2_normalize(p) * jax.lax.stop_gradient(_l2_normalize(z)), axis=-1)


def simsiam_loss(p_a, p_b, z_a, z_b):
  """The symmetric SimSiam loss: mean over examples of 1/2 D(p_a, sg z_b) + 1/2 D(p_b, sg z_a)."""
  return jnp.mean(0.5 * negative_cosine(p_a, z_b) + 0.5 * negative_cosine(p_b, z_a))
