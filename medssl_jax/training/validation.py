"""Validation during fine-tuning: keep the best state, reduce the lr on a plateau, stop early.

`loop.run`'s `on_log` hook for the fine-tuning loops (classification in finetune.py, segmentation
in finetune_segmentation.py; each gives the function that scores a state). Every `every` steps
and at the last one it scores the state on the validation split (host syncs only there), writes
`val/<metric>` scalars and val_history.json, and keeps the state with the highest `metric` in
checkpoints_best/ (one kept; the earliest step on a tie). Optionally (Hosseinzadeh Taher et al.
2021, App. "Training parameters": ReduceLROnPlateau for classification, "early-stop mechanism
using the 10% of the training data as the validation set"; Truong et al. 2021 Sec. 5.2):

* **ReduceLROnPlateau** (`plateau_factor` > 0): the lr is multiplied by `plateau_factor` when
  `plateau_patience` validations in a row have not improved on the best `metric` (optax's
  `reduce_on_plateau`, stepped with each validation value; its state lives in the optimiser state,
  `plateau.with_plateau`, so a resumed run has the lr it had). Patience counts validations, one
  every `every` steps (the papers count epochs: set `finetune.eval_every` to an epoch's steps for that).
* **Early stopping** (`stop_patience` > 0): training ends after `stop_patience` validations in a
  row without improvement; the best state is the one tested, as without early stopping.

For the plateau and the stopping counts, "improvement" is the rule of `plateau.py`: a value
better than the best by more than 1e-4 (absolute; the first value always improves), better being
higher for every metric but the validation loss (`loss`, lower is better: Truong et al. monitor it). The tested state is the one with the highest value,
by any margin (`best_step`), so it may be a validation that did not reset the counts. On resume,
the history up to the restored step is read back, so the stopping count continues.
"""
import json
import os
from typing import Callable

from absl import logging
from etils import epath
import jax
import numpy as np

from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training import loop
from medssl_jax.training import plateau as plateau_lib
from medssl_jax.errors import UserError

LOWER_IS_BETTER = ("loss",)   # the validation cross-entropy; every other metric (AUC, top-1, kappa, Dice) is higher-is-better
ATOL = 1e-4                   # improvement margin (plateau.py, max mode)


def mode_of(metric: str) -> str:
  """'min' for a metric where lower is better (the validation loss), else 'max'."""
  return "min" if metric in LOWER_IS_BETTER else "max"


def best_step(history: list, metric: str):
  """Step of the best finite `metric` in [{"step", metric, ...}] (highest; lowest for a loss); the
  earliest on a tie; None if none."""
  sign = -1.0 if mode_of(metric) == "min" else 1.0
  values = [(sign * h[metric], -h["step"]) for h in history if np.isfinite(h[metric])]
  return -max(values)[1] if values else None


def plateau_transform(factor: float, patience: int):
  """The optax plateau transformation of the fine-tuning loops (max mode, absolute margin)."""
  return plateau_lib.plateau_transform(factor=factor, patience=patience, rtol=0.0, atol=ATOL)


def check_settings(finetune_cfg) -> None:
  """One-line errors for plateau / early-stopping settings that cannot work (raised as UserError)."""
  factor, lr_pat = float(finetune_cfg.get("plateau_factor", 0.0)), int(finetune_cfg.get("plateau_patience", 5))
  stop = int(finetune_cfg.get("early_stop_patience", 0))
  if factor and not 0.0 < factor < 1.0:
    raise UserError(f"finetune.plateau_factor={factor:g} must be in (0, 1) (the lr is multiplied by it), or 0 for "
                    f"no ReduceLROnPlateau")
  if factor and lr_pat < 1:
    raise UserError(f"finetune.plateau_patience={lr_pat} must be >= 1 (validations without improvement)")
  if stop < 0:
    raise UserError(f"finetune.early_stop_patience={stop} must be >= 0 (0: no early stopping)")
  periodic = int(finetune_cfg.eval_every) or float(finetune_cfg.get("eval_every_epochs", 0.0))
  if (factor or stop) and not periodic:
    raise UserError(f"finetune.plateau_factor={factor:g} / finetune.early_stop_patience={stop} act on periodic "
                    f"validation: set finetune.eval_every (or eval_every_epochs) > 0 and finetune.val_split, or set "
                    f"both to 0")


def optimizer(tx, finetune_cfg):
  """`tx`, with the plateau scale when `finetune.plateau_factor` > 0 (else unchanged)."""
  factor = float(finetune_cfg.get("plateau_factor", 0.0))
  if not factor:
    return tx
  return plateau_lib.with_plateau(tx, plateau_transform(factor, int(finetune_cfg.get("plateau_patience", 5))))


def lr_scale(state) -> float:
  """The plateau scale in a state's optimiser state (1.0 without a plateau)."""
  opt = state.opt_state
  return float(opt.plateau.scale) if isinstance(opt, plateau_lib.PlateauScaledState) else 1.0


def from_config(finetune_cfg, score: Callable, metric: str, num_steps: int, writer, workdir: str, start_step: int,
                every: int, min_steps: int = 0):
  """The hook, every `every` steps, with the finetune.* settings (plateau_factor, plateau_patience,
  early_stop_patience); early stopping not before `min_steps`."""
  return PeriodicValidation(score=score, metric=metric, every=int(every), num_steps=num_steps,
                            writer=writer, workdir=workdir, start_step=start_step, min_steps=int(min_steps),
                            plateau_factor=float(finetune_cfg.get("plateau_factor", 0.0)),
                            plateau_patience=int(finetune_cfg.get("plateau_patience", 5)),
                            stop_patience=int(finetune_cfg.get("early_stop_patience", 0)))


