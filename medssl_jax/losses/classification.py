"""Supervised losses for fine-tuning and linear evaluation.

- multi-class (Derm-style): softmax cross-entropy with integer labels;
- multi-label (CheXpert's 5 pathologies): sigmoid cross-entropy per label, where a NaN label
  (missing, or uncertain under the 'ignore' policy) contributes nothing; the mean runs over
  the labels that are present.
"""
import jax.numpy as jnp
import optax


def softmax_cross_entropy(logits, labels, weights=None):
  """Mean over the batch; labels (N,) int. `weights` (N,): a weighted mean (0 leaves a row out,
  e.g. the padding of a last, partial batch)."""
  per_row = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if weights is None:
    return jnp.mean(per_row)
  return jnp.sum(weights * per_row) / jnp.maximum(jnp.sum(weights), 1e-12)


def masked_sigmoid_cross_entropy(logits, labels):
  """Mean over present (non-NaN) entries; labels (N, L) float in {0, 1} or NaN."""
  present = ~jnp.isnan(labels)
  per_entry = optax.sigmoid_binary_cross_entropy(logits, jnp.where(present, labels, 0.0))
  return jnp.sum(jnp.where(present, per_entry, 0.0)) / jnp.maximum(jnp.sum(present), 1)
