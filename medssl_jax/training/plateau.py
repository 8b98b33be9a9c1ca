"""Truong et al.'s epoch-level schedule: reduce the lr on a validation plateau, stop early.

Truong et al. 2021 (papers/truong2021_ssl_transfer_dvme.txt, Sec. 5.2; PROTOCOLS.md section 2):
Adam from lr 1e-3 (or down to 1e-4), the lr multiplied by 0.1 when the validation loss has not
improved for 5 epochs (ReduceLROnPlateau, factor 0.1, patience 5), early stopping after 10 epochs
without improvement, and the model that was best on validation is the one tested.

The lr factor comes from `optax.contrib.reduce_on_plateau` (optax 0.2.8), stepped on the host once
per epoch with that epoch's validation value, separately from the per-batch optimiser: its `scale`
times the base lr is the lr of the next epoch (for example through
`optax.inject_hyperparams(optax.adam)`, `opt_state.hyperparams["learning_rate"] = lr`; Adam's
update is linear in the lr, so this equals scaling Adam's updates).

Semantics (optax's code, restated; tests/training/test_plateau.py checks them on scripted curves):

* Improvement: in `mode="min"` a value v improves on the best b when v < (1 - rtol) * b - atol
  (float32, as optax keeps its state). The first value always improves (b starts at +inf).
  Defaults rtol=1e-4, atol=0 are PyTorch's default threshold (1e-4, relative).
* `mode="max"` (e.g. AUC) negates the value, so the rule is -v < (1 - rtol) * (-b) - atol, i.e.
  v > (1 - rtol) * b + atol: a relative tolerance would then accept values *below* the best as
  improvements, so max mode requires rtol=0 and uses an absolute atol (default 1e-4).
* lr: each non-improving epoch adds 1 to a counter, an improving one resets it; when the counter
  reaches `lr_patience` the scale is multiplied by `factor` on that epoch and the counter restarts,
  so with patience 5 the 5th consecutive non-improving epoch cuts the lr, and a still flat curve
  cuts it again 5 epochs later. The best value is never reset.
  PyTorch's ReduceLROnPlateau(patience=p) cuts when the count *exceeds* p, on the (p+1)-th bad
  epoch; `lr_patience=6` here reproduces PyTorch's patience=5 (the paper's code was PyTorch,
  Listing 1, but its scheduler code is not published).
* Early stopping: the same improvement rule; `should_stop` once `stop_patience` consecutive epochs
  have not improved (with 10, on the 10th). `best_epoch` is the epoch whose model to keep.
"""
import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _tolerances(mode: str, rtol: float | None, atol: float | None) -> tuple[float, float]:
  if mode == "min":
    return (1e-4 if rtol is None else rtol), (0.0 if atol is None else atol)
  if mode == "max":
    rtol = 0.0 if rtol is None else rtol
    if rtol:
      raise ValueError("mode='max' negates the value, and a relative tolerance on a negated value "
                       "counts slightly worse values as improvements: use rtol=0 and atol")
    return 0.0, (1e-4 if atol is None else atol)
  raise ValueError(f"mode={mode!r}: expected 'min' (losses) or 'max' (AUC, accuracy, kappa)")


def signed(value: float, mode: str) -> np.float32:
  """The value as a quantity to minimise (float32, as optax's plateau state stores it)."""
  return np.float32(value) if mode == "min" else -np.float32(value)


def is_improvement(signed_value, signed_best, rtol: float, atol: float) -> bool:
  """optax's rule on minimised values: v < (1 - rtol) * best - atol; best = +inf (no value yet) -> True."""
  return bool(np.float32(signed_value) < (1 - rtol) * np.float32(signed_best) - atol)


def plateau_transform(factor: float = 0.1, patience: int = 5, rtol: float = 1e-4, atol: float = 0.0,
                      cooldown: int = 0, min_scale: float = 0.0):
  """optax's reduce-on-plateau for one value per epoch (accumulation_size=1)."""
  return optax.contrib.reduce_on_plateau(factor=factor, patience=patience, rtol=rtol, atol=atol,
                                         cooldown=cooldown, accumulation_size=1, min_scale=min_scale)


def plateau_init(transform):
  return transform.init(jnp.zeros((), jnp.float32))


def plateau_step(transform, state, signed_value):
  """Feed one epoch's (minimised) validation value; returns the new optax plateau state."""
  _, state = transform.update(jnp.zeros((), jnp.float32), state, value=jnp.float32(signed_value))
  return state


