"""DINO (Caron et al. 2021, "Emerging properties in self-supervised vision transformers"),
self-distillation with no labels, on two views.

Student: encoder + DINO head (`models.dino_head`: MLP of `model.head_layers` layers, hidden
`dino.head_hidden`, bottleneck `model.head_dim`, L2-normalised, weight-normalised prototypes,
`dino.out_dim` of them). Teacher: the same network, an exponential moving average of the student
(all of it, head included) with the cosine momentum schedule from `dino.momentum` to 1
(`momentum.cosine_momentum`, as BYOL's), never trained by gradient. Loss (`losses.dino_loss`): the
teacher's centered, sharpened softmax of one view (temperature `dino.teacher_temp`, linearly
warmed up from `dino.warmup_teacher_temp` over `dino.warmup_teacher_temp_steps` steps) against the
student's softmax of the other (temperature `dino.student_temp`), both orders averaged. The center
then moves to the teacher's batch mean with momentum `dino.center_momentum`. For its first
`dino.freeze_last_layer_steps` steps the prototypes (the head's last layer) stay as they are: no
gradient and no weight decay (the reference freezes them for its first epoch; their optimiser
moments see zero gradients meanwhile).

Order within a step (Algorithm 1): teacher outputs of both views (train mode, the teacher's own BN
statistics when the encoder has BN, no gradient); the student's outputs, the loss and the gradient
step; the teacher EMA from the UPDATED student; the center update. Everything runs on global arrays
under `jax.jit`, so a step on 8 devices equals the step on 1.

Multi-crop (`aug.local_crops` = L > 0): the student also sees the batch's L small local views
('local_views', from every host pipeline and with aug.on_device), in one forward pass; the teacher
sees the two global views only; the loss is `losses.dino_multicrop_loss`. The encoder must accept
the local size: a ResNet does, our ViT does not (its position embeddings are not interpolated:
refused). The weight decay schedule is the optimiser's (optim.weight_decay_schedule; configs/dino.py).

State: `state.extra` = {'teacher_params', 'teacher_batch_stats', 'center'}: checkpointed, so a
resumed run continues exactly.
"""
import functools

import jax
import jax.numpy as jnp

from medssl_jax import settings
from medssl_jax.errors import UserError
from medssl_jax.losses import dino_loss, dino_multicrop_loss, update_center
from medssl_jax.methods import base
from medssl_jax.methods import momentum
from medssl_jax.methods.registry import register
from medssl_jax.models.dino_head import dino_from_config


def teacher_temperature(step, start: float, end: float, warmup_steps: int):
  """Linear from `start` at step 0 to `end` at `warmup_steps`, then `end` (float32; step may be traced)."""
  if warmup_steps <= 0:
    return jnp.float32(end)
  k = jnp.minimum(jnp.asarray(step, jnp.float32) / warmup_steps, 1.0)
  return start + (end - start) * k


