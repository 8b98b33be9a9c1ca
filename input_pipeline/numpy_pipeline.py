"""The TensorFlow-free host pipeline: the same batches as `pipeline.py`, built with NumPy.

Same interface (`pretrain_iterator`, `supervised_iterator`, `make_eval_arrays`) and the same
index streams (`indexing.py`): every batch holds the same images, pairs and view seeds as the
tf.data pipeline's batch at that step; only the augmentation draws differ (`augment_np.py`
follows the same distributions with NumPy generators). For machines with JAX but no
TensorFlow (e.g. a GPU box); arrays come from memory (.npz, synthetic) or from image files
decoded with OpenCV or Pillow (`_decode`), once per pair when both views come from one image;
the geometric ops run on the decoded uint8 image (`augment_np`). Examples are augmented on a
thread pool and batches are built one ahead on a background thread, so the host works while the
device trains.
"""
import concurrent.futures
import io
import os
import queue
import threading
from typing import Callable, Iterator

import cv2
import numpy as np
from PIL import Image

from input_pipeline import augment_np
from input_pipeline import indexing
from input_pipeline import view_plan
from medssl_jax.errors import UserError


# The files OpenCV decodes to exactly Pillow's pixels (tests/input_pipeline/test_decode.py; both use
# libjpeg-turbo and libpng, and OpenCV ~1.5x faster, mostly by skipping Pillow's copies): (format, Pillow mode)
# -> (the dtype, channel counts OpenCV's IMREAD_UNCHANGED gives for them). Any other file, or any other result
# (a 16-bit RGB PNG, a grey PNG with a transparent colour, ...), is decoded by Pillow.
_CV2_DECODES = {("JPEG", "L"): (np.uint8, (1,)), ("JPEG", "RGB"): (np.uint8, (3,)),
                ("PNG", "L"): (np.uint8, (1,)), ("PNG", "RGB"): (np.uint8, (3, 4)), ("PNG", "RGBA"): (np.uint8, (4,)),
                ("PNG", "P"): (np.uint8, (3, 4)), ("PNG", "I;16"): (np.uint16, (1,)), ("PNG", "I"): (np.uint16, (1,))}
_16_TO_8 = np.round(np.arange(65536) / 257.0).astype(np.uint8)  # x / 257, rounded: 16-bit grey levels to 8 bits


def _decode_pillow(f) -> np.ndarray:
  """uint8 (H, W) or (H, W, 3) of an image file object, by Pillow (every format it reads)."""
  with Image.open(f) as im:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
      return np.round(np.asarray(im, np.float64) / 257.0).clip(0, 255).astype(np.uint8)
    if im.mode in ("L", "1", "LA", "F"):
      return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))


def _decode_opencv(data: bytes):
  """`_decode_pillow`'s array of the encoded `data` by OpenCV, or None for a file it is not known to
  decode alike (or cannot decode: Pillow then says why)."""
  with Image.open(io.BytesIO(data)) as im:  # the header only
    expected, (w, h) = _CV2_DECODES.get((im.format, im.mode)), im.size
  if expected is None:
    return None
  x = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # as stored: no EXIF turn, BGR(A)
  dtype, channels = expected
  if x is None or x.shape[:2] != (h, w) or x.dtype != dtype or (x.shape[2] if x.ndim == 3 else 1) not in channels:
    return None
  if x.dtype == np.uint16:
    return _16_TO_8[x]
  if x.ndim == 3:
    return cv2.cvtColor(x, cv2.COLOR_BGRA2RGB if x.shape[2] == 4 else cv2.COLOR_BGR2RGB)
  return x


def _decode(path, name: str = "") -> np.ndarray:
  """uint8 (H, W, 1 or 3) of a file path or file object; 16-bit greys are scaled to 8 bits
  (x / 257), alpha is dropped. A file that cannot be decoded (truncated, corrupt) is a UserError
  naming it (`name`, else the path). Common JPEG and PNG files are decoded by OpenCV, others by
  Pillow, to the same pixels (`_CV2_DECODES`)."""
  name = name or path
  try:
    if hasattr(path, "read"):
      data = path.read()
    else:
      with open(path, "rb") as f:
        data = f.read()
    x = _decode_opencv(data)
    if x is None:
      x = _decode_pillow(io.BytesIO(data))
  except Exception as e:  # Pillow raises many types for a bad file
    raise UserError(f"cannot decode image {name} ({type(e).__name__}: {e}); replace or remove it "
                    f"(data.verify_images=True checks every image before training)") from e
  return x[..., None] if x.ndim == 2 else x


def _loader(source) -> Callable[[int], np.ndarray]:
  """uint8 (H, W, 1 or 3) image for an index: from memory, or read and decoded (`_decode`)."""
  if source.images is not None:
    images = source.images
    return lambda i: images[i]
  if source.records is not None:
    records = source.records
    return lambda i: _decode(io.BytesIO(records[i]), f"record {int(i)} ({source.image_ids[i]}) of {source.name}")
  paths = [str(p) for p in source.paths]
  return lambda i: _decode(paths[i])


def _batched(examples: Iterator, local: int, make: Callable, workers: int) -> Iterator[dict]:
  """Groups `local` examples per batch, maps `make` over them on a pool, stacks dict fields."""
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
  try:
    while True:
      chunk = [next(examples) for _ in range(local)]
      yield stack_rows(list(pool.map(make, chunk)))
  finally:
    pool.shutdown(wait=False, cancel_futures=True)


