"""Device mesh, batch sharding and the host-to-device feed.

One 1-D mesh over every device of every process, axis 'data'. Batches are sharded on that
axis, parameters replicated. Each process contributes its own slice of the global batch
(`jax.make_array_from_process_local_data`), so the same code runs on one CPU, on 8 simulated
devices, on a GPU and on a multi-host TPU slice.
"""
import collections
from typing import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from medssl_jax.errors import UserError

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_global_batch(global_batch: int, mesh: Mesh, what: str = "train.batch_size") -> int:
  """Returns the per-process batch; errors when the batch cannot be split evenly."""
  n_dev, n_proc = mesh.devices.size, jax.process_count()
  if global_batch <= 0 or global_batch % n_dev:
    raise UserError(f"{what}={global_batch} is not divisible by the {n_dev} devices of the mesh; "
                     f"use a multiple of {n_dev}")
  return global_batch // n_proc


def to_global(local_batch: dict, mesh: Mesh) -> dict:
  """Builds global arrays, sharded on the data axis, from this process's slice of the batch."""
  sharding = batch_sharding(mesh)
  return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                                local_batch)


def prefetch_to_mesh(batches: Iterable[dict], mesh: Mesh, size: int = 2) -> Iterator[dict]:
  """Keeps `size` batches in flight on the devices ahead of the consumer (async transfers).

  Closing this generator closes `batches` too (when it can be closed), so that the host pipeline
  stops with the loop that feeds on it.
  """
  queue = collections.deque()
  it = iter(batches)

  def enqueue(n):
    for _ in range(n):
      try:
        queue.append(to_global(next(it), mesh))
      except StopIteration:
        return

  try:
    enqueue(max(size, 1))
    while queue:
      yield queue.popleft()
      enqueue(1)
  finally:
    queue.clear()
    close = getattr(it, "close", None)
    if close is not None:
      close()
