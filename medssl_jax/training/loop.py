"""The step loop shared by pretraining and fine-tuning.

It feeds batches to a jitted step, keeps the step's metrics on the device and fetches them once
per log interval (the only host sync), writes TensorBoard scalars with a CLU writer, prints
progress with an ETA, saves Orbax checkpoints, stops on a non-finite loss without saving it,
and saves then exits on SIGTERM (what a preempted Cloud TPU VM receives).

The input-bound signal: the loop times each `next(batches)` (the host clock only, no device sync)
and reports the share of the wall time spent blocked there, `input_wait_fraction`: per log
interval (a TensorBoard scalar and `input wait 37%` in the console line) and over the whole run
(`LoopResult.input_wait_fraction`, which results.json reports). Both leave out the first step of
an invocation (its wait holds the pipeline's start, its step the compilation), the logging after
the interval's metrics are fetched (the learning rate's first evaluation compiles), the `on_log`
hook (validation) and the last checkpoint. Near 0: the accelerator is the bottleneck; near 1: it
waits for data.
"""
import dataclasses
import signal
import time
from typing import Any, Callable, Iterator, NamedTuple

from absl import logging
import jax
import numpy as np

from medssl_jax import jsonio
from medssl_jax.errors import NonFiniteLossError
from medssl_jax.training import event_writer


# The signals that make the loop save a checkpoint and return (the run then exits errors.RESUMABLE_EXIT).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopFlag:
  """Tells the loop to save a checkpoint at the current step and return (preemption).

  One process: set by SIGTERM or SIGINT (Ctrl-C: saved like a preemption, not a traceback). Several processes: they must all stop at the same step, so JAX's
  preemption sync point decides (the distributed runtime spreads the notice to every host and
  picks the step); where that service is not running, the local SIGTERM flag is used.
  A context manager: the SIGTERM handler is this loop's only while the loop runs, and the
  previous one is back afterwards, so a SIGTERM after training (during evaluation, or between
  the runs of a study) is not swallowed by a loop that has already returned.
  """

  def __init__(self):
    self.signum = None
    self._multi = jax.process_count() > 1
    self._previous = None
    self._installed = False

  def __enter__(self):
    if not self._multi:
      self._install()
    return self

  def __exit__(self, *exc):
    # Only a handler this flag installed is undone: with several processes none is installed,
    # and "restoring" would replace whatever handler (JAX's own) was set meanwhile.
    if self._installed:
      for signum, previous in self._previous.items():
        signal.signal(signum, previous)
      self._installed, self._previous = False, None
    return False

  def _install(self):
    if not self._installed:
      self._previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
      for signum in STOP_SIGNALS:
        signal.signal(signum, self._handle)
      self._installed = True

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def should_stop(self, step: int) -> bool:
    if self._multi:
      from jax.experimental import multihost_utils
      try:
        if multihost_utils.reached_preemption_sync_point(step):
          self.signum = signal.SIGTERM
      except RuntimeError:  # preemption service not initialised: fall back to the signal
        self._multi = False
        self._install()
    return self.signum is not None


def write_json(path: str, obj) -> None:
  """JSON write by process 0, through a temporary file unique to the writer and a rename (atomic on a local disk; a
  copy and delete on GCS). Any path etils.epath understands (local, gs://). Strict JSON: a NaN or
  infinite number (an AUC of a split without positives) is written as null (the readers take the
  metric fields back as NaN, `jsonio.read_json`)."""
  if jax.process_index() == 0:
    jsonio.write_json(path, obj)


def make_writer(workdir: str):
  """TensorBoard scalars from process 0 only (the console line is printed by `run`).

  clu's asynchronous SummaryWriter where TensorFlow is installed; else a TF-free event writer.
  """
  if jax.process_index() > 0:
    return event_writer.NullWriter()
  try:
    from clu import metric_writers
    return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))
  except ImportError as e:
    try:
      writer = event_writer.EventFileScalarWriter(workdir)
    except ImportError as e2:
      logging.warning("No TensorBoard scalars (%s; %s): install tensorboard; the console log and "
                      "results.json still have the metrics", e, e2)
      return event_writer.NullWriter()
    logging.info("TensorFlow is absent (%s): TensorBoard scalars via tensorboard's own event writer", e)
    return writer


def eta(steps_left: int, waits) -> str:
  """Time left at the steady-state step rate (the first step's compilation and the validation
  hooks left out); '?' before any steady-state step has run."""
  if not waits.steps or waits.wall <= 0:
    return "?"
  return format_eta(steps_left * waits.wall / waits.steps)


