"""MoCo v2 (Chen, Fan, Girshick & He 2020, "Improved baselines with momentum contrastive learning";
He et al. 2020, MoCo), as used by MoCo-CXR (Sowrirajan et al. 2021).

Query encoder + 2-layer MLP head (Linear-ReLU-Linear to 128-d, with biases, no batch norm: the
MoCo v2 head) trained by gradient; key encoder = an exponential moving average of the query
network (momentum m = 0.999), never trained by gradient. Loss: InfoNCE of each query against
its key (the other view) and the K keys of a queue, temperature 0.2 (`moco.temperature`).
After each step the global batch's keys are enqueued and the oldest dropped. Defaults from
PROTOCOLS.md ("MoCo v2 defaults": queue 65,536, m 0.999, T 0.2, 128-d, MLP head, SGD lr 0.03 x
batch/256, weight decay 1e-4, momentum 0.9, cosine; MoCo-CXR used a queue of 24,576).

Order within a step, as in the MoCo reference: (1) momentum update of the key encoder from the
current query weights, (2) keys of view b by the key encoder, (3) InfoNCE of the queries of
view a and its gradient step, (4) enqueue the keys.

Everything runs on global arrays under `jax.jit` over the mesh, so the queue holds keys of the
GLOBAL batch and a step on 8 devices equals the step on 1 device.

Batch norm and the 'leak' MoCo guards against (`moco.bn`):
- 'shuffle' (MoCo's shuffled BN): the batch is split into `moco.bn_groups` groups, each
  normalised with its own statistics, as each GPU does in the reference. The query encoder
  sees the groups in batch order; the key encoder sees a random permutation of the batch
  (drawn per step from the seed, such that no sample stays in its own group), so the key
  statistics of a group come from other samples than its queries', and the keys are put back in
  order after the encoder. Groups are a
  config number, not the device count, so results do not depend on how many devices run.
  Running statistics: the mean over the groups of each group's moving average.
- 'global': both encoders normalise over the global batch (like SyncBN); no shuffle.
"""
import functools

import jax
import jax.numpy as jnp

from medssl_jax import settings
from medssl_jax.errors import UserError
from medssl_jax.losses import info_nce_with_accuracy
from medssl_jax.methods import base
from medssl_jax.methods import momentum
from medssl_jax.methods.registry import register
from medssl_jax.models import from_config

BN_MODES = ("shuffle", "global")


def encode(apply_fn, variables, x, *, bn: str, groups: int):
  """(projections, new BN statistics) of `x`: per group ('shuffle') or over the whole batch."""
  if bn == "shuffle":
    (_, z), updates = momentum.apply_in_bn_groups(apply_fn, variables, x, num_groups=groups, train=True)
  else:
    (_, z), updates = apply_fn(variables, x, train=True, mutable=["batch_stats"])
  return z, updates["batch_stats"]


def train_step(state, batch: dict, *, temperature: float, ema: float, bn: str, groups: int, seed: int):
  """One MoCo v2 step on a global batch {'view_a' (queries), 'view_b' (keys)}."""
  extra = state.extra
  # (1) key encoder <- m * key encoder + (1 - m) * query network (params; BN statistics are the
  # key encoder's own, updated by its forward pass below).
  target_params = momentum.ema_update(extra["target_params"], state.params, ema)
  # (2) keys, without gradient; shuffled BN: encode a permutation, then restore the order.
  xk = batch["view_b"]
  target = {"params": target_params, "batch_stats": extra["target_batch_stats"]}
  if bn == "shuffle":
    perm, inverse = momentum.shuffle_indices(
        jax.random.fold_in(jax.random.key(seed), state.step), xk.shape[0], groups)  # no sample stays in its group
    k, target_stats = encode(state.apply_fn, target, xk[perm], bn=bn, groups=groups)
    k = k[inverse]
  else:
    k, target_stats = encode(state.apply_fn, target, xk, bn=bn, groups=groups)
  k = jax.lax.stop_gradient(k)

  # (3) queries and the InfoNCE step.
  def loss_fn(params):
    q, stats = encode(state.apply_fn, {"params": params, "batch_stats": state.batch_stats}, batch["view_a"],
                      bn=bn, groups=groups)
    loss, acc = info_nce_with_accuracy(q, k, extra["queue"], temperature=temperature)
    return loss, (acc, stats)

  (loss, (acc, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads, stats)
  # (4) enqueue the global batch's keys (normalised), dropping the oldest.
  queue, ptr = momentum.enqueue(extra["queue"], extra["queue_ptr"], k)
  new_extra = {"target_params": target_params, "target_batch_stats": target_stats, "queue": queue,
               "queue_ptr": ptr}
  metrics = {"loss": loss, "contrastive_acc": acc, "grad_norm": base.global_norm(grads)}
  return new_state.replace(extra=new_extra), metrics | base.pairing_metrics(batch)


@register
class MoCoV2(base.Method):
  name = "moco_v2"
  config_group = "moco"

  def default_config(self) -> dict:
    return dict(settings.METHOD_DEFAULTS[self.config_group])

  def validate(self, config) -> None:
    super().validate(config)
    m, b = config.moco, int(config.train.batch_size)
    if m.bn not in BN_MODES:
      raise UserError(f"moco.bn={m.bn!r}: expected one of {BN_MODES}")
    if m.bn == "shuffle" and (m.bn_groups < 1 or b % m.bn_groups):
      raise UserError(f"moco.bn_groups={m.bn_groups} must divide train.batch_size={b} (shuffled BN splits "
                      f"the batch into that many groups); change one of them or set moco.bn='global'")
    if m.bn == "shuffle" and m.bn_groups < 2:
      raise UserError("moco.bn='shuffle' needs moco.bn_groups >= 2 (with one group the shuffle changes nothing); "
                      "use moco.bn='global' for one set of statistics")
    if m.queue_size < b or m.queue_size % b:
      raise UserError(f"moco.queue_size={m.queue_size} must be a multiple of train.batch_size={b} (each step "
                      f"replaces one batch of keys, as in the MoCo reference)")
    if not 0.0 <= m.momentum < 1.0:
      raise UserError(f"moco.momentum={m.momentum} must be in [0, 1)")

  def build_model(self, config):
    return from_config(config.model, head_batch_norm=False)

  def init_extra(self, config, variables, rng):
    queue, ptr = momentum.init_queue(int(config.moco.queue_size), int(config.model.head_dim), rng)
    copy = lambda t: jax.tree_util.tree_map(jnp.array, t)  # noqa: E731 - key encoder starts equal
    return {"target_params": copy(variables["params"]), "target_batch_stats": copy(variables["batch_stats"]),
            "queue": queue, "queue_ptr": ptr}

  def train_step(self, config):
    m = config.moco
    return functools.partial(train_step, temperature=float(m.temperature), ema=float(m.momentum),
                             bn=m.bn, groups=int(m.bn_groups), seed=int(config.seed))
