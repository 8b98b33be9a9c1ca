"""What made a result: the `provenance` block of every results.json.

The package version and the git commit of the checkout it runs from (with `dirty` when the
checkout has uncommitted changes), the versions of the libraries that decide the numbers, the
devices, the start and end time (UTC, ISO 8601) and the command line, so a results file says
how to reproduce it.
"""
import datetime
import importlib.metadata
import os
import subprocess
import sys

import jax

import medssl_jax

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "grain", "tensorflow", "tensorflow-cpu",
             "opencv-python-headless")


def git_commit(path: str | None = None) -> dict | None:
  """{'commit': sha, 'dirty': bool} of the git checkout holding `path` (default: this package), or
  None when it is not in a checkout (an installed wheel) or git is not available."""
  where = path or os.path.dirname(os.path.abspath(medssl_jax.__file__))
  try:
    sha = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    if sha.returncode != 0:
      return None
    status = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None
  return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}


def library_versions() -> dict:
  out = {}
  for name in LIBRARIES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return out


def _iso(t: float) -> str:
  return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


def collect(started: float, ended: float, argv=None) -> dict:
  """The provenance block; `started` / `ended` are `time.time()` values of this invocation."""
  devices = jax.devices()
  return {"package_version": medssl_jax.__version__, "git": git_commit(), "python": sys.version.split()[0],
          "libraries": library_versions(), "platform": devices[0].platform,
          "device_kind": devices[0].device_kind, "device_count": len(devices),
          "process_count": jax.process_count(), "started": _iso(started), "ended": _iso(ended),
          "command_line": list(sys.argv if argv is None else argv)}
