"""BYOL (Grill et al. 2020, "Bootstrap your own latent: a new approach to self-supervised learning").

Online network: encoder + projector MLP + predictor MLP (`models.siamese.SiameseModel`: the
projector is `model.head_layers` layers, hidden width `byol.projector_hidden`, out `model.head_dim`;
the predictor hidden width `byol.predictor_hidden`, out `model.head_dim`; Linear-BN-ReLU-Linear
each, as Sec. 3.3: 4096 hidden, 256 out). Target network: encoder + projector only, an
exponential moving average of the online ones, never trained by gradient, with the cosine
momentum schedule tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 (Sec. 3.3; tau_base =
`byol.momentum`, 0.996; k the step, K = `train.num_steps`; `momentum.cosine_momentum`).
Loss (`losses.byol_loss`): l(p_a, sg z'_b) + l(p_b, sg z'_a), l = 2 - 2 cos, averaged over the batch.

Order within a step, as in the paper's Sec. 3.1: (1) target projections of both views (train
mode, the target's own BN statistics, no gradient), (2) online predictions, the loss and the
gradient step, (3) target <- tau_k target + (1 - tau_k) online, from the UPDATED online encoder and
projector (tau_k of the step k that just ran). Each view goes through a network on its own (its
own BN statistics), as the paper's implementation forwards the two views separately. Everything
is on global arrays under `jax.jit`, so BN and the loss see the GLOBAL batch and a step on 8
devices equals the step on 1.

The target lives in `state.extra` ({'target_params', 'target_batch_stats'}: the online 'encoder'
and 'head' trees; no 'predictor'), so checkpoints save it and a resumed run restores it exactly.
"""
import functools

import jax
import jax.numpy as jnp

from medssl_jax import settings
from medssl_jax.errors import UserError
from medssl_jax.losses import byol_loss
from medssl_jax.methods import base
from medssl_jax.methods import momentum
from medssl_jax.methods.registry import register
from medssl_jax.models.siamese import siamese_from_config


def without_predictor(tree: dict) -> dict:
  """The encoder + projector part of a params / batch_stats tree (what the target holds)."""
  return {k: v for k, v in tree.items() if k != "predictor"}


def train_step(state, batch: dict, *, base_momentum: float, num_steps: int):
  """One BYOL step on a global batch {'view_a', 'view_b'}; returns (state, metrics)."""
  extra = state.extra
  # (1) target projections, each view on its own, no gradient.
  t_stats = extra["target_batch_stats"]
  targets = []
  for view in ("view_a", "view_b"):
    (_, z), upd = state.apply_fn({"params": extra["target_params"], "batch_stats": t_stats}, batch[view],
                                 train=True, mutable=["batch_stats"], method="project")
    t_stats = upd["batch_stats"]
    targets.append(jax.lax.stop_gradient(z))
  z_a, z_b = targets

  # (2) online predictions and the gradient step.
  def loss_fn(params):
    (_, p_a), (_, p_b), stats = base.project_views(state, params, batch)
    return byol_loss(p_a, p_b, z_a, z_b), stats

  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads, stats)
  # (3) EMA of the updated online encoder + projector.
  tau = momentum.cosine_momentum(state.step, base_momentum, num_steps)
  target_params = momentum.ema_update(extra["target_params"], without_predictor(new_state.params), tau)
  new_extra = {"target_params": target_params, "target_batch_stats": t_stats}
  metrics = {"loss": loss, "target_momentum": tau, "grad_norm": base.global_norm(grads)}
  return new_state.replace(extra=new_extra), metrics | base.pairing_metrics(batch)


@register
class BYOL(base.Method):
  name = "byol"
  config_group = "byol"

  def default_config(self) -> dict:
    return dict(settings.METHOD_DEFAULTS[self.config_group])

  def validate(self, config) -> None:
    super().validate(config)
    b = config.byol
    if not 0.0 <= float(b.momentum) <= 1.0:
      raise UserError(f"byol.momentum={b.momentum} must be in [0, 1] (the target's base EMA momentum, paper 0.996)")
    for key in ("projector_hidden", "predictor_hidden"):
      if int(b[key]) < 1:
        raise UserError(f"byol.{key}={b[key]} must be a positive width")
    if int(config.train.batch_size) < 2:
      raise UserError(f"train.batch_size={config.train.batch_size}: BYOL's batch-normalised MLPs need at least 2 "
                      f"examples per batch")

  def build_model(self, config):
    return siamese_from_config(config.model, projector_hidden=int(config.byol.projector_hidden),
                               predictor_hidden=int(config.byol.predictor_hidden))

  def init_extra(self, config, variables, rng):
    del config, rng
    copy = lambda t: jax.tree_util.tree_map(jnp.array, without_predictor(t))  # noqa: E731 - target starts equal
    return {"target_params": copy(variables["params"]), "target_batch_stats": copy(variables["batch_stats"])}

  def train_step(self, config):
    return functools.partial(train_step, base_momentum=float(config.byol.momentum),
                             num_steps=int(config.train.num_steps))
