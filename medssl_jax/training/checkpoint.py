"""Orbax checkpoints of a training run: every field of its state.

The items saved are derived from the state (`state_items`): every array-holding field of the
`TrainState` but the step (which is the checkpoint's number), i.e. params, batch-norm statistics,
optimiser state and whatever a method keeps in `extra` (a momentum encoder, a queue). A field
added to the state is saved and restored without a change here. Items are saved separately (a
Composite), so a later run can take only the encoder weights of a pretraining checkpoint
(MICLe from SimCLR, fine-tuning) and leave the optimiser and method state behind.
Saving is asynchronous; `close()` waits for the last save.

Restoring verifies: a step whose files are missing or damaged (a deleted or truncated file, an item
folder without its metadata, a step folder without `_CHECKPOINT_METADATA`, i.e. never finished) is
skipped with one log line saying why, and the newest complete step is restored instead. A writing
`Checkpointer` moves the damaged steps newer than the one restored aside to `<step>.damaged` (kept,
never deleted), so the run can write those steps again; when no step is complete the run stops with
one line naming the folder and the damaged steps.

Retention deletes only checkpoints this `Checkpointer` (this process) wrote: of those, the newest
`keep` finished ones are kept (plus the one being written). Checkpoints already in the folder when it
was opened (an earlier invocation of a resumed run, damaged steps moved aside) are never deleted.
"""
import dataclasses
import hashlib
import json
import os
import weakref

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from medssl_jax import jsonio
from medssl_jax.errors import DiskFullError, MissingFileError, UserError
from medssl_jax.training import lock

WEIGHTS = ("params", "batch_stats")  # what another run takes from a checkpoint
# Room for a checkpoint's metadata beyond its array bytes (measured: ~0.1 MiB per item of a tiny
# ResNet-18 state; the tree and sharding metadata grow with the number of arrays, not their size).
CHECKPOINT_OVERHEAD_BYTES = 4 * 2**20


def state_items(state) -> tuple:
  """The names of `state`'s checkpointed fields: each pytree field but `step` with any arrays."""
  names = []
  for f in dataclasses.fields(state):
    if f.name == "step" or not f.metadata.get("pytree_node", True):
      continue
    if jax.tree_util.tree_leaves(getattr(state, f.name)):
      names.append(f.name)
  return tuple(names)


def _abs(path) -> str:
  path = os.fspath(path)
  return path if "://" in path else os.path.abspath(path)


_OPEN = weakref.WeakSet()  # this process's open Checkpointers


