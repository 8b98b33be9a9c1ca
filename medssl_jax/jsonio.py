"""Strict JSON for the files a run writes (results.json, val_history.json, config.json, ...).

JSON has no NaN: `strict` writes a non-finite number as null (an AUC on a split without positives,
an interval that cannot be computed), and `read_json` reads null back as NaN in the fields that
hold numbers (NUMERIC_FIELDS: a metric's value and interval, a difference, a spread), so code that
computes with them sees NaN as before. Plain Python + NumPy: every layer may use it.

Every output file is written atomically (`atomic_path`, `open_atomic`, `write_bytes`, `write_text`,
`write_json`): into a temporary name next to it that is unique per writer (process id and a random
part), then renamed onto it, so a crash leaves the old file or the new one, never a torn one, and
two writers of the same path never share a temporary file.
"""
import contextlib
import json
import os
import uuid

from etils import epath
import numpy as np


def strict(obj):
  """`obj` with every non-finite number as None and NumPy scalars as Python numbers (JSON's types)."""
  if isinstance(obj, dict):
    return {k: strict(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict(v) for v in obj]
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if np.isfinite(obj) else None
  if isinstance(obj, np.ndarray):
    return strict(obj.tolist())
  return obj


# Fields that hold a number (a metric and its interval, a difference, a spread): null there is NaN.
NUMERIC_FIELDS = ("value", "ci_low", "ci_high", "difference", "mean", "std", "a", "b")


def read_json(path: str):
  """A JSON file of `training.loop.write_json`, with null read back as NaN in the metric fields (NUMERIC_FIELDS)."""
  return nan_fields(json.loads(epath.Path(path).read_text()))


def nan_fields(obj):
  if isinstance(obj, dict):
    return {k: float("nan") if v is None and k in NUMERIC_FIELDS else nan_fields(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [nan_fields(v) for v in obj]
  return obj


def temp_name(path) -> epath.Path:
  """A temporary name beside `path`, unique to this writer: `{name}.tmp.{pid}.{random}`."""
  path = epath.Path(path)
  return path.with_name(f"{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary path (`temp_name`) to write; renamed onto `path` when the block ends, removed
  if it raises. Any path etils.epath understands (a rename is atomic on a local disk; on GCS a copy
  and delete)."""
  path = epath.Path(path)
  tmp = temp_name(path)
  try:
    yield tmp
    tmp.replace(path)
  except BaseException:
    with contextlib.suppress(OSError):
      if tmp.exists():
        tmp.unlink()
    raise


@contextlib.contextmanager
def open_atomic(path, mode: str = "wb"):
  """`open(path, mode)` for writing, through `atomic_path` (e.g. for np.savez)."""
  with atomic_path(path) as tmp:
    with tmp.open(mode) as f:
      yield f


def write_bytes(path, data: bytes) -> None:
  with atomic_path(path) as tmp:
    tmp.write_bytes(data)


def write_text(path, text: str) -> None:
  with atomic_path(path) as tmp:
    tmp.write_text(text)


def write_json(path, obj, indent: int = 2, sort_keys: bool = True) -> None:
  """Strict JSON (`strict`: NaN/inf as null), written atomically."""
  write_text(path, json.dumps(strict(obj), indent=indent, sort_keys=sort_keys, allow_nan=False))
