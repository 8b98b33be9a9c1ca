"""tf.data input pipelines: contrastive pairs (SimCLR, MICLe bags) and supervised batches.

Index-based and resumable: which images, pairs and augmentation seeds make up the batch at
step s is decided by `indexing.py` (a pure function of (seed, s)), so resuming at step s, or
splitting the batch over processes, gives exactly the examples and views of one uninterrupted
single-process run. Only the chosen images are read and decoded, once per pair when both views
come from one image. `numpy_pipeline.py` is the TensorFlow-free twin with the same interface and
the same index streams.
"""
import itertools
import re
import traceback
from typing import Iterator

import numpy as np
import tensorflow as tf

from input_pipeline import augment
from input_pipeline import indexing
from input_pipeline import view_plan
from medssl_jax.errors import UserError

tf.config.set_visible_devices([], "GPU")  # the host pipeline never takes accelerator memory
AUTOTUNE = tf.data.AUTOTUNE


def _loader(source):
  """uint8 (H, W, 1 or 3) image for an index: gathered from memory or read and decoded."""
  if source.images is not None:
    images = tf.constant(source.images)
    return lambda i: tf.gather(images, i)
  if source.records is not None:  # the encoded bytes of record i (random access), decoded by TF
    records = source.records
    read = lambda i: tf.numpy_function(lambda k: records[int(k)], [i], tf.string, stateful=False)  # noqa: E731
  else:
    paths = tf.constant(np.asarray(source.paths).astype(str))
    read = lambda i: tf.io.read_file(tf.gather(paths, i))  # noqa: E731

  def load(i):
    img = tf.io.decode_image(tf.reshape(read(i), []), channels=0, dtype=tf.uint8, expand_animations=False)
    c = tf.shape(img)[-1]
    return tf.cond(c >= 3, lambda: img[..., :3], lambda: img[..., :1])  # drop alpha
  return load


