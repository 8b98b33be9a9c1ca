"""A `jax.profiler` trace of chosen training steps, written into the workdir.

`train.profile_steps = (N, M)` traces steps N to M (counted from 1, as the logs count them): the
trace starts just before step N is dispatched and stops once step M's results are ready, and is
written under `<workdir>/profile/` (TensorBoard's profile plugin reads it: `tensorboard --logdir
<workdir>`). (0, 0) turns it off. Steps before N are the place for compilation and warm-up, so
N = 10, M = 15 or so shows the steady state. Every process writes its own trace (one per host).
The only host sync it adds is waiting for step M, once.
"""
import os

from absl import logging
import jax

from medssl_jax.errors import UserError


class StepProfiler:
  def __init__(self, steps, logdir: str):
    first, last = (int(s) for s in steps)
    if (first, last) != (0, 0) and not 1 <= first <= last:
      raise UserError(f"train.profile_steps={tuple(steps)}: expected (first, last) with 1 <= first <= last, "
                      f"or (0, 0) for no trace")
    self.first, self.last, self.logdir, self.active = first, last, logdir, False

  def before_step(self, step: int) -> None:
    """Call before dispatching step `step` (1-based)."""
    if self.first and step == self.first and not self.active:
      os.makedirs(self.logdir, exist_ok=True)
      jax.profiler.start_trace(self.logdir)
      self.active = True
      logging.info("Profiling steps %d-%d into %s", self.first, self.last, self.logdir)

  def after_step(self, step: int, outputs) -> None:
    """Call after dispatching step `step` with its outputs; stops the trace after the last step."""
    if self.active and step >= self.last:
      jax.block_until_ready(outputs)
      self.stop()

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