def train_step(state, batch: dict, *, base_momentum: float, num_steps: int, student_temp: float,
               teacher_temp: float, warmup_teacher_temp: float, warmup_steps: int, center_momentum: float,
               freeze_last_layer_steps: int):
  """One DINO step on a global batch {'view_a', 'view_b'}; returns (state, metrics)."""
  extra = state.extra
  t_stats, teacher = extra["teacher_batch_stats"], []
  for view in ("view_a", "view_b"):
    (_, t), upd = state.apply_fn({"params": extra["teacher_params"], "batch_stats": t_stats}, batch[view], train=True,
                                 mutable=["batch_stats"])
    t_stats = upd["batch_stats"]
    teacher.append(jax.lax.stop_gradient(t))
  t_a, t_b = teacher
  tau_t = teacher_temperature(state.step, warmup_teacher_temp, teacher_temp, warmup_steps)

  def loss_fn(params):
    s_a, s_b, stats = base.project_views(state, params, batch)
    if "local_views" not in batch:
      return dino_loss(s_a, s_b, t_a, t_b, extra["center"], student_temp, tau_t), stats
    # Multi-crop: the student's local views, all L of them in one forward pass (their own BN statistics,
    # as the reference forwards the crops of one resolution together); the teacher sees the globals only.
    local = batch["local_views"]
    n, num_local = local.shape[:2]
    (_, s_l), upd = state.apply_fn({"params": params, "batch_stats": stats},
                                   local.reshape((n * num_local,) + local.shape[2:]), train=True,
                                   mutable=["batch_stats"])
    s_l = s_l.reshape((n, num_local) + s_l.shape[1:])
    loss = dino_multicrop_loss((s_a, s_b), [s_l[:, j] for j in range(num_local)], (t_a, t_b), extra["center"],
                               student_temp, tau_t)
    return loss, upd["batch_stats"]

  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  frozen = state.step < freeze_last_layer_steps
  if freeze_last_layer_steps > 0:  # no gradient, and no weight decay either: the prototypes stay as they are
    grads = {**grads, "head": {**grads["head"], "last": jnp.where(frozen, 0.0, grads["head"]["last"])}}
  new_state = state.apply_gradients(grads, stats)
  if freeze_last_layer_steps > 0:
    last = jnp.where(frozen, state.params["head"]["last"], new_state.params["head"]["last"])
    new_state = new_state.replace(params={**new_state.params, "head": {**new_state.params["head"], "last": last}})
  tau = momentum.cosine_momentum(state.step, base_momentum, num_steps)
  new_extra = {"teacher_params": momentum.ema_update(extra["teacher_params"], new_state.params, tau),
               "teacher_batch_stats": t_stats,
               "center": update_center(extra["center"], t_a, t_b, center_momentum)}
  # Teacher entropy: near log(K) means the teacher collapsed to uniform, near 0 to one prototype.
  p = jax.nn.softmax((t_a - extra["center"]) / tau_t, axis=-1)
  entropy = jnp.mean(-jnp.sum(p * jnp.log(jnp.maximum(p, 1e-30)), axis=-1))
  metrics = {"loss": loss, "teacher_momentum": tau, "teacher_temp": tau_t, "teacher_entropy": entropy,
             "grad_norm": base.global_norm(grads)}
  return new_state.replace(extra=new_extra), metrics | base.pairing_metrics(batch)


@register
class DINO(base.Method):
  name = "dino"
  config_group = "dino"
  supports_local_crops = True

  def default_config(self) -> dict:
    return dict(settings.METHOD_DEFAULTS[self.config_group])

  def validate(self, config) -> None:
    super().validate(config)
    d = config.dino
    if not 0.0 <= float(d.momentum) <= 1.0 or not 0.0 <= float(d.center_momentum) <= 1.0:
      raise UserError(f"dino.momentum={d.momentum} and dino.center_momentum={d.center_momentum} must be in [0, 1] "
                      f"(the paper: 0.996 and 0.9)")
    for key in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
      if not float(d[key]) > 0.0:
        raise UserError(f"dino.{key}={d[key]} must be > 0 (a softmax temperature)")
    for key in ("out_dim", "head_hidden"):
      if int(d[key]) < 1:
        raise UserError(f"dino.{key}={d[key]} must be a positive width")
    for key in ("warmup_teacher_temp_steps", "freeze_last_layer_steps"):
      if int(d[key]) < 0:
        raise UserError(f"dino.{key}={d[key]} must be >= 0 (steps)")

  def build_model(self, config):
    return dino_from_config(config.model, out_dim=int(config.dino.out_dim), hidden_dim=int(config.dino.head_hidden))

  def init_extra(self, config, variables, rng):
    del rng
    copy = lambda t: jax.tree_util.tree_map(jnp.array, t)  # noqa: E731 - the teacher starts equal
    return {"teacher_params": copy(variables["params"]), "teacher_batch_stats": copy(variables["batch_stats"]),
            "center": jnp.zeros((int(config.dino.out_dim),), jnp.float32)}

  def train_step(self, config):
    d = config.dino
    return functools.partial(train_step, base_momentum=float(d.momentum), num_steps=int(config.train.num_steps),
                             student_temp=float(d.student_temp), teacher_temp=float(d.teacher_temp),
                             warmup_teacher_temp=float(d.warmup_teacher_temp),
                             warmup_steps=int(d.warmup_teacher_temp_steps), center_momentum=float(d.center_momentum),
                             freeze_last_layer_steps=int(d.freeze_last_layer_steps))
