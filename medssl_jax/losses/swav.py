"""SwAV's codes and loss (Caron et al. 2020, "Unsupervised learning of visual features by
contrasting cluster assignments", Sec. 3.1 and App. A.1), for two global views and optional local ones.

Scores: a view's L2-normalised embedding z (N, D) against the K unit-norm prototypes C (D, K),
s = z C (N, K), cosines in [-1, 1].

Codes (`sinkhorn_codes`, the Sinkhorn-Knopp step of Eq. 3 with the entropy weight epsilon): the
assignment Q of the B scored rows to the K prototypes that spreads them equally, computed from
  Q = exp(s / epsilon)^T (K, B), normalised to sum 1,
  then `iterations` times: each row (prototype) scaled to sum 1/K, then each column (example) to 1/B,
  and Q x B, so that each example's codes sum to 1. B is every row given: the global batch (and, with
  a queue, the queued embeddings' scores before it). It runs on log Q (logsumexp for the sums), which
  is the same arithmetic without overflow or underflow for any epsilon.

Loss (`swav_loss`, Eq. 1 with swapped prediction): for each view i whose codes q_i were computed
(the two global views) and every other view v (the other global view and all local views),
  l(z_v, q_i) = - 1/N sum_n sum_k q_i[n, k] log softmax(s_v[n] / tau)[k],
averaged over the V - 1 views v != i, then over the coded views i. With two views only it is
  1/2 [l(z_b, q_a) + l(z_a, q_b)].
The codes carry no gradient.
"""
import jax
import jax.numpy as jnp


def sinkhorn_codes(scores, epsilon: float, iterations: int):
  """(B, K) codes of (B, K) scores (module docstring); each row sums to 1; float32; no gradient."""
  if scores.ndim != 2:
    raise ValueError(f"sinkhorn_codes needs (batch, prototypes) scores, got shape {scores.shape}")
  s = jax.lax.stop_gradient(scores.astype(jnp.float32))
  b, k = s.shape
  # In logarithms: the same normalisations as sums of exp(), but no prototype's or example's total
  # underflows to 0 however small epsilon is.
  log_q = s.T / epsilon  # (K, B)
  log_q = log_q - jax.nn.logsumexp(log_q)
  for _ in range(int(iterations)):
    log_q = log_q - jax.nn.logsumexp(log_q, axis=1, keepdims=True) - jnp.log(k)
    log_q = log_q - jax.nn.logsumexp(log_q, axis=0, keepdims=True) - jnp.log(b)
  return jnp.exp(log_q + jnp.log(b)).T


def swapped_cross_entropy(codes, scores, temperature: float):
  """l(z, q) = - mean_n sum_k q[n, k] log softmax(s[n] / tau)[k]."""
  log_p = jax.nn.log_softmax(scores.astype(jnp.float32) / temperature, axis=-1)
  return -jnp.mean(jnp.sum(jax.lax.stop_gradient(codes) * log_p, axis=-1))


def swav_loss(scores, codes, temperature: float):
  """SwAV's loss (module docstring): `scores` the V (N, K) score arrays of all views, the coded views
  first; `codes` the codes of the first len(codes) of them (SwAV: the two global views)."""
  scores, codes = list(scores), list(codes)
  if not 1 <= len(codes) <= len(scores) or len(scores) < 2:
    raise ValueError(f"swav_loss needs at least 2 views and codes for 1..V of them, got {len(scores)} and "
                     f"{len(codes)}")
  shape = scores[0].shape
  if len(shape) != 2 or any(s.shape != shape for s in scores) or any(q.shape != shape for q in codes):
    raise ValueError(f"swav_loss needs (batch, prototypes) arrays of one shape; got {[s.shape for s in scores]} "
                     f"and codes {[q.shape for q in codes]}")
  per_code = []
  for i, q in enumerate(codes):
    terms = [swapped_cross_entropy(q, s, temperature) for v, s in enumerate(scores) if v != i]
    per_code.append(sum(terms) / len(terms))
  return sum(per_code) / len(per_code)
