"""Batched, sharded forward passes over host arrays (feature extraction, test predictions).

Multi-host: every process holds the whole host array (the evaluation split is loaded on each),
but a process can only place data on its own devices and only read back its own shards. So each
batch is built with `jax.make_array_from_callback`, which asks this process for the rows of its
addressable shards only (whatever the mesh's device order), and the sharded output is gathered
to every process with `multihost_utils.process_allgather` (a replicating identity jit), in the
original row order. Every process then holds the same outputs and computes the same metrics; files
are written by process 0 (the callers' job). With one process both steps reduce to a plain
sharded put and `np.asarray`.
"""
from typing import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from medssl_jax.training.sharding import batch_sharding


def shard_host_array(x: np.ndarray, mesh) -> jax.Array:
  """A global array, sharded on the mesh's data axis, from a host array every process holds in full.

  Each process transfers only the rows of its own devices' shards; the first axis must divide
  evenly over the mesh's devices.
  """
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, batch_sharding(mesh), lambda index: x[index])


def gather_to_host(y):
  """The full value of a (possibly multi-process) output pytree as NumPy arrays, on every process."""
  return jax.tree_util.tree_map(lambda a: np.asarray(a),
                                multihost_utils.process_allgather(y, tiled=True))


def batched_apply(fn: Callable, images: np.ndarray, mesh, batch_size: int) -> np.ndarray:
  """Applies a jitted `fn(x) -> (n, ...)` to `images` in mesh-divisible, zero-padded batches.

  `images` must be the same on every process; the result (all rows, in order) is returned on
  every process.
  """
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
    y = fn(shard_host_array(chunk_p, mesh))
    out.append(gather_to_host(y)[:len(chunk)])
  return np.concatenate(out)
