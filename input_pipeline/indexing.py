"""Which examples go into which batch: the index streams shared by both host pipelines.

Pure NumPy (no TensorFlow), so the tf.data pipeline (`pipeline.py`) and the NumPy pipeline
(`numpy_pipeline.py`) put exactly the same images, pairs and augmentation seeds in every batch.

The stream of units (images for SimCLR and fine-tuning, cases for MICLe) is, epoch after
epoch, a seeded permutation of the units; epochs hold a whole number of global batches (the
tail of a permutation that does not fill a batch is skipped, so no batch straddles two epochs
and no unit appears twice in a batch). Global batch s holds stream positions [s*B, (s+1)*B);
process p of P takes the contiguous slice [p*B/P, (p+1)*B/P). Every random choice of an
example (which two images of a bag, every augmentation) is seeded by (seed, global stream
position), so the batch at step s is a pure function of (seed, s).
"""
import functools
import itertools
from typing import Iterator, Tuple

import numpy as np

from input_pipeline import subsets
from medssl_jax.errors import UserError

PAIRINGS = ("views", "case")  # two views of one image; two images of one case (MICLe)


def check_split(global_batch: int, process_count: int, num_units: int, what: str,
                hint: str = "lower train.batch_size") -> int:
  """The per-process batch; ValueError when the global batch cannot be split or filled."""
  if global_batch <= 0 or global_batch % process_count:
    raise ValueError(f"global batch {global_batch} is not divisible by the {process_count} processes")
  if global_batch > num_units:
    raise ValueError(f"global batch {global_batch} is larger than the {num_units} {what} of the data set; {hint}")
  return global_batch // process_count


def supervised_order(labels, indices, seed: int, oversample: bool):
  """The per-epoch unit order of `finetune.oversample` (None: a permutation per epoch): units drawn
  with replacement so that each group of `subsets.oversample_groups` is equally frequent."""
  if not oversample:
    return None
  return subsets.Oversampled(subsets.oversample_groups(np.asarray(labels)[np.asarray(indices)]), seed)


