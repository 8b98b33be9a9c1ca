"""SwAV (Caron et al. 2020, "Unsupervised learning of visual features by contrasting cluster
assignments"): swapped prediction of online cluster codes, with multi-crop.

Network (`models.swav_head.SwAVModel`): encoder, projection MLP to `model.head_dim`, L2-normalised
z, prototypes C (`swav.num_prototypes` of them). At the start of every step each prototype is
rescaled to unit norm (`normalize_prototypes`, as the reference does before its forward pass), so
the scores s = z C are cosines; the gradient step then moves the normalised prototypes.

A step (Sec. 3.1, Algorithm 1 of the paper's appendix):
1. scores of every view: the two global views in one forward pass (their batch norm over both, as
   the reference concatenates the crops of one resolution), the L local views (`aug.local_crops`,
   multi-crop) in another;
2. codes of each global view (`losses.sinkhorn_codes`: `swav.sinkhorn_iterations` Sinkhorn-Knopp
   iterations at `swav.epsilon`, over the global batch; no gradient). With a queue
   (`swav.queue_length` > 0), once it is full, the scores of the queued embeddings against the
   current prototypes go in before the batch's, and the batch's codes are the last N rows;
3. the loss (`losses.swav_loss`: each global view's codes predicted from every other view at
   temperature `swav.temperature`) and the gradient step; for the first
   `swav.freeze_prototypes_steps` steps the prototypes get no gradient and no weight decay (they stay
   as step 1 normalised them), as the reference freezes them for its first epoch;
4. the queue: from step `swav.queue_start_step` on, each global view's embeddings z of the batch go
   in at the front and the oldest N leave (the reference's per-GPU queues together: sums in its
   Sinkhorn-Knopp run over all GPUs, so its queue is one of `queue_length` rows as here).

Everything runs on global arrays under `jax.jit`, so the step on 8 devices equals the step on 1.
State: `state.extra` = {'queue' (2, Q, D), 'queue_rows' (rows filled, int32)}, or None without a
queue; checkpointed, so a resumed run continues exactly.
"""
import functools

import jax
import jax.numpy as jnp

from medssl_jax import settings
from medssl_jax.errors import UserError
from medssl_jax.losses import sinkhorn_codes, swav_loss
from medssl_jax.methods import base
from medssl_jax.methods.registry import register
from medssl_jax.models.swav_head import swav_from_config


def normalize_prototypes(params: dict) -> dict:
  """`params` with each prototype (a column of params['prototypes']['kernel'], (D, K)) at unit L2 norm."""
  w = params["prototypes"]["kernel"]
  w = w * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(w), axis=0, keepdims=True), 1e-24))
  return {**params, "prototypes": {**params["prototypes"], "kernel": w}}


def forward_views(state, params, batch: dict):
  """(list of (N, D) embeddings z, list of (N, K) scores s, new BN statistics) of the views: the two
  global ones first (one forward pass), then the local ones (another)."""
  view_a, view_b = batch["view_a"], batch["view_b"]
  n = view_a.shape[0]
  (_, (z, s)), upd = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                    jnp.concatenate([view_a, view_b], axis=0), train=True, mutable=["batch_stats"])
  zs, ss, stats = [z[:n], z[n:]], [s[:n], s[n:]], upd["batch_stats"]
  if "local_views" in batch:
    local = batch["local_views"]
    num_local = local.shape[1]
    # view-major (all examples' local view 0, then 1, ...) so that local view j is one block of rows
    flat = jnp.swapaxes(local, 0, 1).reshape((num_local * n,) + local.shape[2:])
    (_, (z_l, s_l)), upd = state.apply_fn({"params": params, "batch_stats": stats}, flat, train=True,
                                          mutable=["batch_stats"])
    stats = upd["batch_stats"]
    zs += [z_l[j * n:(j + 1) * n] for j in range(num_local)]
    ss += [s_l[j * n:(j + 1) * n] for j in range(num_local)]
  return zs, ss, stats