class PeriodicValidation:
  """The hook. `score(state) -> {metric: value}` computes the validation metrics of a state."""

  def __init__(self, *, score: Callable, metric: str, every: int, num_steps: int, writer, workdir: str,
               start_step: int, plateau_factor: float = 0.0, plateau_patience: int = 5, stop_patience: int = 0,
               min_steps: int = 0):
    self.score, self.metric, self.every, self.num_steps, self.writer = score, metric, int(every), num_steps, writer
    self.min_steps = int(min_steps)
    self.mode = mode_of(metric)
    self.stop_patience, self.plateau_patience = int(stop_patience), int(plateau_patience)
    self.plateau = plateau_transform(plateau_factor, plateau_patience) if plateau_factor else None
    self._feed = (jax.jit(lambda opt, v: plateau_lib.feed_plateau(opt, self.plateau, v))
                  if self.plateau is not None else None)
    self.path = os.path.join(workdir, "val_history.json")
    self.ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints_best"), keep=1)
    self.history = self._resume(start_step)
    self.scale = 1.0
    self.stopped_at = None

  def _resume(self, start_step):
    """The history up to the restored step; a best state saved after it (lost on a crash) is dropped."""
    history = []
    if epath.Path(self.path).is_file():
      saved = json.loads(epath.Path(self.path).read_text())  # a metric that was NaN is null in the file
      history = [{k: float("nan") if v is None else v for k, v in h.items()} for h in saved if h["step"] <= start_step]
    for step in self.ckpt.manager.all_steps():
      if step > start_step:
        self.ckpt.manager.delete(step)
    if history and best_step(history, self.metric) != self.ckpt.latest_step():
      logging.warning("%s: the best validation state (step %s) is not in checkpoints_best/; selection restarts "
                      "at step %d", self.path, best_step(history, self.metric), start_step)
      history = []
    return history

  def best_step(self):
    return best_step(self.history, self.metric)

  def validations_since_best(self) -> int:
    """Validations in a row, up to the last, that did not improve on the best before them (the
    history replayed through plateau.EarlyStopping's rule, so a restart continues the count)."""
    stopping = plateau_lib.EarlyStopping(patience=max(self.stop_patience, 1), mode=self.mode, atol=ATOL)
    for h in self.history:
      stopping.update(h[self.metric])
    return stopping.epochs_since_improvement

  @property
  def should_stop(self) -> bool:
    return bool(self.stop_patience) and self.validations_since_best() >= self.stop_patience

  def start(self, state):
    """Reads the restored state's lr scale (for the log); returns whether training already stopped
    early (a run that stopped, then crashed before writing its results)."""
    self.scale = lr_scale(state)
    if self.should_stop and self.history[-1]["step"] < self.num_steps:  # not a run that ran its length
      self.stopped_at = self.history[-1]["step"]
    return self.stopped_at is not None

  def __call__(self, step: int, state):
    if step % self.every and step != self.num_steps:
      return None
    values = {k: float(v) for k, v in self.score(state).items()}
    value = values[self.metric]
    entry = {"step": int(step), **values}
    if self.plateau is not None:  # NaN (no positives in a split) counts as no improvement
      # The plateau transform minimises what it is fed: the metric, negated unless lower is better.
      signed = (np.float32(value) if self.mode == "min" else -np.float32(value)) if np.isfinite(value) else np.float32(np.inf)
      state = state.replace(opt_state=self._feed(state.opt_state, signed))
      before, self.scale = self.scale, lr_scale(state)
      entry["lr_scale"] = self.scale
      if self.scale < before:
        logging.info("step %d  validation %s has not improved for %d validations: lr x %g (scale %g)", step,
                     self.metric, self.plateau_patience, self.scale / before, self.scale)
    self.history.append(entry)
    self.writer.write_scalars(step, {f"val/{k}": v for k, v in values.items()})
    if self.best_step() == step:  # a new best (a later tie is not)
      self.ckpt.save(step, state)
    loop.write_json(self.path, self.history)
    best = self.best_step()
    logging.info("step %d  validation %s %.4f (best %.4f at step %s)", step, self.metric, value,
                 next((h[self.metric] for h in self.history if h["step"] == best), float("nan")), best)
    stop = self.should_stop and self.min_steps <= step < self.num_steps
    if stop:
      self.stopped_at = int(step)
      logging.info("step %d  early stop: %d validations without improvement on %s (best at step %s)", step,
                   self.stop_patience, self.metric, best)
    return loop.HookResult(state=state, stop=stop)

  def best_state(self, state):
    """`state` with the weights of the best validation step (or unchanged if none was finite)."""
    self.ckpt.wait()
    step = self.best_step()
    return state if step is None else self.ckpt.restore(state, step)

  def summary(self) -> dict:
    """results.json entries: the history, and the plateau / early-stopping outcome."""
    out = {"val_history": self.history, "early_stop_patience": self.stop_patience,
           "stopped_early": self.stopped_at is not None, "early_stop_step": self.stopped_at}
    if self.plateau is not None:
      scales = [1.0] + [h["lr_scale"] for h in self.history if "lr_scale" in h]
      out.update(lr_reduced_at=[h["step"] for h, prev in zip(
                     [h for h in self.history if "lr_scale" in h], scales) if h["lr_scale"] < prev],
                 final_lr_scale=scales[-1])
    return out

  def close(self):
    self.ckpt.close()