class Checkpointer:
  """A run's checkpoints folder. `keep` (>= 1): how many of the checkpoints this object writes are kept."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or keep < 1:
      raise UserError(f"train.keep_checkpoints={keep!r} must be >= 1 (how many of its newest checkpoints a run "
                      f"keeps; a run never deletes checkpoints it did not write)")
    self.directory = _abs(directory)
    self.keep = int(keep)
    self.written = []  # the steps this object saved, oldest first; retention deletes only these
    # No fixed item names: each save names the items of the state it is given. No max_to_keep:
    # Orbax's retention would delete the checkpoints already in the folder too (see `_prune`).
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                             enable_async_checkpointing=async_save))
    _OPEN.add(self)

  def latest_step(self):
    """The newest step in the folder (complete or not: `restore` verifies)."""
    return self.manager.latest_step()

  def save(self, step: int, state) -> None:
    if jax.process_count() > 1:
      # Orbax's multi-host async save syncs the processes through barriers whose names do not
      # say which manager they belong to: two managers saving at once (a fine-tune's periodic
      # checkpoint and its best-on-validation one, at the same step) can collide ("Barrier ...
      # is already ongoing"). One save in flight at a time across this process's checkpointers.
      for other in list(_OPEN):
        if other is not self:
          other.manager.wait_until_finished()
    self.manager.wait_until_finished()  # what Orbax's save does first anyway; then every step written is finished
    self._prune()
    self._check_room(int(step), state)
    self.manager.save(int(step), args=ocp.args.Composite(
        **{k: ocp.args.StandardSave(getattr(state, k)) for k in state_items(state)}))
    self.written.append(int(step))

  def _check_room(self, step: int, state) -> None:
    """Refuses, in one line and before writing anything, a save that the local disk has no room for.

    Orbax's failure on a full disk is a torn `<step>.orbax-checkpoint-tmp` folder and hundreds of
    traceback lines from its writer threads; refused here, the run ends with the checkpoints it has
    and the same command resumes once there is room. The estimate is the state's array bytes plus
    the metadata's `CHECKPOINT_OVERHEAD_BYTES` (gs:// folders: not checked)."""
    if "://" in self.directory:
      return
    need = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
               for k in state_items(state) for x in jax.tree_util.tree_leaves(getattr(state, k)))
    need += CHECKPOINT_OVERHEAD_BYTES
    disk = os.statvfs(self.directory)
    free = disk.f_bavail * disk.f_frsize
    if not _agree(free >= need):
      kept = sorted(self.manager.all_steps())
      raise DiskFullError(
          f"the disk of {self.directory} has {free / 2**20:.1f} MiB free and the checkpoint of step {step} needs "
          f"about {need / 2**20:.1f} MiB: free space there (or use a --workdir on a disk with room) and run the "
          f"same command again; it resumes from "
          + (f"step {kept[-1]}, the newest checkpoint kept" if kept else "the start: no checkpoint was written yet"))

  def _prune(self) -> None:
    """Deletes the oldest finished checkpoints this object wrote beyond the newest `keep` of them.
    Called with no save in flight; checkpoints it did not write are never touched."""
    present = set(self.manager.all_steps())
    own = [s for s in dict.fromkeys(self.written) if s in present]
    for s in own[:max(0, len(own) - self.keep)]:
      self.manager.delete(s)
    self.written = [s for s in self.written if s in set(own[max(0, len(own) - self.keep):])]

  def restore(self, state, step=None):
    """Restores every item into the structure and shardings of `state`: the newest complete step
    (or exactly `step`), skipping damaged ones with a log line each; UserError if none is complete."""
    items = {k: getattr(state, k) for k in state_items(state)}

    def load(s):
      check_compatible(self.directory, s, items)
      return self.manager.restore(s, args=ocp.args.Composite(
          **{k: ocp.args.StandardRestore(_abstract(v)) for k, v in items.items()}))

    steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
    step, restored, damaged = _first_complete(self.directory, steps, tuple(items), load, agree=_agree)
    self._set_aside([s for s in damaged if s > step])
    return state.replace(step=np.int32(step), **{k: restored[k] for k in items})

  def _set_aside(self, steps) -> None:
    """Renames damaged steps to `<step>.damaged` (Orbax lists them no more; nothing is deleted), so
    that this run can write those steps again."""
    if not steps:
      return
    if jax.process_index() == 0:
      for s in steps:
        src = epath.Path(self.directory) / str(s)
        dst, n = epath.Path(self.directory) / f"{s}.damaged", 1
        while dst.exists():
          n += 1
          dst = epath.Path(self.directory) / f"{s}.damaged-{n}"
        src.rename(dst)
        logging.warning("checkpoint step %d moved aside to %s (kept, not deleted)", s, dst)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"medssl_jax checkpoint set aside {self.directory}")
    self.manager.reload()

  def wait(self):
    self.manager.wait_until_finished()
    self._prune()

  def close(self):
    """Waits for the checkpoint being written, then closes; a second call does nothing."""
    if getattr(self, "_closed", False):
      return
    self.manager.wait_until_finished()
    self._prune()
    self.manager.close()
    _OPEN.discard(self)
    self._closed = True


# What a damaged checkpoint raises when it is read: tensorstore's errors are ValueErrors, a missing
# item a KeyError, an unreadable metadata file an OSError or a JSONDecodeError (a ValueError).
_DAMAGE = (ValueError, KeyError, OSError)


