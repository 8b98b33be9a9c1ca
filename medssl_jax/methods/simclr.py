"""SimCLR (Chen et al. 2020; Azizi et al. 2021 Sec. 3.1): NT-Xent over the global batch.

Encoder + projection head (`models.ContrastiveModel`); both views of every pair go through the
network together, interleaved, so under `jax.jit` over a sharded mesh batch norm and the loss
see the global batch (global BN, cross-replica negatives) without explicit collectives.
With `pairing='case'` this is MICLe (Azizi et al. Sec. 3.2): the same network, loss and update.
Settings: `simclr.temperature` (0.1 in the SimCLR reference), optimiser in `optim`.
"""
import functools

import jax

from medssl_jax import settings
from medssl_jax.losses import nt_xent_with_accuracy
from medssl_jax.methods import base
from medssl_jax.methods.registry import register


def train_step(state, batch: dict, *, temperature: float):
  """One step on a global batch {'view_a', 'view_b'}; returns (state, metrics)."""
  def loss_fn(params):
    x = base.interleave_views(batch["view_a"], batch["view_b"])
    (_, z), updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x,
                                     train=True, mutable=["batch_stats"])
    z = z.reshape((-1, 2) + z.shape[1:])
    loss, acc = nt_xent_with_accuracy(z[:, 0], z[:, 1], temperature=temperature)
    return loss, (acc, updates["batch_stats"])

  (loss, (acc, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads, batch_stats)
  metrics = {"loss": loss, "contrastive_acc": acc, "grad_norm": base.global_norm(grads)}
  return new_state, metrics | base.pairing_metrics(batch)


@register
class SimCLR(base.Method):
  name = "simclr"
  config_group = "simclr"

  def default_config(self) -> dict:
    return dict(settings.METHOD_DEFAULTS[self.config_group])

  def train_step(self, config):
    return functools.partial(train_step, temperature=float(config.simclr.temperature))
