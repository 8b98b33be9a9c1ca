"""tf.data input pipelines: contrastive pairs (SimCLR, MICLe bags) and supervised batches.

Index-based and resumable. The stream of units (images for SimCLR and fine-tuning, cases for
MICLe) is, epoch after epoch, a seeded permutation of the units; epochs hold a whole number of
global batches (the tail of a permutation that does not fill a batch is skipped, so no batch
straddles two epochs and no unit appears twice in a batch). Global batch s holds stream
positions [s*B, (s+1)*B); process p of P takes the contiguous slice [p*B/P, (p+1)*B/P). Every
random choice of an example (which two images of a bag, every augmentation) is seeded by
(seed, global stream position), so the batch at step s is a pure function of (seed, s):
resuming at step s, or splitting the batch over processes, gives exactly the examples and views
of one uninterrupted single-process run. Only the chosen images are read and decoded.
"""
from typing import Iterator

import numpy as np
import tensorflow as tf

from input_pipeline import augment

tf.config.set_visible_devices([], "GPU")  # the host pipeline never takes accelerator memory
AUTOTUNE = tf.data.AUTOTUNE


def _check_split(global_batch: int, process_count: int, num_units: int, what: str) -> int:
  if global_batch <= 0 or global_batch % process_count:
    raise ValueError(f"global batch {global_batch} is not divisible by the {process_count} processes")
  if global_batch > num_units:
    raise ValueError(f"global batch {global_batch} is larger than the {num_units} {what} of the data set; "
                     f"lower train.batch_size")
  return global_batch // process_count


def _epoch_perm(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch, 104729]).permutation(n)


def _positions(num_units, global_batch, seed, start_step, process_index, process_count):
  """Yields (global position, unit) for this process's share of steps start_step, start_step+1, ..."""
  local = global_batch // process_count
  steps_per_epoch = num_units // global_batch
  step, cached = start_step, (None, None)
  while True:
    epoch, k = divmod(step, steps_per_epoch)
    if cached[0] != epoch:
      cached = (epoch, _epoch_perm(seed, epoch, num_units))
    lo = k * global_batch + process_index * local
    for j in range(local):
      yield step * global_batch + process_index * local + j, int(cached[1][lo + j])
    step += 1


def _bag_table(source, max_bag_size: int):
  """Sorted case ids, and per case its first `max_bag_size` image indices (padded with -1)."""
  cases = source.cases()
  case_ids = sorted(cases)
  table = np.full((len(case_ids), max_bag_size), -1, np.int64)
  sizes = np.zeros(len(case_ids), np.int64)
  for c, cid in enumerate(case_ids):
    idx = np.asarray(cases[cid])[:max_bag_size]
    table[c, :len(idx)], sizes[c] = idx, len(idx)
  return case_ids, table, sizes


def _loader(source):
  """uint8 (H, W, 1 or 3) image for an index: gathered from memory or read and decoded."""
  if source.images is not None:
    images = tf.constant(source.images)
    return lambda i: tf.gather(images, i)
  paths = tf.constant(np.asarray(source.paths).astype(str))

  def load(i):
    img = tf.io.decode_image(tf.io.read_file(tf.gather(paths, i)), channels=0, dtype=tf.uint8,
                             expand_animations=False)
    c = tf.shape(img)[-1]
    return tf.cond(c >= 3, lambda: img[..., :3], lambda: img[..., :1])  # drop alpha
  return load