def make_pretrain_dataset(source, *, data_cfg, aug_cfg, pairing: str, global_batch: int, seed: int,
                          start_step: int = 0, process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Process-local batches {view_a, view_b, case_index, image_a, image_b} (+ distinct for MICLe)."""
  table, sizes, case_index, what = indexing.pretrain_units(source, pairing, data_cfg.max_bag_size, seed)
  indexing.check_split(global_batch, process_count, len(table), what)
  local = global_batch // process_count

  def examples():
    return indexing.pair_stream(table, sizes, case_index, global_batch=global_batch, seed=seed,
                                start_step=start_step, process_index=process_index, process_count=process_count)

  spec = (tf.TensorSpec([], tf.int64),) * 3 + (tf.TensorSpec([2], tf.int64),) * 2
  load = _loader(source)
  on_device = bool(getattr(aug_cfg, "on_device", False))
  view = augment.make_view_fn(aug_cfg, int(data_cfg.image_size), int(data_cfg.channels), on_device=on_device)
  num_local = view_plan.num_local_crops(aug_cfg)
  if num_local:
    local_view = augment.make_view_fn(view_plan.LocalAug(aug_cfg), int(aug_cfg.local_crop_size),
                                      int(data_cfg.channels), on_device=on_device)

  def make_pair(ia, ib, case, sa, sb):
    image_a = load(ia)
    # Both views of one image (pairing 'views', or a case of one image): one read and decode. tf.cond runs
    # only the branch it takes.
    image_b = tf.cond(tf.equal(ia, ib), lambda: image_a, lambda: load(ib))
    out = {"view_a": view(image_a, sa), "view_b": view(image_b, sb), "case_index": tf.cast(case, tf.int32),
           "image_a": tf.cast(ia, tf.int32), "image_b": tf.cast(ib, tf.int32)}
    if num_local:  # the NumPy pipeline's local views: the same images and seeds (view_plan.local_seed)
      out["local_views"] = tf.stack([
          local_view(image_b if j % 2 else image_a, view_plan.local_seed(sb if j % 2 else sa, j))
          for j in range(num_local)])
    if pairing == "case":  # reported as the fraction of pairs from two different images
      out["distinct"] = tf.not_equal(ia, ib)
    return out

  ds = tf.data.Dataset.from_generator(examples, output_signature=spec)
  ds = ds.map(make_pair, num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.batch(local, drop_remainder=True).prefetch(AUTOTUNE)


_DECODE_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError, tf.errors.NotFoundError)


def _numpy_batches(ds: tf.data.Dataset, source, images_of_batch) -> Iterator[dict]:
  """The dataset's batches as NumPy; an image that TensorFlow cannot decode is a UserError
  naming its file (`images_of_batch(k)`: the image indices of the k-th batch, to look in).

  The TF iterator lives only in this generator's frame and is deleted as soon as the generator
  ends, fails or is closed, while the interpreter still runs: destroyed during interpreter
  shutdown instead (a failed run's traceback keeps it alive until then), it can wait forever
  for a `from_generator` thread that needs the GIL, and the process never exits.
  """
  it = ds.as_numpy_iterator()
  try:
    k = 0
    while True:
      try:
        batch = next(it)
      except StopIteration:
        return
      except Exception as e:
        traceback.clear_frames(e.__traceback__)  # TF's frames in it hold the iterator: let `del it` free it
        if not isinstance(e, _DECODE_ERRORS) or source.paths is None:
          raise
        bad = _undecodable(source, images_of_batch(k))
        if not bad:
          raise
        raise UserError(f"cannot decode image {bad[0][0]} ({source.name}, image id {bad[0][1]}: {bad[0][2]})"
                        + (f" and {len(bad) - 1} more in the same batch" if len(bad) > 1 else "")
                        + "; replace or remove it (data.verify_images=True checks every image before "
                        "training)") from None
      yield batch
      k += 1
  finally:
    del it


def _undecodable(source, indices) -> list:
  """(path, image id, TensorFlow's message) of each image among `indices` that does not decode."""
  bad = []
  for i in sorted(set(int(i) for i in indices)):
    try:
      tf.io.decode_image(tf.io.read_file(source.paths[i]), channels=0, dtype=tf.uint8, expand_animations=False)
    except _DECODE_ERRORS as e:
      message = re.sub(r"\{\{[^}]*\}\}|\s*\[Op:.*$", "", e.message.splitlines()[0]).strip()  # TF's op names
      bad.append((source.paths[i], source.image_ids[i], message))
  return bad


def pretrain_iterator(source, *, data_cfg, pairing: str, global_batch: int, seed: int, start_step: int = 0,
                      process_index: int = 0, process_count: int = 1, **kwargs) -> Iterator[dict]:
  where = dict(global_batch=global_batch, seed=seed, process_index=process_index, process_count=process_count)
  ds = make_pretrain_dataset(source, data_cfg=data_cfg, pairing=pairing, start_step=start_step, **where, **kwargs)

  def images_of_batch(k):
    table, sizes, case_index, _ = indexing.pretrain_units(source, pairing, data_cfg.max_bag_size, seed)
    stream = indexing.pair_stream(table, sizes, case_index, start_step=start_step + k, **where)
    return [i for ex in itertools.islice(stream, global_batch // process_count) for i in ex[:2]]
  return _numpy_batches(ds, source, images_of_batch)


def make_supervised_dataset(source, *, aug_cfg, image_size: int, channels: int, global_batch: int, seed: int,
                            start_step: int = 0, process_index: int = 0, process_count: int = 1,
                            indices=None, repeat_to_fill: bool = False, oversample: bool = False) -> tf.data.Dataset:
  """Process-local batches {image, label, index} of one augmented view per labelled image
  (`repeat_to_fill`: see `indexing.supervised_units`; `oversample`: `indexing.supervised_order`)."""
  indices = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
  indices, local = indexing.supervised_units(indices, global_batch, process_count, repeat_to_fill)
  labels = np.asarray(source.labels)
  order = indexing.supervised_order(labels, indices, seed, oversample)

  def examples():
    return indexing.supervised_stream(indices, labels, global_batch=global_batch, seed=seed, start_step=start_step,
                                      process_index=process_index, process_count=process_count, order=order)

  label_spec = tf.TensorSpec(labels.shape[1:], tf.float32 if labels.dtype.kind == "f" else tf.int32)
  spec = (tf.TensorSpec([], tf.int64), label_spec, tf.TensorSpec([2], tf.int64))
  load = _loader(source)
  view = augment.make_view_fn(aug_cfg, int(image_size), int(channels))
  ds = tf.data.Dataset.from_generator(examples, output_signature=spec)
  ds = ds.map(lambda i, y, s: {"image": view(load(i), s), "label": y, "index": tf.cast(i, tf.int32)},
              num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.batch(local, drop_remainder=True).prefetch(AUTOTUNE)


def supervised_iterator(source, *, global_batch: int, seed: int, start_step: int = 0, process_index: int = 0,
                        process_count: int = 1, indices=None, repeat_to_fill: bool = False, oversample: bool = False,
                        **kwargs) -> Iterator[dict]:
  where = dict(global_batch=global_batch, seed=seed, process_index=process_index, process_count=process_count)
  ds = make_supervised_dataset(source, start_step=start_step, indices=indices, repeat_to_fill=repeat_to_fill,
                               oversample=oversample, **where, **kwargs)
  units = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
  units, local = indexing.supervised_units(units, global_batch, process_count, repeat_to_fill)
  order = indexing.supervised_order(source.labels, units, seed, oversample)

  def images_of_batch(k):
    stream = indexing.supervised_stream(units, np.asarray(source.labels), start_step=start_step + k, order=order,
                                        **where)
    return [ex[0] for ex in itertools.islice(stream, local)]
  return _numpy_batches(ds, source, images_of_batch)


def make_eval_arrays(source, image_size: int, channels: int, indices=None, batch_size: int = 256,
                     crop_fraction: float = 1.0):
  """(images float32 (N, S, S, C) in [0, 1], labels) without augmentation, in index order.

  `crop_fraction` (aug.eval_crop_fraction): 1.0 resizes the whole image; < 1 resizes its
  centred square of that fraction of the short side (the SimCLR code's 0.875), the same box in
  both host pipelines.
  """
  indices = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
  load = _loader(source)
  fn = augment.make_eval_fn(int(image_size), int(channels), float(crop_fraction))
  ds = tf.data.Dataset.from_tensor_slices(indices).map(lambda i: fn(load(i)), num_parallel_calls=AUTOTUNE,
                                                       deterministic=True)
  batches = _numpy_batches(ds.batch(batch_size), source, lambda k: indices[k * batch_size:(k + 1) * batch_size])
  images = np.concatenate(list(batches)) if len(indices) else \
      np.zeros((0, image_size, image_size, channels), np.float32)
  return images, np.asarray(source.labels)[indices]
