"""User errors, and how the command-line entry points end a run that fails.

A `UserError` is a refusal the user can act on (patient leakage, a bad .npz file, a batch the
devices cannot split, an unreadable image, a resume with changed settings, a missing file, a bad
config value): the entry points print it as one line, `error: <message>`, on stderr and exit
with status 2. Any other exception is a bug: its traceback is printed and the exit status is 1.
`MEDSSL_DEBUG=1` prints the traceback of user errors too.

`UserError` subclasses ValueError (and `MissingFileError` FileNotFoundError, `NonFiniteLossError`
FloatingPointError), so code that catches the built-in types keeps working.

Either way the process ends promptly: the failed run's frames are released while the interpreter
still runs (a tf.data iterator destroyed during interpreter shutdown can wait forever on a
thread that needs the GIL), and a watchdog ends the process if anything still holds it
`EXIT_GRACE_SEC` later.
"""
import errno
import faulthandler
import functools
import gc
import linecache
import os
import sys
import traceback

DEBUG_ENV = "MEDSSL_DEBUG"
USER_ERROR_EXIT = 2
BUG_EXIT = 1
# A run stopped by SIGTERM or SIGINT after saving a checkpoint: re-running it resumes (EX_TEMPFAIL).
RESUMABLE_EXIT = 75
EXIT_GRACE_SEC = 60.0
# This project's source tree: a `raise ValueError(...)` / `raise FileNotFoundError(...)` in its
# own code (configs included) is a refusal written for the user, from a site not converted to
# UserError yet; the same types raised inside a library are bugs.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class UserError(ValueError):
  """A refusal with a message that says what to fix; printed without a traceback."""


class MissingFileError(UserError, FileNotFoundError):
  """A data file, folder or checkpoint that the config names does not exist."""


class NonFiniteLossError(UserError, FloatingPointError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


class DiskFullError(UserError, OSError):
  """No room on the disk for what a run writes; what it wrote before is kept, and the same command
  resumes once there is room."""


class FlagError(UserError):
  """A command line the command cannot take (an unknown or missing flag, a bad value, an unknown config
  key); the command runner (medssl_jax/commands/common.py) prints it as one line and exits 2."""


def debug() -> bool:
  return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(e: BaseException) -> str:
  """The exception's message on one line (a multi-line message is joined with '; ')."""
  text = str(e.args[0]) if isinstance(e, OSError) and len(e.args) == 1 else str(e)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return "; ".join(lines) or type(e).__name__


def _raised_by_project(e: BaseException) -> bool:
  """Whether `e` comes from a `raise` statement in this project's code (not from a library,
  nor from a C function such as a NumPy reshape called by the project)."""
  tb = e.__traceback__
  if tb is None:
    return False
  while tb.tb_next is not None:
    tb = tb.tb_next
  path = os.path.abspath(tb.tb_frame.f_code.co_filename)
  inside = os.path.relpath(path, PROJECT_ROOT).split(os.sep)
  if inside[0] in ("..", ".venv") or "site-packages" in inside:
    return False
  return linecache.getline(path, tb.tb_lineno).lstrip().startswith("raise ")


def disk_full(e: BaseException) -> OSError | None:
  """The OSError "no space left on device" (or "disk quota exceeded") in `e`'s chain of causes."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return e
    e = e.__cause__ or e.__context__
  return None


def is_user_error(e: BaseException) -> bool:
  """A UserError, a full disk, or a ValueError / FileNotFoundError raised by this project's own code."""
  if isinstance(e, UserError) or disk_full(e) is not None:
    return True
  return type(e) in (ValueError, FileNotFoundError, NotADirectoryError) and _raised_by_project(e)


def exit_on_error(e: BaseException) -> None:
  """Reports `e` as a user error (one line) or a bug (traceback) and exits non-zero."""
  user = is_user_error(e)
  if isinstance(e, KeyboardInterrupt):
    code, message = 130, "interrupted"
  elif user and disk_full(e) is not None and not isinstance(e, UserError):
    full = disk_full(e)
    where = f" writing {full.filename}" if full.filename else ""
    code, message = USER_ERROR_EXIT, (f"the disk is full ({full.strerror}{where}): free space there and run the "
                                      f"same command again; a training run resumes from its newest complete checkpoint")
  elif user:
    code, message = USER_ERROR_EXIT, one_line(e)
  else:
    code, message = BUG_EXIT, f"unexpected {type(e).__name__}: {one_line(e)} (traceback above)"
  if debug() or not (user or isinstance(e, KeyboardInterrupt)):
    traceback.print_exception(e)
  print(f"error: {message}", file=sys.stderr, flush=True)
  # Release the failed run (its iterators, pools, checkpointer) now, while threads can still take
  # the GIL, not at interpreter shutdown.
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    traceback.clear_frames(e.__traceback__)
    e.__traceback__ = None
    e = e.__cause__ or e.__context__
  gc.collect()
  arm_exit_watchdog(code)
  sys.stdout.flush()
  raise SystemExit(code)


def arm_exit_watchdog(code: int, seconds: float = EXIT_GRACE_SEC) -> None:
  """Ends the process `seconds` from now if it is still alive (a thread that will not stop).

  faulthandler's timer runs in C without the GIL, so it also fires during interpreter shutdown;
  it prints every thread's stack first (exit status 1), which names what held the process.
  """
  del code  # faulthandler exits with status 1
  try:
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.__stderr__)
  except (RuntimeError, ValueError, AttributeError):  # no usable stderr: no watchdog
    pass


def guard(fn):
  """Wraps a command's main: user errors become `error: ...` and exit 2, bugs exit 1."""
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 -- reported, then SystemExit
      exit_on_error(e)
  return wrapped
