"""VICReg (Bardes, Ponce & LeCun 2022, "VICReg: variance-invariance-covariance regularization for
self-supervised learning").

Encoder + projector ("expander") MLP (`models.siamese.SiameseModel` without a predictor):
`model.head_layers` = 3 layers, hidden width `vicreg.projector_hidden` (8192), output `model.head_dim`
(8192), Linear-BN-ReLU for the hidden layers and a plain last Linear (Sec. 4.1). Loss
(`losses.vicreg_loss`): `vicreg.sim_weight` x invariance + `vicreg.var_weight` x (variance hinge of
both views) + `vicreg.cov_weight` x (covariance of both views), 25 / 25 / 1, over the GLOBAL batch.
No extra state. Each view goes through the network on its own (its own BN statistics), as in the
paper's Algorithm 1; on global arrays under `jax.jit`, a step on 8 devices equals the step on 1.
"""
import functools

import jax

from medssl_jax import settings
from medssl_jax.errors import UserError
from medssl_jax.losses import vicreg_terms
from medssl_jax.methods import base
from medssl_jax.methods.registry import register
from medssl_jax.models.siamese import siamese_from_config

WEIGHTS = ("sim_weight", "var_weight", "cov_weight")


def train_step(state, batch: dict, *, sim_weight: float, var_weight: float, cov_weight: float):
  """One VICReg step on a global batch {'view_a', 'view_b'}; returns (state, metrics)."""
  def loss_fn(params):
    z_a, z_b, stats = base.project_views(state, params, batch)
    s, v, c = vicreg_terms(z_a, z_b)
    return sim_weight * s + var_weight * v + cov_weight * c, (stats, s, v, c)

  (loss, (stats, s, v, c)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads, stats)
  metrics = {"loss": loss, "invariance": s, "variance": v, "covariance": c, "grad_norm": base.global_norm(grads)}
  return new_state, metrics | base.pairing_metrics(batch)


@register
class VICReg(base.Method):
  name = "vicreg"
  config_group = "vicreg"

  def default_config(self) -> dict:
    return dict(settings.METHOD_DEFAULTS[self.config_group])

  def validate(self, config) -> None:
    super().validate(config)
    v = config.vicreg
    for key in WEIGHTS:
      if float(v[key]) < 0:
        raise UserError(f"vicreg.{key}={v[key]} must be >= 0 (paper: 25 / 25 / 1)")
    if int(v.projector_hidden) < 1:
      raise UserError(f"vicreg.projector_hidden={v.projector_hidden} must be a positive width")
    if int(config.train.batch_size) < 2:
      raise UserError(f"train.batch_size={config.train.batch_size}: VICReg's variance and covariance are over the "
                      f"batch, which needs at least 2 examples")

  def build_model(self, config):
    return siamese_from_config(config.model, projector_hidden=int(config.vicreg.projector_hidden))

  def train_step(self, config):
    return functools.partial(train_step, **{k: float(config.vicreg[k]) for k in WEIGHTS})
