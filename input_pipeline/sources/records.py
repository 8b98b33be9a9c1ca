"""data.source='records': a data set written by `medssl-jax prepare-data` as ArrayRecord shards.

Layout of `data.path` (one folder per split):
  <split>/index.npz                      labels, case_ids, image_ids, num_classes, class_names,
                                         files (shard names), counts (records per shard), source;
                                         original_size and stored_size ((N, 2) height, width per
                                         image), stored_as ('original', 'jpeg' or 'png' per image),
                                         short_side, encoding, quality (the resize; see below),
                                         content_sha256 ((N, 32) uint8: sha256 of each source image's
                                         bytes, or of an in-memory image's shape and pixels; reading
                                         refuses the same content in two splits)
  <split>/images-00000-of-00008.array_record ...   one record per image, in the index's order

A record is the image's encoded bytes. Written as they are (`short_side=0`, the default): an
image file's own bytes (JPEG, PNG, 16-bit PNG, as on disk, so decoding gives the very pixels the
file gives), or a lossless PNG of an in-memory image (npz, synthetic); the index says
short_side=0, encoding='original', quality=0. Written at a reduced size (`short_side=N`,
`input_pipeline/reencode.py`): each image whose shorter side is above N is resized once (aspect
kept, OpenCV's area filter) to a shorter side of N and encoded again, as JPEG of `quality` (95)
for an 8-bit image with encoding='jpeg', as lossless PNG with encoding='png' and for every 16-bit
image (which stays 16-bit); grey stays 1-channel grey, RGB stays RGB. An image whose shorter side
is already <= N is stored as it is (a file's own bytes, an in-memory image's lossless PNG), never
upscaled. Split, order, labels, case ids and image ids are those of the source either way. A run
whose data.image_size is above the short side a split was prepared at is refused by `load`.

A split read from records therefore holds the same images (at full size: the same pixels), labels,
case ids and order as the source it was written from, and every host pipeline builds the same
batches from it (tests/input_pipeline/test_records.py). Records are read by index (random access),
so each process reads only the images of its own examples, with the same (seed, step) -> batch
guarantee as any source.
"""
import collections
import concurrent.futures
import hashlib
import io
import os
import threading

import numpy as np

from input_pipeline.sources.base import Source, check_no_leakage, require_path, unknown_split
from input_pipeline.sources.images import check_no_duplicate_digests
from medssl_jax.errors import UserError

INDEX = "index.npz"


class RecordImages:
  """Random access to one split's encoded images (shards opened on first use, in each process)."""

  def __init__(self, files):
    self.files = [str(f) for f in files]
    self._source, self._lock = None, threading.Lock()

  def __getstate__(self):  # sent to grain workers: each opens its own readers
    return {"files": self.files}

  def __setstate__(self, state):
    self.__init__(state["files"])

  def __len__(self) -> int:
    return len(self._open())

  def _open(self):
    with self._lock:
      if self._source is None:
        from array_record.python.array_record_data_source import ArrayRecordDataSource
        self._source = ArrayRecordDataSource(self.files)
      return self._source

  def __getitem__(self, i) -> bytes:
    source = self._open()
    with self._lock:
      return source[int(i)]


def encode_png(image: np.ndarray) -> bytes:
  """Lossless PNG bytes of a uint8 (H, W, 1 or 3) image."""
  from PIL import Image
  x = np.asarray(image)
  buf = io.BytesIO()
  Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).save(buf, format="PNG")
  return buf.getvalue()


def image_bytes(source: Source, i: int) -> bytes:
  """What the record of image i holds (see the module docstring)."""
  if source.paths is not None:
    with open(source.paths[i], "rb") as f:
      return f.read()
  if source.records is not None:
    return source.records[i]
  return encode_png(source.images[i])


def _ordered(pool, fn, items, ahead: int):
  """fn over items on `pool`, in order, with at most `ahead` results in flight (bounded memory)."""
  pending = collections.deque()
  for item in items:
    pending.append(pool.submit(fn, item))
    if len(pending) >= ahead:
      yield pending.popleft().result()
  while pending:
    yield pending.popleft().result()