def make_pretrain_dataset(source, *, data_cfg, aug_cfg, method: str, global_batch: int, seed: int,
                          start_step: int = 0, process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Process-local batches {view_a, view_b, case_index, image_a, image_b} (+ distinct for MICLe)."""
  if method == "simclr":
    table = np.arange(len(source), dtype=np.int64)[:, None]
    sizes = np.ones(len(source), np.int64)
    case_of_image = {cid: k for k, cid in enumerate(sorted(source.cases()))}
    case_index = np.array([case_of_image[c] for c in source.case_ids], np.int64)
    what = "images"
  elif method == "micle":
    _, table, sizes = _bag_table(source, int(data_cfg.max_bag_size))
    case_index = np.arange(len(table), dtype=np.int64)
    what = "cases"
  else:
    raise ValueError(f"method={method!r}: expected 'simclr' or 'micle'")
  local = _check_split(global_batch, process_count, len(table), what)

  def examples():
    for pos, unit in _positions(len(table), global_batch, seed, start_step, process_index, process_count):
      m = sizes[unit]
      if m >= 2:  # two DIFFERENT images of the bag, uniformly over ordered pairs
        a, b = np.random.default_rng([seed, pos, 15485863]).choice(m, size=2, replace=False)
      else:
        a = b = 0
      yield (table[unit, a], table[unit, b], case_index[unit], np.array([seed, 2 * pos], np.int64),
             np.array([seed, 2 * pos + 1], np.int64))

  spec = (tf.TensorSpec([], tf.int64),) * 3 + (tf.TensorSpec([2], tf.int64),) * 2
  load = _loader(source)
  view = augment.make_view_fn(aug_cfg, int(data_cfg.image_size), int(data_cfg.channels))

  def make_pair(ia, ib, case, sa, sb):
    out = {"view_a": view(load(ia), sa), "view_b": view(load(ib), sb), "case_index": tf.cast(case, tf.int32),
           "image_a": tf.cast(ia, tf.int32), "image_b": tf.cast(ib, tf.int32)}
    if method == "micle":  # reported as the fraction of pairs from two different images
      out["distinct"] = tf.not_equal(ia, ib)
    return out

  ds = tf.data.Dataset.from_generator(examples, output_signature=spec)
  ds = ds.map(make_pair, num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.batch(local, drop_remainder=True).prefetch(AUTOTUNE)


def pretrain_iterator(source, **kwargs) -> Iterator[dict]:
  return make_pretrain_dataset(source, **kwargs).as_numpy_iterator()


def make_supervised_dataset(source, *, aug_cfg, image_size: int, channels: int, global_batch: int, seed: int,
                            start_step: int = 0, process_index: int = 0, process_count: int = 1,
                            indices=None) -> tf.data.Dataset:
  """Process-local batches {image, label, index} of one augmented view per labelled image."""
  indices = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
  local = _check_split(global_batch, process_count, len(indices), "labelled images")
  labels = np.asarray(source.labels)

  def examples():
    for pos, unit in _positions(len(indices), global_batch, seed, start_step, process_index, process_count):
      i = indices[unit]
      yield i, labels[i], np.array([seed, pos], np.int64)

  label_spec = tf.TensorSpec(labels.shape[1:], tf.float32 if labels.dtype.kind == "f" else tf.int32)
  spec = (tf.TensorSpec([], tf.int64), label_spec, tf.TensorSpec([2], tf.int64))
  load = _loader(source)
  view = augment.make_view_fn(aug_cfg, int(image_size), int(channels))
  ds = tf.data.Dataset.from_generator(examples, output_signature=spec)
  ds = ds.map(lambda i, y, s: {"image": view(load(i), s), "label": y, "index": tf.cast(i, tf.int32)},
              num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.batch(local, drop_remainder=True).prefetch(AUTOTUNE)


def make_eval_arrays(source, image_size: int, channels: int, indices=None, batch_size: int = 256):
  """(images float32 (N, S, S, C) in [0, 1], labels) without augmentation, in index order."""
  indices = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
  load = _loader(source)
  fn = augment.make_eval_fn(int(image_size), int(channels))
  ds = tf.data.Dataset.from_tensor_slices(indices).map(lambda i: fn(load(i)), num_parallel_calls=AUTOTUNE,
                                                       deterministic=True)
  images = np.concatenate(list(ds.batch(batch_size).as_numpy_iterator())) if len(indices) else \
      np.zeros((0, image_size, image_size, channels), np.float32)
  return images, np.asarray(source.labels)[indices]
