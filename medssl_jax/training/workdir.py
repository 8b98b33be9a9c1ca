"""A run's workdir: its saved settings, and refusing to resume a run with other settings.

A workdir holds one run. Re-running the same command resumes it from its last checkpoint;
re-running with other settings would continue one run under another's settings (a different
learning-rate schedule, data set or model from step N on), so it is refused with the differing
keys named, unless `train.resume_with_changes=True` says it is meant. Keys that do not change
what is computed (logging, prefetch, checkpoints kept) may change freely.

Every file access goes through etils.epath, so a workdir on GCS (gs://bucket/dir) is read and
written there, not in a local folder named `gs:`.
"""
import json

from absl import logging
from etils import epath

from medssl_jax.training import loop
from medssl_jax.errors import UserError
from medssl_jax import settings
from medssl_jax.settings import get_base_config
import jax

# Keys a resumed run may change: they do not change the trained weights.
FREE_KEYS = ("train.log_every", "train.prefetch", "train.keep_checkpoints", "train.resume_with_changes",
             "train.init_from_running",
             "train.profile_steps")


def config_differences(saved: dict, config, ignore=FREE_KEYS) -> list:
  """'key: saved -> now' for each setting that differs. A key the saved config lacks counts as
  the library's default (the run predates the key and behaved as the default does)."""
  saved = loop.flatten(saved)
  if saved.get("method") == "micle" and "pairing" not in saved:  # written before method/pairing split
    saved.update({"method": "simclr", "pairing": "case"})
  saved = settings.upgrade_saved(saved)  # keys written under names since renamed (settings.RENAMED)
  wanted = loop.flatten(json.loads(config.to_json_best_effort()))
  defaults = loop.flatten(json.loads(get_base_config().to_json_best_effort()))
  diffs = []
  for key in sorted(set(saved) | set(wanted)):
    if key in ignore:
      continue
    old, new = saved.get(key, defaults.get(key, "<absent>")), wanted.get(key, "<absent>")
    if old != new:
      diffs.append(f"{key}: {old!r} -> {new!r}")
  return diffs


def has_checkpoint(workdir: str) -> bool:
  ckpt_dir = epath.Path(workdir) / "checkpoints"
  return ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())


def save_config(workdir: str, config) -> None:
  """Writes config.json; UserError when the workdir holds a checkpoint made with other settings."""
  path = epath.Path(workdir) / "config.json"
  if has_checkpoint(workdir) and path.is_file():
    diffs = config_differences(json.loads(path.read_text()), config)
    if diffs and not config.train.resume_with_changes:
      raise UserError(
          f"{workdir} holds a run made with other settings ({'; '.join(diffs)}). Resuming it would continue "
          f"that run under these settings. Use a new --workdir, restore the settings, or set "
          f"--config.train.resume_with_changes=True if continuing it this way is meant.")
    if diffs:
      logging.warning("Resuming %s with changed settings: %s", workdir, "; ".join(diffs))
      if jax_process_index() == 0:
        path.replace(epath.Path(workdir) / "config.previous.json")
  loop.write_json(path, json.loads(config.to_json_best_effort()))


def jax_process_index() -> int:
  return jax.process_index()


def _previous_results(workdir: str, start_step: int) -> dict:
  """The results.json of the invocation before this one ({} when there is none or it does not read)."""
  path = epath.Path(workdir) / "results.json"
  if start_step <= 0 or not path.is_file():
    return {}
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return {}


def loss_history(workdir: str, start_step: int, this_invocation: list) -> dict:
  """The run's loss history over all its invocations, for results.json: the earlier invocations'
  entries up to `start_step` (from the previous results.json), then this one's. Complete when the
  previous invocation's history was and it stopped where this one starts (else a gap: a run
  killed before it wrote its results; the TensorBoard event files still hold every logged step)."""
  previous = _previous_results(workdir, start_step)
  earlier = [tuple(e) for e in previous.get("loss_history", []) if e[0] <= start_step]
  complete = start_step == 0 or (previous.get("final_step") == start_step
                                 and bool(previous.get("loss_history_complete", previous.get("resumed_from_step", 0) == 0)))
  return {"loss_history": earlier + [tuple(e) for e in this_invocation], "loss_history_complete": complete}


def wall_time(workdir: str, start_step: int, this_invocation_sec: float) -> dict:
  """The run's wall time over all its invocations, for results.json.

  A resumed run adds the time of the invocation that wrote the previous results.json when that
  invocation stopped exactly where this one starts (a preemption, a SIGTERM). When it cannot be
  known (a run killed before it wrote its results), `wall_time_complete` is False and the total
  is a lower bound; a report should say so rather than quote it as the run's time.
  """
  out = {"wall_time_sec": this_invocation_sec, "wall_time_this_invocation_sec": this_invocation_sec,
         "resumed_from_step": int(start_step), "wall_time_complete": start_step == 0}
  previous = _previous_results(workdir, start_step)
  if previous:
    if previous.get("final_step") == start_step and "wall_time_sec" in previous:
      out["wall_time_sec"] += float(previous["wall_time_sec"])
      out["wall_time_complete"] = bool(previous.get("wall_time_complete", previous.get("resumed_from_step", 0) == 0))
  return out