def write_split(source: Source, folder: str, images_per_shard: int = 1000, short_side: int = 0,
                encoding: str = "jpeg", quality: int = 95, workers: int = 0) -> dict:
  """Writes `source` as shards + index into `folder` (which must not hold a written split yet).

  `short_side=N` > 0 stores each image with a shorter side above N resized to N and re-encoded as
  `encoding` ('jpeg' of `quality` for 8-bit images; 'png', and 16-bit images, lossless); images
  at or below N as they are (the module docstring). Images are read and re-encoded on `workers`
  threads (0: one per core, at most 16), written in the source's order.

  `folder` may be remote (gs://...; anything etils.epath opens): each shard is written to a local
  temporary file, uploaded and deleted before the next, so the local disk needs room for one shard
  only; the index is uploaded last. (ArrayRecord files are read from a local or mounted path: copy
  the folder down, or mount the bucket, to train from it.)"""
  import shutil
  import tempfile
  from array_record.python.array_record_module import ArrayRecordWriter
  from etils import epath
  from input_pipeline import reencode  # (OpenCV: loaded only where a split is written)
  if images_per_shard < 1:
    raise UserError(f"--images_per_shard={images_per_shard} must be >= 1")
  reencode.check_options(short_side, encoding, quality)
  dest = epath.Path(folder)
  if (dest / INDEX).exists():
    raise UserError(f"{folder} already holds a prepared split ({INDEX}); choose another --out or delete it first")
  dest.mkdir(parents=True, exist_ok=True)
  remote = "://" in str(folder)
  staging = tempfile.mkdtemp(prefix="medssl-shards-") if remote else str(folder)

  def publish(name: str) -> None:  # a remote split: the staged file goes up, then away
    if remote:
      with open(os.path.join(staging, name), "rb") as src, (dest / name).open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
      os.remove(os.path.join(staging, name))

  n = len(source)
  num_shards = max(1, -(-n // images_per_shard))
  bounds = np.linspace(0, n, num_shards + 1).round().astype(int)
  files, counts, written = [], [], []

  def record(i: int):
    name = f"{source.image_ids[i]}" + (f" ({source.paths[i]})" if source.paths is not None else "")
    item = source.images[i] if source.images is not None else image_bytes(source, i)
    digest = hashlib.sha256(item if isinstance(item, bytes) else
                            repr(np.shape(item)).encode() + np.ascontiguousarray(item).tobytes()).digest()
    return reencode.reencode(item, short_side, encoding, quality, name=name, lossless=encode_png), digest

  workers = workers or max(1, min(16, os.cpu_count() or 1))
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
  try:
    for k in range(num_shards):
      name = f"images-{k:05d}-of-{num_shards:05d}.array_record"
      writer = ArrayRecordWriter(os.path.join(staging, name), "group_size:1")
      for r, digest in _ordered(pool, record, range(bounds[k], bounds[k + 1]), ahead=4 * workers):
        writer.write(r.data)
        written.append((r.original_size, r.stored_size, r.stored_as, digest))  # (not the bytes: one shard in memory)
      writer.close()
      publish(name)
      files.append(name)
      counts.append(int(bounds[k + 1] - bounds[k]))
    # Written last: a folder without an index is an unfinished write, never read as a split.
    tmp = os.path.join(staging, INDEX + ".tmp")
    with open(tmp, "wb") as f:
      np.savez(f, labels=source.labels, case_ids=source.case_ids, image_ids=source.image_ids,
               num_classes=np.int64(source.num_classes), class_names=np.asarray(source.class_names, dtype=str),
               files=np.asarray(files), counts=np.asarray(counts, np.int64), source=np.asarray(source.name),
               original_size=np.asarray([w[0] for w in written], np.int64).reshape(n, 2),
               stored_size=np.asarray([w[1] for w in written], np.int64).reshape(n, 2),
               stored_as=np.asarray([w[2] for w in written], dtype=str).reshape(n),
               content_sha256=np.frombuffer(b"".join(w[3] for w in written), np.uint8).reshape(n, 32),
               short_side=np.int64(short_side), encoding=np.asarray(encoding if short_side else "original"),
               quality=np.int64(quality if short_side and encoding == "jpeg" else 0))
    os.replace(tmp, os.path.join(staging, INDEX))
    publish(INDEX)  # one object upload: it appears whole or not at all
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    if remote:
      shutil.rmtree(staging, ignore_errors=True)
  return {"images": n, "shards": num_shards, "folder": str(folder)}


def _index(folder: str) -> dict:
  with np.load(os.path.join(folder, INDEX), allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def load(data_cfg, split: str) -> Source:
  if "://" in str(data_cfg.path):
    raise UserError(f"data.path={data_cfg.path}: ArrayRecord shards are read from a local or mounted folder; "
                    f"copy the prepared folder to each worker (gsutil -m cp -r) or mount the bucket (gcsfuse)")
  root = require_path(data_cfg.path, what="prepared data folder (medssl-jax prepare-data --out)")
  splits = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, INDEX)))
  if not splits:
    raise UserError(f"{root} holds no prepared split (<split>/{INDEX}); write one with medssl-jax prepare-data")
  if split not in splits:
    raise unknown_split(f"prepared data {root}", split, splits)
  indexes = {s: _index(os.path.join(root, s)) for s in splits}
  check_no_leakage({s: idx["case_ids"] for s, idx in indexes.items()})
  # The same image content in two splits (two names, two cases): the digests of the source bytes,
  # taken by prepare-data (indexes written before they were: not checked).
  check_no_duplicate_digests([(s, f"{s}/{name}", digest.tobytes()) for s, idx in indexes.items()
                              if "content_sha256" in idx for name, digest in zip(idx["image_ids"], idx["content_sha256"])],
                             f" of prepared data {root}")
  folder = os.path.join(root, split)
  idx = indexes[split]
  short_side = int(idx["short_side"]) if "short_side" in idx else 0  # (indexes written before the resize: 0)
  size = int(getattr(data_cfg, "image_size", 0) or 0)
  if short_side and size > short_side:
    raise UserError(f"{folder} was prepared at --short_side={short_side}, below data.image_size={size}: prepare "
                    f"it again with medssl-jax prepare-data --short_side={size} (or larger), or set "
                    f"data.image_size to {short_side} or less")
  if int(idx["counts"].sum()) != len(idx["labels"]):
    raise UserError(f"{folder}: the index lists {len(idx['labels'])} images but its shards hold "
                    f"{int(idx['counts'].sum())}; write the split again with medssl-jax prepare-data")
  missing = [f for f in idx["files"] if not os.path.isfile(os.path.join(folder, str(f)))]
  if missing:
    raise UserError(f"{folder}: shard {missing[0]} is missing ({len(missing)} of {len(idx['files'])}); copy "
                    f"the whole split folder, or write it again")
  return Source(name=f"records:{os.path.basename(os.path.normpath(root))}/{split}", labels=idx["labels"],
                case_ids=idx["case_ids"], image_ids=idx["image_ids"], num_classes=int(idx["num_classes"]),
                records=RecordImages([os.path.join(folder, str(f)) for f in idx["files"]]),
                class_names=tuple(idx["class_names"].tolist()))
