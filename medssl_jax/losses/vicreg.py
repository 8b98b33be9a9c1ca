"""The VICReg loss (Bardes, Ponce & LeCun 2022, "VICReg: variance-invariance-covariance regularization
for self-supervised learning", Sec. 3.2 Eq. 1-6 and Algorithm 1).

For the two views' (N, D) embeddings Z, Z' over the GLOBAL batch:
- invariance s(Z, Z') = mean over the N x D entries of (z - z')^2 (Algorithm 1's mse_loss; Eq. 5 writes
  the per-example squared distance without the 1/D, and the weight 25 goes with the mean);
- variance v(Z) = 1/D sum_j max(0, gamma - S(z^j, eps)), S = sqrt(Var(z^j) + eps), the unbiased variance
  of feature j over the batch, gamma 1, eps 1e-4 (Eq. 1-2);
- covariance c(Z) = 1/D sum_{i != j} C(Z)_ij^2, C(Z) = 1/(N-1) sum_n (z_n - mean)(z_n - mean)^T (Eq. 3-4);
  L = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')],  lambda = mu = 25, nu = 1 (Eq. 6).
(The authors' repository averages the two variance terms, i.e. mu/2; this follows the paper.)
The means, variances and C reduce over the batch axis, which XLA computes across devices under
`jax.jit`, so a sharded batch gives the unsharded value. N must be at least 2.
"""
import jax
import jax.numpy as jnp


def variance_term(z, *, gamma: float = 1.0, eps: float = 1e-4):
  """v(Z): the mean over features of the hinge max(0, gamma - std), unbiased std over the batch."""
  z = z.astype(jnp.float32)
  std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
  return jnp.mean(jax.nn.relu(gamma - std))


def covariance_term(z):
  """c(Z): the sum of the squared off-diagonal covariances over the batch, divided by D."""
  z = z.astype(jnp.float32)
  n, d = z.shape
  zc = z - jnp.mean(z, axis=0, keepdims=True)
  cov = zc.T @ zc / (n - 1)
  return (jnp.sum(jnp.square(cov)) - jnp.sum(jnp.square(jnp.diagonal(cov)))) / d


def vicreg_terms(z_a, z_b, *, gamma: float = 1.0, eps: float = 1e-4):
  """(invariance s, variance v(Z) + v(Z'), covariance c(Z) + c(Z')), unweighted."""
  if z_a.ndim != 2 or z_a.shape != z_b.shape:
    raise ValueError(f"vicreg needs two (batch, dim) arrays of one shape, got {z_a.shape} and {z_b.shape}")
  if z_a.shape[0] < 2:
    raise ValueError(f"vicreg needs a batch of at least 2 (its variances are over the batch), got {z_a.shape[0]}")
  z_a, z_b = z_a.astype(jnp.float32), z_b.astype(jnp.float32)
  invariance = jnp.mean(jnp.square(z_a - z_b))
  variance = variance_term(z_a, gamma=gamma, eps=eps) + variance_term(z_b, gamma=gamma, eps=eps)
  covariance = covariance_term(z_a) + covariance_term(z_b)
  return invariance, variance, covariance


def vicreg_loss(z_a, z_b, *, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0,
                gamma: float = 1.0, eps: float = 1e-4):
  """The VICReg loss; see the module docstring."""
  s, v, c = vicreg_terms(z_a, z_b, gamma=gamma, eps=eps)
  return sim_weight * s + var_weight * v + cov_weight * c
