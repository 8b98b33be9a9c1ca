"""Weighted k-nearest-neighbour classification on features, the monitor of self-supervised
representations (Wu et al. 2018, InstDisc; the DINO protocol: k = 20, cosine similarity, each of
the k nearest bank rows votes for its label with weight exp(similarity / T), T = 0.07).

The scores of a query are its neighbours' weighted votes divided by their total weight: class
probabilities for a multi-class task (what sklearn's `KNeighborsClassifier(metric='cosine',
weights=...)` predicts: the reference of the tests), and for a multi-label task, per label, the
weighted share of positives among the neighbours whose label is known (NaN = unknown). The top-1
prediction is the one of the unnormalised votes of the DINO protocol; the normalisation makes the
scores comparable across queries, which an AUC needs.

Pure JAX (`jax.jit`, the queries on the mesh's data axis when the caller shards them); the bank
is replicated: a few thousand rows of features.
"""
import functools

import jax
import jax.numpy as jnp


def normalize(x, eps: float = 1e-12):
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


@functools.partial(jax.jit, static_argnames=("k",))
def knn_scores(bank, bank_targets, bank_known, queries, *, k: int, temperature: float):
  """(Q, C) scores of `queries` (Q, D) from the bank's features (B, D), targets (B, C) (one-hot
  classes, or multi-label 0/1 with 0 where unknown) and `bank_known` (B, C) (1 where the target is
  known: all ones for classes). k is capped at B."""
  k = min(int(k), bank.shape[0])
  sim = normalize(queries) @ normalize(bank).T                      # (Q, B) cosine similarities
  top_sim, top_idx = jax.lax.top_k(sim, k)                          # (Q, k)
  w = jnp.exp((top_sim - 1.0) / temperature)                        # exp(s / T) up to a factor per query
  votes = jnp.einsum("qk,qkc->qc", w, bank_targets[top_idx])
  weight = jnp.einsum("qk,qkc->qc", w, bank_known[top_idx])
  return votes / jnp.maximum(weight, 1e-30)


def one_hot_targets(labels, num_classes: int):
  """(targets, known) of integer class labels (N,) for `knn_scores`."""
  targets = jax.nn.one_hot(jnp.asarray(labels), num_classes, dtype=jnp.float32)
  return targets, jnp.ones_like(targets)


def multilabel_targets(labels):
  """(targets, known) of multi-label labels (N, L) in {0, 1} with NaN = unknown."""
  labels = jnp.asarray(labels, jnp.float32)
  known = ~jnp.isnan(labels)
  return jnp.where(known, labels, 0.0), known.astype(jnp.float32)
