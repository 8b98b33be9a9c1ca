"""Optimisers and learning-rate schedules, built from optax.

LARS as in SimCLR: momentum 0.9, trust coefficient 0.001, weight decay; biases and batch-norm
parameters (every parameter with fewer than 2 dimensions) are excluded from both the weight
decay and the trust ratio. Learning rate = base_lr * batch/256 ('linear') or
base_lr * sqrt(batch) ('sqrt'), linear warm-up then cosine decay to zero.
"""
import math

import jax
import optax


def scaled_learning_rate(base_lr: float, batch_size: int, scaling: str) -> float:
  if scaling == "linear":
    return base_lr * batch_size / 256.0
  if scaling == "sqrt":
    return base_lr * math.sqrt(batch_size)
  if scaling == "none":
    return base_lr
  raise ValueError(f"optim.lr_scaling={scaling!r}: expected 'linear', 'sqrt' or 'none'")


def learning_rate_schedule(optim_cfg, batch_size: int, num_steps: int) -> optax.Schedule:
  peak = scaled_learning_rate(optim_cfg.base_lr, batch_size, optim_cfg.lr_scaling)
  warmup = int(optim_cfg.warmup_steps)
  if not 0 <= warmup < max(num_steps, 1):
    raise ValueError(f"optim.warmup_steps={warmup} must be in [0, train.num_steps={num_steps})")
  if optim_cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=max(num_steps, 1), end_value=0.0)
  if optim_cfg.schedule == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)],
                                [warmup]) if warmup else optax.constant_schedule(peak)
  if optim_cfg.schedule == "piecewise":  # e.g. MedMNIST v2: x0.1 at 50% and 75% of training
    fractions = tuple(float(f) for f in optim_cfg.decay_at)
    if any(not 0.0 < f < 1.0 for f in fractions) or list(fractions) != sorted(fractions):
      raise ValueError(f"optim.decay_at={fractions}: expected increasing fractions of the steps in (0, 1)")
    # Boundaries in steps after the warm-up (join_schedules restarts the count there).
    bounds = {max(1, int(round(f * num_steps)) - warmup): float(optim_cfg.decay_factor) for f in fractions}
    after = optax.piecewise_constant_schedule(peak, bounds)
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup]) if warmup else after
  raise ValueError(f"optim.schedule={optim_cfg.schedule!r}: expected 'cosine', 'constant' or 'piecewise'")


def decay_mask(params):
  """True for weights that get weight decay / trust ratio: kernels, not biases or BN params."""
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def make_optimizer(optim_cfg, batch_size: int, num_steps: int) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(optim_cfg, batch_size, num_steps)
  if optim_cfg.name == "lars":
    return optax.lars(schedule, weight_decay=optim_cfg.weight_decay, weight_decay_mask=decay_mask,
                      trust_coefficient=optim_cfg.trust_coefficient, trust_ratio_mask=decay_mask,
                      momentum=optim_cfg.momentum)
  if optim_cfg.name == "sgd":
    return optax.chain(optax.add_decayed_weights(optim_cfg.weight_decay, mask=decay_mask),
                       optax.sgd(schedule, momentum=optim_cfg.momentum))
  if optim_cfg.name == "adam":
    return optax.adamw(schedule, weight_decay=optim_cfg.weight_decay, mask=decay_mask)
  raise ValueError(f"optim.name={optim_cfg.name!r}: expected 'lars', 'sgd' or 'adam'")
