"""Batched, sharded forward passes over host arrays (feature extraction, test predictions)."""
from typing import Callable

import jax
import numpy as np

from medssl_jax.training.sharding import to_global


def batched_apply(fn: Callable, images: np.ndarray, mesh, batch_size: int) -> np.ndarray:
  """Applies a jitted `fn(x) -> (n, ...)` to `images` in mesh-divisible, zero-padded batches."""
  n_dev = mesh.devices.size
  batch_size = max(n_dev, batch_size - batch_size % n_dev)
  out = []
  for i in range(0, len(images), batch_size):
    chunk = images[i:i + batch_size]
    pad = (-len(chunk)) % n_dev
    if pad:
      chunk_p = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    else:
      chunk_p = chunk
    y = fn(to_global({"x": chunk_p}, mesh)["x"])
    out.append(np.asarray(jax.device_get(y))[:len(chunk)])
  return np.concatenate(out)
