"""A run's workdir lock: one run at a time in a workdir.

`hold(workdir)` takes the lock, a file `<workdir>/.lock` holding JSON (host, pid, start time,
command line), and gives it back when the run ends: the context manager's exit (a return, an
error, a SIGTERM the training loop turned into a checkpoint and a return), an `atexit` hook, and a
SIGTERM that ends the process outside the loop. A second run on a locked workdir is refused with
one line naming the holder. A lock left by a process that died without giving it back (SIGKILL, a
crash of the machine) is found stale when its holder ran on this host (same pid namespace) and
that pid no longer runs (or now belongs to another process): it is taken over with a log line.
A lock held on another host cannot be checked from here: the refusal says to delete the file if
that run is gone.

The file is created atomically, so that of two runs starting together exactly one gets it: on a
local disk with `os.open(O_CREAT | O_EXCL)`; on gs:// with an upload that has the precondition
`ifGenerationMatch=0` (gcsfs's `mode="create"`: Cloud Storage answers 412 when the object
exists). Other remote filesystems have no create-if-absent through etils.epath: there the lock is
checked and then written, which refuses a second run started after the first, but not two started
within the same moment.

Multi-host runs: process 0 takes the lock, the other processes never touch the file, and every
process learns the outcome (a refusal is raised on all of them). The lock is re-entrant within a
process: a run that starts another in the same workdir (same process) holds it once.
"""
import atexit
import contextlib
import datetime
import functools
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid

from absl import logging
from etils import epath
from etils.epath import backend as epath_backend
import jax
from jax.experimental import multihost_utils
import numpy as np

from medssl_jax.errors import UserError

LOCK_NAME = ".lock"
TAKEOVER_NAME = ".lock.takeover"  # held for the instant a stale lock is replaced (two takers: one wins)

_HELD = {}  # lock path -> [count, content bytes, whether hold() created the workdir] of this process's locks
_MUTEX = threading.RLock()  # re-entrant: the SIGTERM handler may run while the main thread holds it


def lock_path(workdir) -> epath.Path:
  return epath.Path(os.fspath(workdir)) / LOCK_NAME


def _is_local(path: epath.Path) -> bool:
  return "://" not in os.fspath(path)


def _pid_namespace() -> str | None:
  try:
    return os.readlink("/proc/self/ns/pid")
  except OSError:
    return None


def _boot_id() -> str | None:
  try:
    with open("/proc/sys/kernel/random/boot_id") as f:
      return f.read().strip()
  except OSError:
    return None