def format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# The host clock of the input-wait measurement (a module name, so that a test can drive it).
_clock = time.perf_counter


class InputWait:
  """Wall time blocked in `next(batches)`, against the loop's wall time, over the steady-state steps:
  every step but the first of an invocation, outside the `on_log` hook. Host clock only."""

  def __init__(self):
    self.wait = self.wall = 0.0     # the whole run's steady state
    self.steps = 0
    self._wait_i = self._steps_i = 0  # the current log interval
    self._wall_i = 0.0
    self._mark = None               # start of the segment being timed (None: not timing)

  def start(self) -> None:
    """Starts (or resumes, after the hook) the wall clock."""
    self._mark = _clock()

  def waited(self, seconds: float) -> None:
    """One steady-state step's wait for its batch."""
    if self._mark is not None:
      self.wait += seconds
      self._wait_i += seconds
      self.steps += 1
      self._steps_i += 1

  def pause(self) -> None:
    """Stops the wall clock (before the hook); the time since `start` counts."""
    if self._mark is not None:
      dt = _clock() - self._mark
      self.wall += dt
      self._wall_i += dt
      self._mark = None

  def interval_fraction(self) -> float | None:
    """The share of the log interval's steady-state wall time spent waiting (None: no such step in
    it); starts the next interval."""
    out = min(self._wait_i / self._wall_i, 1.0) if self._steps_i and self._wall_i > 0 else None
    self._wait_i, self._wall_i, self._steps_i = 0.0, 0.0, 0
    return out

  @property
  def fraction(self) -> float | None:
    return min(self.wait / self.wall, 1.0) if self.steps and self.wall > 0 else None


@dataclasses.dataclass
class LoopResult:
  state: object
  step: int
  metrics: dict
  images_per_sec: float
  preempted: bool
  loss_history: list  # (step, mean loss over the log interval) at every log step
  stopped_early: bool = False  # the on_log hook asked to stop before num_steps (early stopping)
  # Input-bound signal over the steady-state steps (all but this invocation's first; see InputWait);
  # None when there were none (a one-step run).
  input_wait_fraction: float | None = None
  input_wait_sec: float = 0.0
  steady_steps: int = 0           # steps timed in the steady state
  steady_sec: float = 0.0         # their wall time (outside the on_log hook)


class HookResult(NamedTuple):
  """What an `on_log` hook may return: the state to go on with (e.g. with a changed lr scale in its
  optimiser state) and whether to stop now (early stopping: a checkpoint is saved, then `run` returns)."""
  state: Any
  stop: bool = False


def run(state, batches: Iterator[dict], train_step: Callable, *, start_step: int, num_steps: int,
        images_per_step: int, lr_fn, writer, ckpt, log_every: int, checkpoint_every: int,
        num_devices: int, on_log: Callable | None = None, profiler=None, hook_every: int = 0) -> LoopResult:
  """Trains from `start_step` to `num_steps` (or a preemption, or an early stop that `on_log` asks
  for: `on_log(step, state)` runs at every log step, and every `hook_every` steps if > 0 (a log
  step too: validation once per epoch whatever train.log_every is), and returns None or a
  `HookResult`, whose state replaces the loop's). The loop owns `batches`: it is
  closed when the loop returns or fails (its host pipeline stops). On a failure the checkpoint
  being written is completed and the checkpointer and writer closed before the error goes on, so
  that no background thread outlives the run."""
  try:
    with StopFlag() as stop:
      out = _run(state, batches, train_step, stop, start_step=start_step, num_steps=num_steps,
                 images_per_step=images_per_step, lr_fn=lr_fn, writer=writer, ckpt=ckpt, log_every=log_every,
                 checkpoint_every=checkpoint_every, num_devices=num_devices, on_log=on_log,
                 profiler=profiler, hook_every=hook_every)
  except BaseException:
    if profiler is not None:
      close_quietly(profiler.stop, "the profiler trace")
    close_quietly(getattr(batches, "close", None), "the input pipeline")
    close_quietly(ckpt.close, "the checkpointer (it waits for the checkpoint being written)")
    close_quietly(getattr(writer, "close", None), "the metric writer")
    raise
  if profiler is not None:
    profiler.stop()  # the run ended before the last profiled step
  if hasattr(batches, "close"):
    batches.close()
  return out


def close_quietly(close: Callable | None, what: str) -> None:
  """Calls `close()` while another error is on its way: a failure here is logged, not raised,
  so that the first error is the one reported."""
  if close is None:
    return
  try:
    close()
  except Exception as e:  # noqa: BLE001 -- the error being handled matters more
    logging.warning("while stopping after an error, closing %s failed: %s: %s", what, type(e).__name__, e)


