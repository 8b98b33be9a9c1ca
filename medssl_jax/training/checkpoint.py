"""Orbax checkpoints of a training run: every field of its state.

The items saved are derived from the state (`state_items`): every array-holding field of the
`TrainState` but the step (which is the checkpoint's number), i.e. params, batch-norm statistics,
optimiser state and whatever a method keeps in `extra` (a momentum encoder, a queue). A field
added to the state is saved and restored without a change here. Items are saved separately (a
Composite), so a later run can take only the encoder weights of a pretraining checkpoint
(MICLe from SimCLR, fine-tuning) and leave the optimiser and method state behind.
Saving is asynchronous; `close()` waits for the last save.
"""
import dataclasses
import os
import weakref

import jax
import numpy as np
import orbax.checkpoint as ocp

from medssl_jax.errors import MissingFileError, UserError

WEIGHTS = ("params", "batch_stats")  # what another run takes from a checkpoint


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
  def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
    self.directory = _abs(directory)
    # No fixed item names: each save names the items of the state it is given.
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save))
    _OPEN.add(self)

  def latest_step(self):
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
    self.manager.save(int(step), args=ocp.args.Composite(
        **{k: ocp.args.StandardSave(getattr(state, k)) for k in state_items(state)}))

  def restore(self, state, step=None):
    """Restores every item into the structure and shardings of `state`."""
    step = self.latest_step() if step is None else step
    items = {k: getattr(state, k) for k in state_items(state)}
    check_compatible(self.directory, step, items)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        **{k: ocp.args.StandardRestore(_abstract(v)) for k, v in items.items()}))
    return state.replace(step=np.int32(step), **{k: restored[k] for k in items})

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    """Waits for the checkpoint being written, then closes; a second call does nothing."""
    if getattr(self, "_closed", False):
      return
    self.manager.wait_until_finished()
    self.manager.close()
    _OPEN.discard(self)
    self._closed = True


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
  from etils import epath
  path = _abs(path)
  if epath.Path(path, "checkpoints").is_dir():  # gs:// too: a workdir's checkpoints/ is found there
    return f"{path.rstrip('/')}/checkpoints"
  if not epath.Path(path).is_dir():
    raise MissingFileError(f"no checkpoint directory at {path} (expected a workdir or its checkpoints/)")
  return path


def restore_weights(path: str, step=None):
  """Params and batch_stats of a run's checkpoint as host arrays, without the optimiser state."""
  directory = checkpoint_dir(path)
  manager = _reader(directory, WEIGHTS)
  step = manager.latest_step() if step is None else step
  if step is None:
    manager.close()
    raise MissingFileError(f"{directory} holds no checkpoint")
  meta = manager.item_metadata(step)
  target = {k: jax.tree_util.tree_map(lambda m: np.zeros(m.shape, m.dtype), meta[k])
            for k in WEIGHTS}
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(target["params"]),
      batch_stats=ocp.args.StandardRestore(target["batch_stats"])))
  manager.close()
  return jax.device_get(restored["params"]), jax.device_get(restored["batch_stats"]), step


def load_subtree(saved, wanted, key: str, where: str):
  """`saved[key]`, shape-checked against `wanted[key]` (e.g. the encoder of a SimCLR model)."""
  if key not in saved:
    raise UserError(f"{where} has no '{key}' weights (it has {sorted(saved)})")
  check_tree_shapes(saved[key], wanted[key], f"{where} ['{key}']")
  return saved[key]