def _process_start(pid: int) -> str | None:
  """The start time of process `pid` in clock ticks since boot (Linux), to tell a reused pid apart."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def holder_info() -> dict:
  """What the lock file records about the process holding it."""
  pid = os.getpid()
  return {"host": socket.gethostname(), "pid": pid,
          "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "pid_namespace": _pid_namespace(),
          "boot_id": _boot_id(), "process_start": _process_start(pid), "token": uuid.uuid4().hex}


def _alive(holder: dict) -> bool | None:
  """Whether the holder still runs: True / False, or None when this machine cannot tell (another
  host, another pid namespace)."""
  if holder.get("host") != socket.gethostname() or holder.get("pid_namespace") != _pid_namespace():
    return None
  if holder.get("boot_id") and _boot_id() and holder["boot_id"] != _boot_id():
    return False  # the machine rebooted since
  try:
    pid = int(holder["pid"])
  except (KeyError, TypeError, ValueError):
    return None
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # runs, as another user
  if holder.get("process_start") and _process_start(pid) not in (None, holder["process_start"]):
    return False  # the pid now belongs to another process
  return True


def _create(path: epath.Path, data: bytes) -> bool:
  """Creates `path` holding `data` if it does not exist; False if it does. Atomic where the
  filesystem allows it (see the module docstring)."""
  if _is_local(path):
    try:
      fd = os.open(os.fspath(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    try:
      os.write(fd, data)
      os.fsync(fd)
    finally:
      os.close(fd)
    return True
  fs = _fsspec(path)
  protocols = getattr(fs, "protocol", ())
  if "gs" in ((protocols,) if isinstance(protocols, str) else tuple(protocols)):
    try:
      fs.pipe_file(os.fspath(path), data, mode="create")  # ifGenerationMatch=0; 412 -> FileExistsError
    except FileExistsError:
      return False
    return True
  if path.exists():  # no create-if-absent here: check, then write
    return False
  path.write_bytes(data)
  return True


def _fsspec(path: epath.Path):
  """The fsspec filesystem of `path` as etils.epath's fsspec backend makes it (gcsfs for gs://, the
  same instance epath uses when it does not use TensorFlow), or None (gcsfs not installed)."""
  try:
    return epath_backend.fsspec_backend.fs(os.fspath(path))
  except Exception:  # noqa: BLE001 -- no gcsfs, another etils version: the check-then-write path is used
    return None


def _read(path: epath.Path) -> bytes | None:
  try:
    return path.read_bytes()
  except FileNotFoundError:
    return None


def _parse(data: bytes) -> dict | None:
  try:
    holder = json.loads(data.decode())
  except (UnicodeDecodeError, ValueError):
    return None
  return holder if isinstance(holder, dict) else None


def _remove(path: epath.Path) -> None:
  try:
    path.unlink()
  except FileNotFoundError:
    pass


def describe(workdir, holder: dict) -> str:
  """The refusal for a workdir that `holder` holds."""
  line = (f"workdir {workdir} is in use by pid {holder.get('pid')} on host {holder.get('host')} since "
          f"{holder.get('since')} (command {holder.get('command')}); wait for it to finish or choose another "
          f"--workdir")
  if _alive(holder) is None:
    line += f" (if that run is no longer running, delete {lock_path(workdir)})"
  return line


def is_locked(workdir) -> dict | None:
  """The holder of `workdir`'s lock (the dict the lock file holds; `this_process` True when it is
  this process), or None when no live run holds it (no lock file, or a stale one). `workdir` may
  also be a run's checkpoints folder."""
  path = epath.Path(os.fspath(workdir))
  if not lock_path(path).exists() and path.name in ("checkpoints", "checkpoints_best"):
    path = path.parent
  data = _read(lock_path(path))
  if data is None:
    return None
  holder = _parse(data)
  if holder is None:
    return {"unreadable": True, "path": os.fspath(lock_path(path)), "this_process": False}
  if _alive(holder) is False:
    return None
  held = _HELD.get(os.fspath(lock_path(path)))
  return dict(holder, this_process=held is not None and held[1] == data)


def _acquire(workdir, path: epath.Path) -> bytes:
  """Creates the lock file (taking over a stale one); returns its content. UserError if held."""
  data = json.dumps(holder_info(), indent=1).encode()
  takeover = path.parent / TAKEOVER_NAME
  for _ in range(20):
    if _create(path, data):
      return data
    current = _read(path)
    if current is None:
      continue  # given back meanwhile: try again
    holder = _parse(current)
    if holder is None:  # being written this instant, or left empty by a crash
      time.sleep(0.05)
      if _read(path) == current:
        raise UserError(f"workdir {workdir} has a lock file {path} that cannot be read ({current[:80]!r}): if no "
                        f"run is using this workdir, delete it")
      continue
    if _alive(holder) is not False:
      raise UserError(describe(workdir, holder))
    # Stale: one taker at a time replaces it (the takeover file), after checking it is still that lock.
    if not _create(takeover, data):
      other = _parse(_read(takeover) or b"")
      if other is not None and _alive(other) is False:
        _remove(takeover)  # a taker that died in that instant
      time.sleep(0.05)
      continue
    try:
      if _read(path) == current:
        _remove(path)
        logging.warning("workdir %s: took over the lock of pid %s on host %s (since %s), which no longer runs",
                        workdir, holder.get("pid"), holder.get("host"), holder.get("since"))
    finally:
      _remove(takeover)
  raise UserError(f"workdir {workdir}: could not take its lock {path} (other runs keep starting there)")


