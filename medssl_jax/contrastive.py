"""The contrastive pretraining step shared by SimCLR and MICLe, as pure functions.

SimCLR and MICLe differ only in where the two views of a pair come from (two augmentations
of one image vs. two images of one case); the network, loss and update are the same.
This module imports no TensorFlow, so the step runs and can be benchmarked with JAX alone.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from medssl_jax import optim
from medssl_jax.losses import nt_xent_with_accuracy
from medssl_jax.models import from_config
from medssl_jax.sharding import replicated
from medssl_jax.train_state import TrainState


def create_state(config, mesh, rng) -> TrainState:
  """Initialises a replicated TrainState on `mesh`."""
  model = from_config(config.model)
  tx = optim.make_optimizer(config.optim, config.train.batch_size, config.train.num_steps)
  shape = (2, config.data.image_size, config.data.image_size, config.data.channels)

  def init(rng):
    variables = model.init(rng, jnp.zeros(shape, jnp.float32), train=True)
    params = variables["params"]
    return TrainState(step=jnp.int32(0), params=params, batch_stats=variables["batch_stats"],
                      opt_state=tx.init(params), apply_fn=model.apply, tx=tx)

  return jax.jit(init, out_shardings=replicated(mesh))(rng)


def interleave_views(view_a, view_b):
  """(N, ...) x 2 -> (2N, ...) as a0, b0, a1, b1, ...: each device keeps its own examples."""
  return jnp.stack([view_a, view_b], axis=1).reshape((-1,) + view_a.shape[1:])


def train_step(state: TrainState, batch: dict, *, temperature: float):
  """One SGD step on a global batch {'view_a', 'view_b'}; returns (state, metrics).

  Called under `jax.jit` with the batch sharded over the mesh: batch norm and NT-Xent then see
  the global batch (global BN, cross-replica negatives) without explicit collectives.
  """
  def loss_fn(params):
    x = interleave_views(batch["view_a"], batch["view_b"])
    (_, z), updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x,
                                     train=True, mutable=["batch_stats"])
    z = z.reshape((-1, 2) + z.shape[1:])
    loss, acc = nt_xent_with_accuracy(z[:, 0], z[:, 1], temperature=temperature)
    return loss, (acc, updates["batch_stats"])

  (loss, (acc, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads, batch_stats)
  metrics = {"loss": loss, "contrastive_acc": acc, "grad_norm": _global_norm(grads)}
  if "distinct" in batch:
    metrics["distinct_pairs"] = jnp.mean(batch["distinct"].astype(jnp.float32))
  return new_state, metrics


def _global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree_util.tree_leaves(tree)))


def jit_train_step(config, mesh):
  """The jitted step for `mesh`: state replicated, batch sharded, state buffers donated."""
  del mesh  # shardings come from the arguments: state replicated, batch on the data axis.
  step = functools.partial(train_step, temperature=config.train.temperature)
  return jax.jit(step, donate_argnums=(0,))


def synthetic_batch(config, rng: np.random.Generator, batch_size: int | None = None) -> dict:
  """Random views in [0, 1]: enough for timing the step and for tests."""
  b = config.train.batch_size if batch_size is None else batch_size
  s, c = config.data.image_size, config.data.channels
  return {"view_a": rng.random((b, s, s, c), np.float32), "view_b": rng.random((b, s, s, c), np.float32)}