def supervised_units(indices, global_batch: int, process_count: int, repeat_to_fill: bool):
  """(stream units, per-process batch) of the labelled images `indices`.

  Each image is one unit. With `repeat_to_fill`, a labelled set smaller than the global batch
  is repeated ceil(B / n) times, so that an epoch holds a whole batch: an image then appears
  more than once in a batch, as different augmented views (e.g. 5 labelled images on 8
  devices). Without it such a batch is refused.
  """
  indices = np.asarray(indices, np.int64)
  if len(indices) == 0:
    raise ValueError("no labelled images to train on (check finetune.label_fraction and the training split)")
  if repeat_to_fill and global_batch > len(indices):
    indices = np.tile(indices, -(-global_batch // len(indices)))
  local = check_split(global_batch, process_count, len(indices), "labelled images",
                      "lower train.batch_size, or set finetune.repeat_to_fill_batch=True to repeat them within a batch")
  return indices, local


@functools.lru_cache(maxsize=2)
def epoch_perm(seed: int, epoch: int, n: int) -> np.ndarray:
  """The unit order of one epoch (cached: consecutive steps share it; do not modify it)."""
  return np.random.default_rng([seed, epoch, 104729]).permutation(n)


def step_positions(num_units, global_batch, seed, step, process_index, process_count, order=None) -> list:
  """[(global position, unit)] of this process's share of global batch `step`. `order(epoch)`, if
  given, is each epoch's unit order (oversampling, `subsets.Oversampled`) instead of a permutation."""
  local = global_batch // process_count
  epoch, k = divmod(step, num_units // global_batch)
  perm = epoch_perm(int(seed), int(epoch), int(num_units)) if order is None else order(int(epoch))
  lo = k * global_batch + process_index * local
  return [(step * global_batch + process_index * local + j, int(perm[lo + j])) for j in range(local)]


def positions(num_units, global_batch, seed, start_step, process_index, process_count, order=None):
  """Yields (global position, unit) for this process's share of steps start_step, start_step+1, ..."""
  for step in itertools.count(start_step):
    yield from step_positions(num_units, global_batch, seed, step, process_index, process_count, order)


def bag_table(source, max_bag_size: int, seed: int = 0):
  """Sorted case ids, and per case the indices of its images (padded with -1), sorted.

  A case with more than `max_bag_size` images (> 0) keeps a random subset of that many, drawn
  from all of its images with `seed` (the same for every pipeline, process and resume of a run;
  not its first ones: MICLe's Algorithm 1 samples from the whole bag). 0 keeps every image."""
  if int(max_bag_size) < 0:
    raise UserError(f"data.max_bag_size={max_bag_size}: expected 0 (every image of a case) or a positive cap")
  cases = source.cases()
  case_ids = sorted(cases)
  largest = max((len(v) for v in cases.values()), default=1)
  width = largest if max_bag_size <= 0 else min(int(max_bag_size), largest)
  table = np.full((len(case_ids), max(width, 1)), -1, np.int64)
  sizes = np.zeros(len(case_ids), np.int64)
  for c, cid in enumerate(case_ids):
    idx = np.asarray(cases[cid], np.int64)
    if len(idx) > width:
      idx = np.sort(np.random.default_rng([int(seed), c]).choice(idx, width, replace=False))
    table[c, :len(idx)], sizes[c] = idx, len(idx)
  return case_ids, table, sizes


def pretrain_units(source, pairing: str, max_bag_size: int, seed: int = 0):
  """(table (units, M) of image indices, bag sizes, case index per unit, what a unit is).

  pairing 'views': a unit is an image (two augmentations of it); 'case': a unit is a case, whose
  pair is two different images of it when it has several (MICLe, Azizi et al. 2021 Sec. 3.2)."""
  if pairing == "views":
    table = np.arange(len(source), dtype=np.int64)[:, None]
    sizes = np.ones(len(source), np.int64)
    case_of_image = {cid: k for k, cid in enumerate(sorted(source.cases()))}
    case_index = np.array([case_of_image[c] for c in source.case_ids], np.int64)
    return table, sizes, case_index, "images"
  if pairing == "case":
    _, table, sizes = bag_table(source, int(max_bag_size), seed)
    return table, sizes, np.arange(len(table), dtype=np.int64), "cases"
  raise ValueError(f"pairing={pairing!r}: expected one of {PAIRINGS}")


def pair_stream(table, sizes, case_index, *, global_batch, seed, start_step, process_index,
                process_count) -> Iterator[Tuple[int, int, int, np.ndarray, np.ndarray]]:
  """(image a, image b, case, view seed a, view seed b) per example, in batch order.

  For a bag of M >= 2 images, two DIFFERENT images, uniformly over ordered pairs; for M = 1
  the same image twice (two views of it).
  """
  for pos, unit in positions(len(table), global_batch, seed, start_step, process_index, process_count):
    yield pair_example(table, sizes, case_index, seed, pos, unit)


def pair_example(table, sizes, case_index, seed, pos, unit):
  """The example of `pair_stream` at global stream position `pos` (holding `unit`)."""
  m = sizes[unit]
  if m >= 2:
    a, b = np.random.default_rng([seed, pos, 15485863]).choice(m, size=2, replace=False)
  else:
    a = b = 0
  return (int(table[unit, a]), int(table[unit, b]), int(case_index[unit]), np.array([seed, 2 * pos], np.int64),
          np.array([seed, 2 * pos + 1], np.int64))


def pair_batch(table, sizes, case_index, *, global_batch, seed, step, process_index, process_count) -> list:
  """This process's examples of global batch `step`: the same as `pair_stream` yields for it."""
  return [pair_example(table, sizes, case_index, seed, pos, unit)
          for pos, unit in step_positions(len(table), global_batch, seed, step, process_index, process_count)]


def supervised_stream(indices, labels, *, global_batch, seed, start_step, process_index, process_count, order=None):
  """(image index, label, view seed) per example, in batch order (`order`: see step_positions)."""
  for pos, unit in positions(len(indices), global_batch, seed, start_step, process_index, process_count, order):
    i = int(indices[unit])
    yield i, labels[i], np.array([seed, pos], np.int64)


def supervised_batch(indices, labels, *, global_batch, seed, step, process_index, process_count, order=None) -> list:
  """This process's examples of global batch `step`: the same as `supervised_stream` yields for it."""
  out = []
  for pos, unit in step_positions(len(indices), global_batch, seed, step, process_index, process_count, order):
    i = int(indices[unit])
    out.append((i, labels[i], np.array([seed, pos], np.int64)))
  return out
