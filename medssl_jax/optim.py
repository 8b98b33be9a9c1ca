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
  raise ValueError(f"optim.schedule={optim_cfg.schedule!r}: expected 'cosine' or 'constant'")


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
