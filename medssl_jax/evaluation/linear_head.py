"""A linear head fitted on frozen (stop-gradient) features with its own optimiser: the probe of
the pretraining monitor.

Features are standardised with the training rows' mean and standard deviation, then a linear
layer (weights and bias from zero) takes `steps` full-batch Adam steps (optax) on the softmax
cross-entropy of integer classes, or on the masked sigmoid cross-entropy of multi-label targets
(NaN = unknown, left out). From zero and full-batch, the fit is a deterministic function of the
features: the probe value of a checkpoint does not depend on the history of the run, which is
what choosing a pretraining checkpoint by it needs (MoCo-CXR, Sowrirajan et al. 2021, Sec. 3.3:
checkpoints are chosen by linear evaluation). The loss is convex, so the steps only decide how
close the fit gets to the optimum; `steps` and `lr` are the monitor's settings.
"""
import functools

import jax
import jax.numpy as jnp
import optax


def _loss(params, x, y, multilabel: bool):
  logits = x @ params["w"] + params["b"]
  if multilabel:
    known = ~jnp.isnan(y)
    per = optax.sigmoid_binary_cross_entropy(logits, jnp.where(known, y, 0.0))
    return jnp.sum(jnp.where(known, per, 0.0)) / jnp.maximum(jnp.sum(known), 1)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


@functools.partial(jax.jit, static_argnames=("num_outputs", "multilabel", "steps"))
def fit(x, y, *, num_outputs: int, multilabel: bool, steps: int, lr: float):
  """The fitted head {'w', 'b', 'mean', 'std'} of features `x` (N, D) and labels `y` ((N,) int
  classes, or (N, L) float with NaN = unknown when `multilabel`)."""
  x = x.astype(jnp.float32)
  mean, std = jnp.mean(x, axis=0), jnp.std(x, axis=0) + 1e-6
  xs = (x - mean) / std
  params = {"w": jnp.zeros((x.shape[1], num_outputs), jnp.float32), "b": jnp.zeros((num_outputs,), jnp.float32)}
  tx = optax.adam(lr)
  grad = jax.grad(_loss)

  def body(_, carry):
    p, opt = carry
    updates, opt = tx.update(grad(p, xs, y, multilabel), opt, p)
    return optax.apply_updates(p, updates), opt

  params, _ = jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))
  return {**params, "mean": mean, "std": std}


@functools.partial(jax.jit, static_argnames=("multilabel",))
def predict(head, x, *, multilabel: bool):
  """Probabilities (N, C): softmax over classes, or a sigmoid per label."""
  logits = ((x.astype(jnp.float32) - head["mean"]) / head["std"]) @ head["w"] + head["b"]
  return jax.nn.sigmoid(logits) if multilabel else jax.nn.softmax(logits, axis=-1)