def _background(it: Iterator[dict], depth: int = 2) -> Iterator[dict]:
  """Runs `it` on a daemon thread, `depth` batches ahead; re-raises its errors here.

  Closing (or dropping) the returned generator stops the thread, which then closes `it` (its
  thread pool is shut down): a failed run leaves no worker behind."""
  q: queue.Queue = queue.Queue(maxsize=depth)
  done = object()
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def work():
    try:
      for item in it:
        if not put(item):
          return
      put(done)
    except BaseException as e:  # handed to the consumer, which raises it
      put(e)
    finally:
      close = getattr(it, "close", None)
      if close is not None:
        close()

  threading.Thread(target=work, daemon=True, name="numpy-pipeline").start()
  try:
    while True:
      item = q.get()
      if item is done:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()


def _workers() -> int:
  return max(1, min(8, os.cpu_count() or 1))


def pretrain_iterator(source, *, data_cfg, aug_cfg, pairing: str, global_batch: int, seed: int,
                      start_step: int = 0, process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Process-local batches {view_a, view_b, case_index, image_a, image_b} (+ distinct for MICLe, + local_views
  (N, L, s, s, C) with aug.local_crops = L)."""
  table, sizes, case_index, what = indexing.pretrain_units(source, pairing, data_cfg.max_bag_size, seed)
  local = indexing.check_split(global_batch, process_count, len(table), what)
  stream = indexing.pair_stream(table, sizes, case_index, global_batch=global_batch, seed=seed,
                                start_step=start_step, process_index=process_index, process_count=process_count)
  return _background(_batched(stream, local, pair_maker(source, data_cfg, aug_cfg, pairing), _workers()))


def pair_maker(source, data_cfg, aug_cfg, pairing: str) -> Callable:
  """fn(example of `indexing.pair_stream`) -> the batch row {view_a, view_b, ...} of that pair."""
  load = _loader(source)
  on_device = bool(getattr(aug_cfg, "on_device", False))
  view = augment_np.make_view_fn(aug_cfg, int(data_cfg.image_size), int(data_cfg.channels), on_device=on_device)
  num_local = view_plan.num_local_crops(aug_cfg)
  if num_local:
    local_view = augment_np.make_view_fn(view_plan.LocalAug(aug_cfg), int(aug_cfg.local_crop_size),
                                         int(data_cfg.channels), on_device=on_device)

  def make_pair(example):
    ia, ib, case, sa, sb = example
    image_a = load(ia)
    image_b = image_a if ib == ia else load(ib)  # both views of one image: decoded once (views never write to it)
    out = {"view_a": view(image_a, sa), "view_b": view(image_b, sb), "case_index": np.int32(case),
           "image_a": np.int32(ia), "image_b": np.int32(ib)}
    if num_local:  # view_plan.local_seed: from image a (even j) or b (odd j)
      out["local_views"] = np.stack([
          local_view(image_b if j % 2 else image_a,
                     view_plan.local_seed(np.asarray(sb if j % 2 else sa, np.int64), j)) for j in range(num_local)])
    if pairing == "case":
      out["distinct"] = np.bool_(ia != ib)
    return out

  return make_pair


def supervised_iterator(source, *, aug_cfg, image_size: int, channels: int, global_batch: int, seed: int,
                        start_step: int = 0, process_index: int = 0, process_count: int = 1,
                        indices=None, repeat_to_fill: bool = False, oversample: bool = False) -> Iterator[dict]:
  """Process-local batches {image, label, index} of one augmented view per labelled image
  (`repeat_to_fill`: see `indexing.supervised_units`; `oversample`: `indexing.supervised_order`)."""
  indices = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
  indices, local = indexing.supervised_units(indices, global_batch, process_count, repeat_to_fill)
  labels = np.asarray(source.labels)
  stream = indexing.supervised_stream(indices, labels, global_batch=global_batch, seed=seed, start_step=start_step,
                                      process_index=process_index, process_count=process_count,
                                      order=indexing.supervised_order(labels, indices, seed, oversample))
  make = supervised_maker(source, aug_cfg, image_size, channels)
  return _background(_batched(stream, local, make, _workers()))


def supervised_maker(source, aug_cfg, image_size: int, channels: int) -> Callable:
  """fn(example of `indexing.supervised_stream`) -> the batch row {image, label, index}."""
  label_dtype = np.float32 if np.asarray(source.labels).dtype.kind == "f" else np.int32
  load = _loader(source)
  view = augment_np.make_view_fn(aug_cfg, int(image_size), int(channels))

  def make(example):
    i, y, s = example
    return {"image": view(load(i), s), "label": np.asarray(y, label_dtype), "index": np.int32(i)}

  return make


def stack_rows(rows: list) -> dict:
  """The batch of a list of rows: each field stacked."""
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def make_eval_arrays(source, image_size: int, channels: int, indices=None, batch_size: int = 256,
                     crop_fraction: float = 1.0):
  """(images float32 (N, S, S, C) in [0, 1], labels) without augmentation, in index order.

  `crop_fraction` (aug.eval_crop_fraction): 1.0 resizes the whole image; < 1 resizes its
  centred square of that fraction of the short side (the SimCLR code's 0.875), the same box in
  both host pipelines.
  """
  del batch_size  # one pass over the indices; kept for the same signature as pipeline.make_eval_arrays
  indices = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
  load = _loader(source)
  fn = augment_np.make_eval_fn(int(image_size), int(channels), float(crop_fraction))
  with concurrent.futures.ThreadPoolExecutor(max_workers=_workers()) as pool:
    rows = list(pool.map(lambda i: fn(load(int(i))), indices))
  images = np.stack(rows) if rows else np.zeros((0, image_size, image_size, channels), np.float32)
  return images, np.asarray(source.labels)[indices]