@dataclasses.dataclass
class EarlyStopping:
  """Host-side early stopping on one validation value per epoch (rule in the module docstring)."""
  patience: int = 10
  mode: str = "min"
  rtol: float | None = None
  atol: float | None = None
  best: float = float("nan")          # in the caller's units (not negated); NaN before any value
  best_epoch: int = -1
  epochs_since_improvement: int = 0
  epoch: int = -1                     # the last epoch seen

  def __post_init__(self):
    self.rtol, self.atol = _tolerances(self.mode, self.rtol, self.atol)

  def update(self, value: float, epoch: int | None = None) -> bool:
    """Record one epoch's value (epochs count from 0 unless given); returns whether it improved."""
    self.epoch = self.epoch + 1 if epoch is None else int(epoch)
    best = np.inf if self.best_epoch < 0 else signed(self.best, self.mode)
    improved = is_improvement(signed(value, self.mode), best, self.rtol, self.atol)
    if improved:
      self.best, self.best_epoch, self.epochs_since_improvement = float(value), self.epoch, 0
    else:
      self.epochs_since_improvement += 1
    return improved

  @property
  def should_stop(self) -> bool:
    return self.epochs_since_improvement >= self.patience


class EpochDecision(NamedTuple):
  epoch: int
  value: float
  improved: bool            # this epoch is the new best: save it as the checkpoint to test
  best: float
  best_epoch: int
  lr_scale: float           # factor for the next epoch's lr
  learning_rate: float      # base_lr * lr_scale
  lr_reduced: bool          # this epoch cut the lr
  should_stop: bool


@dataclasses.dataclass
class PlateauSchedule:
  """Steps optax's plateau scale and `EarlyStopping` from one validation value per epoch.

  Defaults are Truong et al.'s: lr 1e-3, factor 0.1, lr patience 5, stop patience 10, on the
  validation loss (`mode="min"`). The plateau state is a plain optax state (`plateau_state`), so it
  can be checkpointed with the rest of training.
  """
  base_lr: float = 1e-3
  mode: str = "min"
  factor: float = 0.1
  lr_patience: int = 5
  stop_patience: int = 10
  rtol: float | None = None
  atol: float | None = None
  cooldown: int = 0
  min_scale: float = 0.0
  plateau_state: Any = None
  stopping: EarlyStopping | None = None

  def __post_init__(self):
    self.rtol, self.atol = _tolerances(self.mode, self.rtol, self.atol)
    self.transform = plateau_transform(self.factor, self.lr_patience, self.rtol, self.atol,
                                       self.cooldown, self.min_scale)
    self._step = jax.jit(functools.partial(plateau_step, self.transform))
    if self.plateau_state is None:
      self.plateau_state = plateau_init(self.transform)
    if self.stopping is None:
      self.stopping = EarlyStopping(self.stop_patience, self.mode, self.rtol, self.atol)

  @property
  def lr_scale(self) -> float:
    return float(self.plateau_state.scale)

  @property
  def learning_rate(self) -> float:
    return self.base_lr * self.lr_scale

  def step(self, value: float, epoch: int | None = None) -> EpochDecision:
    before = self.lr_scale
    self.plateau_state = self._step(self.plateau_state, signed(value, self.mode))
    improved = self.stopping.update(value, epoch)
    s = self.stopping
    return EpochDecision(s.epoch, float(value), improved, s.best, s.best_epoch, self.lr_scale,
                         self.learning_rate, self.lr_scale < before, s.should_stop)


# ---- the plateau scale inside a per-step optimiser -------------------------------------------------
# The fine-tuning loops (finetune.py, finetune_segmentation.py) validate every `finetune.eval_every`
# steps. Their optimiser is `with_plateau(tx, transform)`: `tx`'s updates times the scale of an optax
# plateau state kept in the optimiser state, so it is sharded, checkpointed and restored with the
# rest of training and a resumed run continues with the lr it had. The per-step update only reads
# the scale; `feed_plateau` steps the plateau state with one validation value (from the host, once
# per validation). Scaling the updates of Adam(W) or SGD scales their lr (both are linear in it;
# AdamW's decay term is multiplied by the lr too).


class PlateauScaledState(NamedTuple):
  inner: Any          # the wrapped optimiser's state
  plateau: Any        # optax's ReduceLROnPlateauState (scale, best value, counters)


def with_plateau(tx: optax.GradientTransformation, transform) -> optax.GradientTransformation:
  """`tx` whose updates are multiplied by the plateau state's `scale` (1 until a plateau)."""

  def init(params):
    return PlateauScaledState(tx.init(params), transform.init(params))

  def update(updates, state, params=None):
    updates, inner = tx.update(updates, state.inner, params)
    scale = state.plateau.scale
    updates = jax.tree_util.tree_map(lambda u: u * scale.astype(u.dtype), updates)
    return updates, PlateauScaledState(inner, state.plateau)

  return optax.GradientTransformation(init, update)


def feed_plateau(opt_state: PlateauScaledState, transform, signed_value) -> PlateauScaledState:
  """The optimiser state after one validation value (minimised: `signed`) stepped its plateau."""
  plateau = plateau_step(transform, opt_state.plateau, signed_value)
  return PlateauScaledState(opt_state.inner, plateau)