def _reason(e: BaseException) -> str:
  text = (str(e).strip().splitlines() or [""])[0].split(" [tensorstore_spec")[0].strip()
  text = text if len(text) <= 200 else text[:197] + "..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def step_problem(directory: str, step: int, names) -> str | None:
  """Why step `step` of `directory` is not a complete checkpoint of the items `names` (None if its
  files are all there: the step's commit record and each item's metadata). The array data is
  checked by reading it (`restore`)."""
  path = epath.Path(directory) / str(step)
  if not path.is_dir():
    return "no step folder"
  try:
    json.loads((path / "_CHECKPOINT_METADATA").read_text())
  except FileNotFoundError:
    return "no _CHECKPOINT_METADATA: the save never finished"
  except (ValueError, OSError) as e:
    return f"_CHECKPOINT_METADATA unreadable ({_reason(e)})"
  for name in names:
    if not (path / name).is_dir():
      return f"no '{name}' folder"
    try:
      meta = json.loads((path / name / "_METADATA").read_text())
    except FileNotFoundError:
      return f"no {name}/_METADATA"
    except (ValueError, OSError) as e:
      return f"{name}/_METADATA unreadable ({_reason(e)})"
    if not isinstance(meta, dict) or "tree_metadata" not in meta:
      return f"{name}/_METADATA has no tree_metadata"
  return None


def _agree(ok: bool) -> bool:
  """With several processes (a collective restore, every process calls it): a step counts as
  complete only if every process could read it. `restore_weights` (host arrays, possibly called by
  one process only) decides on each process alone."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _first_complete(directory: str, steps, names, load, agree=lambda ok: ok):
  """(step, load(step), damaged steps) for the first step of `steps` whose files are complete and
  that `load` reads without a damage error; one warning per step skipped. A UserError from `load`
  (an architecture mismatch) is raised at once: an older step would not match either. `agree`
  makes the processes of a collective restore take the same step."""
  damaged, reasons = [], []
  for step in steps:
    problem = step_problem(directory, step, names)
    if agree(problem is None):
      try:
        restored = load(step)
      except UserError:
        raise
      except _DAMAGE as e:
        problem = _reason(e)
      else:
        problem = None
      if agree(problem is None):
        if damaged:
          logging.warning("restored step %d of %s, the newest complete checkpoint (damaged: steps %s)", step,
                          directory, ", ".join(map(str, damaged)))
        return step, restored, damaged
    problem = problem or "damaged on another process"
    logging.warning("checkpoint step %d in %s is damaged (%s): skipping it", step, directory, problem)
    damaged.append(step)
    reasons.append(f"step {step}: {problem}")
  if not damaged:
    raise MissingFileError(f"{directory} holds no checkpoint")
  raise UserError(f"no complete checkpoint in {directory}: step{'s' if len(damaged) > 1 else ''} "
                  f"{', '.join(map(str, damaged))} {'are' if len(damaged) > 1 else 'is'} damaged ({'; '.join(reasons)}); "
                  f"move {'them' if len(damaged) > 1 else 'it'} out of the folder to start afresh, or use another "
                  f"--workdir")


def _reader(directory: str, names) -> ocp.CheckpointManager:
  """A read-only manager that knows how each item was written (needed for its metadata)."""
  return ocp.CheckpointManager(_abs(directory), item_names=tuple(names),
                               item_handlers={k: ocp.StandardCheckpointHandler() for k in names},
                               options=ocp.CheckpointManagerOptions(read_only=True))


def _abstract(tree):
  return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


def _shapes(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): tuple(getattr(v, "shape", ()) or ()) for p, v in flat}


def check_tree_shapes(saved, wanted, where: str) -> None:
  """Raises a UserError naming the differing parameters when two trees' shapes differ."""
  saved, wanted = _shapes(saved), _shapes(wanted)
  missing = sorted(set(wanted) - set(saved))
  extra = sorted(set(saved) - set(wanted))
  differ = sorted(k for k in set(saved) & set(wanted) if saved[k] != wanted[k])
  if missing or extra or differ:
    lines = [f"{where} does not match the configured architecture:"]
    lines += [f"  missing in checkpoint: {k}" for k in missing[:5]]
    lines += [f"  not in the model: {k}" for k in extra[:5]]
    lines += [f"  shape {k}: checkpoint {saved[k]} vs model {wanted[k]}" for k in differ[:5]]
    lines.append("  check model.depth / model.width / model.stem against the run that wrote it")
    raise UserError("\n".join(lines))


def check_compatible(directory: str, step: int, items: dict) -> None:
  manager = _reader(directory, tuple(items))
  meta = manager.item_metadata(step)
  manager.close()
  for name in ("params", "batch_stats"):
    if name in items:
      check_tree_shapes(meta[name], items[name], f"checkpoint {directory} (step {step}, {name})")