def _run(state, batches, train_step, stop, *, start_step, num_steps, images_per_step, lr_fn, writer, ckpt,
         log_every, checkpoint_every, num_devices, on_log, profiler=None, hook_every=0) -> LoopResult:
  pending, metrics, history = [], {}, []
  t_log, step_log, images_per_sec = time.time(), start_step, float("nan")
  step = start_step
  waits = InputWait()

  def result(**kw) -> LoopResult:
    waits.pause()
    return LoopResult(state, step, metrics, images_per_sec, loss_history=history,
                      input_wait_fraction=waits.fraction, input_wait_sec=waits.wait, steady_steps=waits.steps,
                      steady_sec=waits.wall, **kw)

  while step < num_steps:
    if profiler is not None:
      profiler.before_step(step + 1)
    t_next = _clock()
    batch = next(batches)
    waits.waited(_clock() - t_next)  # counted from the second step on (the clock starts after the first)
    state, m = train_step(state, batch)
    del batch
    pending.append(m)
    step += 1
    if step == start_step + 1:
      # The steady state starts once the first step has run (its compilation, the pipeline's start and
      # the step itself stay out): the one wait on the device of the loop outside its log steps.
      jax.block_until_ready(m)
      logging.info("step %d: the first batch, the step's compilation and the step took %.1f s; training", step,
                   time.time() - t_log)
      waits.start()
    if profiler is not None:
      profiler.after_step(step, m)
    preempted = stop.should_stop(step)
    save = step == num_steps or step % checkpoint_every == 0 or preempted
    if save or step % log_every == 0 or (hook_every and step % hook_every == 0):
      host = jax.device_get(pending)  # waits for the interval's steps: their time is the interval's
      waits.pause()  # the interval's wall time ends here; logging and the hook (validation) are left out
      pending = []
      losses = np.array([h["loss"] for h in host])
      if not np.all(np.isfinite(losses)):
        bad = step - len(host) + int(np.argmin(np.isfinite(losses))) + 1
        ckpt.wait()
        raise NonFiniteLossError(
            f"loss is {losses[~np.isfinite(losses)][0]} at step {bad}: training stopped. The last good "
            f"checkpoint (step {ckpt.latest_step()}) is kept in {ckpt.directory}; lower optim.base_lr or "
            f"check the input data, then re-run with the same workdir to resume from it.")
      now = time.time()
      steps_per_sec = (step - step_log) / max(now - t_log, 1e-9)
      images_per_sec = steps_per_sec * images_per_step
      metrics = {k: float(np.mean([h[k] for h in host])) for k in host[0]}
      metrics.update(learning_rate=float(lr_fn(step - 1)), steps_per_sec=steps_per_sec,
                     images_per_sec=images_per_sec, images_per_sec_per_device=images_per_sec / num_devices)
      wait = waits.interval_fraction()
      if wait is not None:
        metrics["input_wait_fraction"] = wait
      writer.write_scalars(step, {f"train/{k}": v for k, v in metrics.items()})
      history.append((step, metrics["loss"]))
      shown = "  ".join(f"{k} {metrics[k]:.4g}" for k in metrics if k not in _NOT_SHOWN)
      logging.info("step %d/%d  %s  %.1f img/s%s  ETA %s", step, num_steps, shown, images_per_sec,
                   "" if wait is None else f"  input wait {100 * wait:.0f}%",
                   eta(num_steps - step, waits))
      t_log, step_log = now, step
      hook = on_log(step, state) if on_log is not None else None
      if hook is not None:
        state = hook.state
        if hook.stop:
          ckpt.save(step, state)
          logging.info("Stopped early at step %d of %d (saved a checkpoint).", step, num_steps)
          return result(preempted=False, stopped_early=True)
      if step < num_steps and not preempted:
        waits.start()  # the last checkpoint, written after the last step, is not a step's time
    if save:
      ckpt.save(step, state)
      # The event files then hold every logged step up to the checkpoint, even if the process is
      # killed before it writes its results (a resumed run re-does only the steps after it).
      writer.flush()
    if preempted:
      logging.warning("Received signal %d: saved a checkpoint at step %d; exiting.", stop.signum, step)
      return result(preempted=True)
  return result(preempted=False)


# Metrics of the console line that it shows in its own words (img/s, input wait), not as "key value".
_NOT_SHOWN = ("steps_per_sec", "images_per_sec", "images_per_sec_per_device", "input_wait_fraction")


def flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
