"""SimSiam (Chen & He 2021, "Exploring simple Siamese representation learning"): BYOL without the
momentum encoder.

One network, encoder + projector MLP + predictor MLP (`models.siamese.SiameseModel`). Projector
(Sec. 3, "Baseline settings"): `model.head_layers` = 3 Linear layers, hidden width
`simsiam.projector_hidden` (2048), output `model.head_dim` (2048), BN on every layer including the
output (no ReLU there). Predictor: a bottleneck MLP, Linear(`simsiam.predictor_hidden`, 512)-BN-ReLU-
Linear(`model.head_dim`), no BN on its output. Loss (`losses.simsiam_loss`): 1/2 D(p_a, sg z_b) +
1/2 D(p_b, sg z_a), D = negative cosine; the "target" is the same network's projection of the other
view under stop-gradient, so there is no extra state (`state.extra` is None).

Each view goes through the network on its own (its own BN statistics), as the paper's pseudo-code
(Algorithm 1) does; everything is on global arrays under `jax.jit`, so BN and the loss see the
GLOBAL batch and a step on 8 devices equals the step on 1.
"""
import jax
import jax.numpy as jnp

from medssl_jax import settings
from medssl_jax.errors import UserError
from medssl_jax.losses import simsiam_loss
from medssl_jax.methods import base
from medssl_jax.methods.registry import register
from medssl_jax.models.siamese import siamese_from_config


def train_step(state, batch: dict):
  """One SimSiam step on a global batch {'view_a', 'view_b'}; returns (state, metrics)."""
  def loss_fn(params):
    (z_a, p_a), (z_b, p_b), stats = base.project_views(state, params, batch)
    return simsiam_loss(p_a, p_b, z_a, z_b), (stats, z_a)

  (loss, (stats, z_a)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads, stats)
  # The paper's collapse monitor (Sec. 4.1, Fig. 2): the std over the batch of the l2-normalised
  # projection, per channel, averaged; about 1/sqrt(d) without collapse, 0 when collapsed.
  z = z_a / jnp.linalg.norm(z_a, axis=-1, keepdims=True).clip(1e-6)
  metrics = {"loss": loss, "z_std": jnp.mean(jnp.std(z, axis=0)), "grad_norm": base.global_norm(grads)}
  return new_state, metrics | base.pairing_metrics(batch)


@register
class SimSiam(base.Method):
  name = "simsiam"
  config_group = "simsiam"

  def default_config(self) -> dict:
    return dict(settings.METHOD_DEFAULTS[self.config_group])

  def validate(self, config) -> None:
    super().validate(config)
    for key in ("projector_hidden", "predictor_hidden"):
      if int(config.simsiam[key]) < 1:
        raise UserError(f"simsiam.{key}={config.simsiam[key]} must be a positive width")
    if int(config.train.batch_size) < 2:
      raise UserError(f"train.batch_size={config.train.batch_size}: SimSiam's batch-normalised MLPs need at least "
                      f"2 examples per batch")

  def build_model(self, config):
    return siamese_from_config(config.model, projector_hidden=int(config.simsiam.projector_hidden),
                               predictor_hidden=int(config.simsiam.predictor_hidden), projector_out_batch_norm=True)

  def train_step(self, config):
    del config
    return train_step
