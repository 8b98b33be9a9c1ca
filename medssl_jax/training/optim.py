"""Optimisers and learning-rate schedules, built from optax.

LARS as in SimCLR: momentum 0.9, trust coefficient 0.001, weight decay; biases and batch-norm
parameters (every parameter with fewer than 2 dimensions) are excluded from both the weight
decay and the trust ratio. Learning rate = base_lr * batch/256 ('linear') or
base_lr * sqrt(batch) ('sqrt'), linear warm-up then cosine decay to zero.

A LARS base learning rate only means something with its scaling rule: 0.3 under 'linear' and
0.075 under 'sqrt' give the same peak at SimCLR's batch of 4096 (4.8), but 0.3 under 'sqrt' is
4x the reference's square-root rate at every batch (3.39 instead of 0.85 at batch 128).
`check_lr_pairing` (called by `make_optimizer`) refuses a LARS base rate outside the values the
SimCLR reference and the Azizi et al. runs built on it pair with its rule (`SIMCLR_BASE_LR`);
`lr_scaling='none'` takes base_lr as the peak itself and is not checked.
"""
import math

import jax
import jax.numpy as jnp
import optax

from medssl_jax.errors import UserError

# Range (lowest, highest) of the LARS base learning rates used with each scaling rule by:
# - 'linear' (x batch/256): SimCLR (Chen et al. 2020) paper and run.py default 0.3, its README's
#   CIFAR-10 command 1.0 (batch 512); Azizi et al. 2021: Derm 0.3, CheXpert sweep {0.5, 1.0, 1.5},
#   MICLe 0.1 (batch 128).
# - 'sqrt' (x sqrt(batch)): 0.075, the SimCLR paper's square-root rule (0.075 x sqrt(batch)) and
#   its README's ImageNet command (the README: it trains better than 'linear' at smaller
#   batches); the reference gives no other value for this rule.
SIMCLR_BASE_LR = {"linear": (0.1, 1.5), "sqrt": (0.075, 0.075)}


def check_lr_pairing(name: str, base_lr: float, scaling: str) -> None:
  """Raises (one line) if a LARS base_lr is not one the SimCLR reference pairs with `scaling`."""
  if name != "lars" or scaling not in SIMCLR_BASE_LR:
    return
  lo, hi = SIMCLR_BASE_LR[scaling]
  if not lo * (1 - 1e-9) <= base_lr <= hi * (1 + 1e-9):
    supported = "; ".join(f"{rule}: {a:g}" + (f"-{b:g}" if b != a else "") for rule, (a, b) in SIMCLR_BASE_LR.items())
    raise ValueError(f"optim.base_lr={base_lr:g} with optim.lr_scaling={scaling!r} is not a pairing the SimCLR "
                     f"reference uses for LARS (base lr {supported}); pick a value for the rule, or give the "
                     f"peak itself with optim.lr_scaling='none'")


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


def weight_decay_schedule(optim_cfg, num_steps: int):
  """The weight decay at each step: optim.weight_decay, or with optim.weight_decay_schedule='cosine'
  a half cosine from it (step 0) to optim.weight_decay_end (the last step, num_steps - 1)."""
  start = float(optim_cfg.weight_decay)
  if optim_cfg.get("weight_decay_schedule", "constant") == "constant":
    return optax.constant_schedule(start)
  end = float(optim_cfg.weight_decay_end)
  last = max(int(num_steps) - 1, 1)
  return lambda count: end + (start - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(count, last) / last))


def _decayed_weights(optim_cfg, num_steps: int) -> optax.GradientTransformation:
  """updates + wd(step) * params on the decayed weights (`decay_mask`); a constant wd is optax's own."""
  if optim_cfg.get("weight_decay_schedule", "constant") == "constant":
    return optax.add_decayed_weights(optim_cfg.weight_decay, mask=decay_mask)
  return optax.inject_hyperparams(optax.add_decayed_weights, static_args=("mask",))(
      weight_decay=weight_decay_schedule(optim_cfg, num_steps), mask=decay_mask)


def make_optimizer(optim_cfg, batch_size: int, num_steps: int) -> optax.GradientTransformation:
  check_lr_pairing(optim_cfg.name, optim_cfg.base_lr, optim_cfg.lr_scaling)
  schedule = learning_rate_schedule(optim_cfg, batch_size, num_steps)
  if optim_cfg.name == "lars":
    if optim_cfg.get("weight_decay_schedule", "constant") != "constant":
      raise UserError("optim.weight_decay_schedule='cosine' is for optim.name='sgd' or 'adam' (LARS decays inside "
                       "its trust ratio); set optim.weight_decay_schedule='constant' with LARS")
    return optax.lars(schedule, weight_decay=optim_cfg.weight_decay, weight_decay_mask=decay_mask,
                      trust_coefficient=optim_cfg.trust_coefficient, trust_ratio_mask=decay_mask,
                      momentum=optim_cfg.momentum)
  if optim_cfg.name == "sgd":
    return optax.chain(_decayed_weights(optim_cfg, num_steps), optax.sgd(schedule, momentum=optim_cfg.momentum))
  if optim_cfg.name == "adam":
    if optim_cfg.get("weight_decay_schedule", "constant") == "constant":
      return optax.adamw(schedule, weight_decay=optim_cfg.weight_decay, mask=decay_mask)
    # optax.adamw's chain (Adam's update, the decoupled weight decay, times the lr) with the decay scheduled
    return optax.chain(optax.scale_by_adam(), _decayed_weights(optim_cfg, num_steps),
                       optax.scale_by_learning_rate(schedule))
  raise ValueError(f"optim.name={optim_cfg.name!r}: expected 'lars', 'sgd' or 'adam'")