def train_step(state, batch: dict, *, temperature: float, epsilon: float, iterations: int,
               freeze_prototypes_steps: int, queue_start_step: int):
  """One SwAV step on a global batch {'view_a', 'view_b'[, 'local_views']}; returns (state, metrics)."""
  params = normalize_prototypes(state.params)
  state = state.replace(params=params)
  queue = state.extra

  def codes_of(scores_i, z_queue):
    n = scores_i.shape[0]
    if queue is None:
      return sinkhorn_codes(scores_i, epsilon, iterations)
    prototypes = jax.lax.stop_gradient(params["prototypes"]["kernel"])

    def with_queue():
      full = jnp.concatenate([z_queue @ prototypes, scores_i], axis=0)
      return sinkhorn_codes(full, epsilon, iterations)[-n:]

    return jax.lax.cond(queue["queue_rows"] >= z_queue.shape[0], with_queue,
                        lambda: sinkhorn_codes(scores_i, epsilon, iterations))

  def loss_fn(p):
    zs, ss, stats = forward_views(state, p, batch)
    codes = [codes_of(ss[i], None if queue is None else queue["queue"][i]) for i in range(2)]
    return swav_loss(ss, codes, temperature), (stats, zs[:2], codes)

  (loss, (stats, z_globals, codes)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  frozen = state.step < freeze_prototypes_steps
  if freeze_prototypes_steps > 0:  # no gradient, and no weight decay: the prototypes stay as they are
    grads = {**grads, "prototypes": jax.tree_util.tree_map(lambda g: jnp.where(frozen, 0.0, g), grads["prototypes"])}
  new_state = state.apply_gradients(grads, stats)
  if freeze_prototypes_steps > 0:
    kept = jax.tree_util.tree_map(lambda old, new: jnp.where(frozen, old, new), params["prototypes"],
                                  new_state.params["prototypes"])
    new_state = new_state.replace(params={**new_state.params, "prototypes": kept})
  metrics = {"loss": loss, "grad_norm": base.global_norm(grads)}
  if queue is not None:
    q, rows = queue["queue"], queue["queue_rows"]
    n = z_globals[0].shape[0]
    filled = jnp.stack([jnp.concatenate([jax.lax.stop_gradient(z_globals[i]), q[i, :-n]], axis=0) for i in range(2)])
    fill = state.step >= queue_start_step
    metrics["queue_in_use"] = (rows >= q.shape[1]).astype(jnp.float32)
    new_state = new_state.replace(extra={
        "queue": jnp.where(fill, filled, q),
        "queue_rows": jnp.where(fill, jnp.minimum(rows + n, q.shape[1]), rows).astype(jnp.int32)})
  # How many prototypes some example of the batch is assigned to (its largest code): near 1 is collapse.
  used = jnp.zeros((codes[0].shape[1],), jnp.float32).at[jnp.argmax(codes[0], axis=1)].set(1.0)
  metrics["prototypes_used"] = jnp.mean(used)
  return new_state, metrics | base.pairing_metrics(batch)


@register
class SwAV(base.Method):
  name = "swav"
  config_group = "swav"
  supports_local_crops = True

  def default_config(self) -> dict:
    return dict(settings.METHOD_DEFAULTS[self.config_group])

  def validate(self, config) -> None:
    super().validate(config)
    s = config.swav
    for key in ("temperature", "epsilon"):
      if not float(s[key]) > 0.0:
        raise UserError(f"swav.{key}={s[key]} must be > 0 (the paper: temperature 0.1, epsilon 0.05)")
    for key in ("num_prototypes", "projector_hidden", "sinkhorn_iterations"):
      if int(s[key]) < 1:
        raise UserError(f"swav.{key}={s[key]} must be >= 1 (the paper: 3000 prototypes, 2048 hidden, 3 iterations)")
    for key in ("freeze_prototypes_steps", "queue_length", "queue_start_step"):
      if int(s[key]) < 0:
        raise UserError(f"swav.{key}={s[key]} must be >= 0")
    q, b = int(s.queue_length), int(config.train.batch_size)
    if q and q % b:
      raise UserError(f"swav.queue_length={q} is not a multiple of train.batch_size={b}: the queue takes whole "
                      f"batches; use {max(q // b, 1) * b}")

  def build_model(self, config):
    return swav_from_config(config.model, projector_hidden=int(config.swav.projector_hidden),
                            num_prototypes=int(config.swav.num_prototypes))

  def init_extra(self, config, variables, rng):
    del variables, rng
    q = int(config.swav.queue_length)
    if not q:
      return None
    return {"queue": jnp.zeros((2, q, int(config.model.head_dim)), jnp.float32), "queue_rows": jnp.int32(0)}

  def train_step(self, config):
    s = config.swav
    return functools.partial(train_step, temperature=float(s.temperature), epsilon=float(s.epsilon),
                             iterations=int(s.sinkhorn_iterations),
                             freeze_prototypes_steps=int(s.freeze_prototypes_steps),
                             queue_start_step=int(s.queue_start_step))
