"""The NumPy host pipeline on `grain` worker processes (`data.pipeline='grain'`).

The NumPy pipeline (`numpy_pipeline.py`) augments on Python threads, which share one interpreter
lock: on a 16-core GPU host it gave 3 pairs/s per thread at 224 px (benchmarks/README.md,
"Accelerator check"). Here each batch is built whole by one of `data.host_workers` processes,
through grain's `MapDataset` and `mp_prefetch` (Google's JAX data loader: deterministic order,
shared-memory transfer of the arrays).

A batch is the same as the NumPy pipeline's batch at that step, array for array: the same
examples (`indexing.pair_batch` / `supervised_batch`, random access to the streams the other
pipelines iterate) and the same pair maker (`numpy_pipeline.pair_maker`: one decode per pair of
one image, geometry on the uint8 image in `augment_np`). So a run can switch between
'numpy' and 'grain', or resume with the other, and see the same data.
"""
import os
from typing import Iterator

import numpy as np

from input_pipeline import indexing
from input_pipeline import numpy_pipeline
from medssl_jax.errors import UserError

# The evaluation arrays (no augmentation, one pass) come from the NumPy pipeline.
make_eval_arrays = numpy_pipeline.make_eval_arrays
_NO_END = 2**40  # the batch streams are endless; grain wants a length


def _grain():
  try:
    import grain
  except ImportError as e:
    raise UserError(f"data.pipeline='grain' needs the grain package ({e}); pip install grain, or set "
                    f"data.pipeline='numpy'") from None
  from absl import flags
  if not flags.FLAGS.is_parsed():  # grain reads its absl flags; outside an absl app, use their defaults
    flags.FLAGS.mark_as_parsed()
  return grain


def workers(requested: int = 0) -> int:
  """Worker processes: `requested`, or (0) one per core, at most 16."""
  if requested < 0:
    raise UserError(f"data.host_workers={requested}: expected 0 (one per core) or a number of processes")
  return int(requested) or max(1, min(16, os.cpu_count() or 1))


class _PretrainBatch:
  """step -> this process's pretraining batch at that global step (picklable: sent to workers)."""

  def __init__(self, source, units, data_cfg, aug_cfg, pairing, global_batch, seed, process_index, process_count):
    self.table, self.sizes, self.case_index = units
    self.make = numpy_pipeline.pair_maker(source, data_cfg, aug_cfg, pairing)
    self.where = dict(global_batch=global_batch, seed=seed, process_index=process_index, process_count=process_count)

  def __call__(self, step) -> dict:
    examples = indexing.pair_batch(self.table, self.sizes, self.case_index, step=int(step), **self.where)
    return numpy_pipeline.stack_rows([self.make(e) for e in examples])


class _SupervisedBatch:
  def __init__(self, source, aug_cfg, image_size, channels, indices, global_batch, seed, process_index,
               process_count, oversample=False):
    self.indices, self.labels = indices, np.asarray(source.labels)
    self.order = indexing.supervised_order(self.labels, indices, seed, oversample)
    self.make = numpy_pipeline.supervised_maker(source, aug_cfg, image_size, channels)
    self.where = dict(global_batch=global_batch, seed=seed, process_index=process_index, process_count=process_count)

  def __call__(self, step) -> dict:
    examples = indexing.supervised_batch(self.indices, self.labels, step=int(step), order=self.order, **self.where)
    return numpy_pipeline.stack_rows([self.make(e) for e in examples])


def _iterate(make_batch, start_step: int, num_workers: int) -> Iterator[dict]:
  grain = _grain()
  # One thread per worker process and a small buffer: grain's defaults (16 threads, 500 elements
  # read ahead) would hold hundreds of whole batches in memory.
  read = grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)
  ds = grain.MapDataset.range(start_step, start_step + _NO_END).map(make_batch).to_iter_dataset(read)
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=2))
  it = iter(ds)
  try:
    yield from it
  finally:
    close = getattr(it, "close", None)
    if close is not None:
      close()


def pretrain_iterator(source, *, data_cfg, aug_cfg, pairing: str, global_batch: int, seed: int,
                      start_step: int = 0, process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Process-local batches {view_a, view_b, case_index, image_a, image_b} (+ distinct for MICLe)."""
  table, sizes, case_index, what = indexing.pretrain_units(source, pairing, data_cfg.max_bag_size, seed)
  indexing.check_split(global_batch, process_count, len(table), what)
  make = _PretrainBatch(source, (table, sizes, case_index), data_cfg, aug_cfg, pairing, global_batch, seed,
                        process_index, process_count)
  return _iterate(make, start_step, workers(int(getattr(data_cfg, "host_workers", 0))))


def supervised_iterator(source, *, aug_cfg, image_size: int, channels: int, global_batch: int, seed: int,
                        start_step: int = 0, process_index: int = 0, process_count: int = 1,
                        indices=None, repeat_to_fill: bool = False, num_workers: int = 0,
                        oversample: bool = False) -> Iterator[dict]:
  """Process-local batches {image, label, index} of one augmented view per labelled image."""
  indices = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
  indices, _ = indexing.supervised_units(indices, global_batch, process_count, repeat_to_fill)
  make = _SupervisedBatch(source, aug_cfg, image_size, channels, indices, global_batch, seed, process_index,
                          process_count, oversample)
  return _iterate(make, start_step, workers(num_workers))
