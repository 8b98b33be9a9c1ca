"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: self-supervised learning via redundancy reduction").

Encoder + projector MLP (`models.siamese.SiameseModel` without a predictor): `model.head_layers` = 3
layers, hidden width `barlow.projector_hidden` (8192), output `model.head_dim` (8192), Linear-BN-ReLU
for the hidden layers and a plain last Linear (Sec. 4, "Implementation details"). Loss
(`losses.barlow_twins_loss`): each view's embeddings batch-normalised over the GLOBAL batch, their
cross-correlation C, sum (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2, lambda = `barlow.lambd` (5e-3).
No extra state. Each view goes through the network on its own (its own BN statistics), as in the
paper's Algorithm 1. Everything is on global arrays under `jax.jit`: the loss's normalisation and
C reduce over the whole batch, so a step on 8 devices equals the step on 1.
"""
import functools

import jax

from medssl_jax import settings
from medssl_jax.errors import UserError
from medssl_jax.losses import barlow_twins_terms
from medssl_jax.methods import base
from medssl_jax.methods.registry import register
from medssl_jax.models.siamese import siamese_from_config


def train_step(state, batch: dict, *, lambd: float):
  """One Barlow Twins step on a global batch {'view_a', 'view_b'}; returns (state, metrics)."""
  def loss_fn(params):
    z_a, z_b, stats = base.project_views(state, params, batch)
    loss, on, off = barlow_twins_terms(z_a, z_b, lambd=lambd)
    return loss, (stats, on, off)

  (loss, (stats, on, off)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads, stats)
  metrics = {"loss": loss, "on_diagonal": on, "off_diagonal": off, "grad_norm": base.global_norm(grads)}
  return new_state, metrics | base.pairing_metrics(batch)


@register
class BarlowTwins(base.Method):
  name = "barlow_twins"
  config_group = "barlow"

  def default_config(self) -> dict:
    return dict(settings.METHOD_DEFAULTS[self.config_group])

  def validate(self, config) -> None:
    super().validate(config)
    b = config.barlow
    if float(b.lambd) < 0:
      raise UserError(f"barlow.lambd={b.lambd} must be >= 0 (the off-diagonal weight, paper 5e-3)")
    if int(b.projector_hidden) < 1:
      raise UserError(f"barlow.projector_hidden={b.projector_hidden} must be a positive width")
    if int(config.train.batch_size) < 2:
      raise UserError(f"train.batch_size={config.train.batch_size}: Barlow Twins standardises each feature over "
                      f"the batch, which needs at least 2 examples")

  def build_model(self, config):
    return siamese_from_config(config.model, projector_hidden=int(config.barlow.projector_hidden))

  def train_step(self, config):
    return functools.partial(train_step, lambd=float(config.barlow.lambd))