def checkpoint_dir(path: str) -> str:
  """A workdir (uses its checkpoints/) or a checkpoints folder; errors if neither exists."""
  path = _abs(path)
  if epath.Path(path, "checkpoints").is_dir():  # gs:// too: a workdir's checkpoints/ is found there
    return f"{path.rstrip('/')}/checkpoints"
  if not epath.Path(path).is_dir():
    raise MissingFileError(f"no checkpoint directory at {path} (expected a workdir or its checkpoints/)")
  return path


def restore_weights(path: str, step=None):
  """Params and batch_stats of a run's checkpoint as host arrays, without the optimiser state: its
  newest complete step (damaged ones skipped with a log line each), or exactly `step`."""
  directory = checkpoint_dir(path)
  manager = _reader(directory, WEIGHTS)
  steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
  if not steps:
    manager.close()
    raise MissingFileError(f"{directory} holds no checkpoint")

  def load(s):
    meta = manager.item_metadata(s)
    target = {k: jax.tree_util.tree_map(lambda m: np.zeros(m.shape, m.dtype), meta[k]) for k in WEIGHTS}
    return manager.restore(s, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target["params"]),
        batch_stats=ocp.args.StandardRestore(target["batch_stats"])))

  try:
    step, restored, _ = _first_complete(directory, steps, WEIGHTS, load)
  finally:
    manager.close()
  return jax.device_get(restored["params"]), jax.device_get(restored["batch_stats"]), step


# The provenance of the weights a run started from (train.init_checkpoint), kept in its workdir so that a
# resumed run still reports it; results.json's `init_checkpoint`.
INIT_RECORD = "init_checkpoint.json"


def fingerprint(params, batch_stats) -> str:
  """A short hash of weights: sha256 over the bytes of every array of `params`, then of `batch_stats`,
  each tree's leaves in the sorted order of their key paths (C order, the arrays' own dtypes); the
  first 16 hex digits."""
  h = hashlib.sha256()
  for tree in (params, batch_stats):
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    for _, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
      h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()[:16]


def restore_init_weights(path: str, allow_running: bool = False, workdir: str | None = None):
  """`restore_weights(path)` for a run's start (train.init_checkpoint), with its provenance:
  (params, batch_stats, step, {'path', 'step', 'fingerprint'}). A checkpoint whose run still trains
  (a live process holds its workdir lock) is refused unless `allow_running` (train.init_from_running).
  With `workdir`, the record is written there (process 0) for results.json (`read_init_record`)."""
  holder = lock.is_locked(checkpoint_dir(path))
  running = holder is not None and not holder.get("this_process")
  params, batch_stats, step = restore_weights(path)
  if running and not allow_running:
    raise UserError(
        f"train.init_checkpoint={path} belongs to a run that is still training (pid {holder.get('pid')} on host "
        f"{holder.get('host')}); it would take step {step}, its latest so far; wait for that run to finish, or pass "
        f"--config.train.init_from_running=True to start from step {step} anyway")
  if running:
    logging.warning("train.init_checkpoint=%s: its run is still training; taking its step %d", path, step)
  record = {"path": _abs(path), "step": int(step), "fingerprint": fingerprint(params, batch_stats),
            "from_running": bool(running)}
  if workdir is not None and jax.process_index() == 0:
    jsonio.write_json(epath.Path(workdir) / INIT_RECORD, record)
  return params, batch_stats, step, record


def read_init_record(workdir: str) -> dict | None:
  """The `init_checkpoint` record a run of `workdir` wrote when it loaded its start weights, or None."""
  path = epath.Path(workdir) / INIT_RECORD
  return json.loads(path.read_text()) if path.exists() else None


def load_subtree(saved, wanted, key: str, where: str):
  """`saved[key]`, shape-checked against `wanted[key]` (e.g. the encoder of a SimCLR model)."""
  if key not in saved:
    raise UserError(f"{where} has no '{key}' weights (it has {sorted(saved)})")
  check_tree_shapes(saved[key], wanted[key], f"{where} ['{key}']")
  return saved[key]