def _release(key: str) -> None:
  with _MUTEX:
    entry = _HELD.pop(key, None)
  if entry is None:
    return
  path = epath.Path(key)
  try:
    if _read(path) == entry[1]:  # ours still (not taken over by someone who thought us dead)
      _remove(path)
    if entry[2]:
      _rmdir_if_empty(path.parent)  # a run refused before it wrote anything leaves no empty workdir
  except Exception as e:  # noqa: BLE001 -- at exit: say so, do not hide the run's own outcome
    logging.warning("could not remove the workdir lock %s: %s: %s", key, type(e).__name__, e)


def _rmdir_if_empty(folder: epath.Path) -> None:
  try:
    os.rmdir(os.fspath(folder))
  except OSError:
    pass


def _release_all() -> None:
  if os.getpid() != _OWNER_PID[0]:
    return  # a forked child: the locks are its parent's
  for key in list(_HELD):
    _release(key)


_OWNER_PID = [os.getpid()]
_SIGTERM = {"installed": False}


def _on_sigterm(signum, frame):
  """SIGTERM outside the training loop (whose own handler saves a checkpoint first): gives the
  locks back, then ends the process as the default action would."""
  del frame
  _release_all()
  signal.signal(signum, signal.SIG_DFL)
  os.kill(os.getpid(), signum)


def _install_sigterm() -> None:
  # Only over the default action: a handler set by someone else (JAX's preemption notice, a test
  # harness) stays. Only the main thread may set handlers.
  if _SIGTERM["installed"] or threading.current_thread() is not threading.main_thread():
    return
  if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _on_sigterm)
    _SIGTERM["installed"] = True


def _broadcast_refusal(message: str, process_index: int) -> str:
  """Process 0's refusal (or '') on every process."""
  buf = np.zeros(2048, np.uint8)
  if process_index == 0:
    raw = message.encode()[:2048]
    buf[:len(raw)] = np.frombuffer(raw, np.uint8)
  out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
  return bytes(out[out != 0].tolist()).decode(errors="replace")


@contextlib.contextmanager
def hold(workdir, *, process_index: int | None = None, process_count: int | None = None):
  """Holds `workdir`'s lock for the `with` block (creating the workdir if needed); UserError, one
  line naming the holder, when another live run holds it. Process 0 only takes it."""
  if process_index is None or process_count is None:
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  key, refusal, failure = None, "", None
  if process_index == 0:
    try:
      key = _take(workdir)
    except Exception as e:  # noqa: BLE001 -- with several processes the others must hear of it first
      if process_count == 1:
        raise
      failure, refusal = e, str(e) if isinstance(e, UserError) else f"workdir {workdir}: could not take its lock"
  if process_count > 1:
    refusal = _broadcast_refusal(refusal, process_index)
  if failure is not None:
    raise failure
  if refusal:
    raise UserError(refusal)
  try:
    yield
  finally:
    if key is not None:
      with _MUTEX:
        entry = _HELD.get(key)
        last = entry is not None and entry[0] == 1
        if entry is not None and not last:
          entry[0] -= 1
      if last:
        _release(key)


def _take(workdir) -> str:
  path = lock_path(workdir)
  key = os.fspath(path)
  with _MUTEX:
    if key in _HELD:  # this process holds it already (a run inside a run)
      _HELD[key][0] += 1
      return key
  created = _is_local(path) and not path.parent.exists()
  path.parent.mkdir(parents=True, exist_ok=True)
  try:
    data = _acquire(workdir, path)
  except UserError:
    if created:
      _rmdir_if_empty(path.parent)
    raise
  with _MUTEX:
    _HELD[key] = [1, data, created]
  _install_sigterm()
  return key


def holds_workdir(fn):
  """Decorator for a run `fn(config, workdir, ...)`: the run holds `workdir`'s lock while it runs."""
  @functools.wraps(fn)
  def wrapped(config, workdir, *args, **kwargs):
    with hold(workdir):
      return fn(config, workdir, *args, **kwargs)
  return wrapped


atexit.register(_release_all)
if hasattr(os, "register_at_fork"):
  os.register_at_fork(after_in_child=lambda: _OWNER_PID.__setitem__(0, -1))
