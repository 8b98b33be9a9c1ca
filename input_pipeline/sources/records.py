"""data.source='records': a data set written by `medssl-jax prepare-data` as ArrayRecord shards.

Layout of `data.path` (one folder per split):
  <split>/index.npz                      labels, case_ids, image_ids, num_classes, class_names,
                                         files (shard names), counts (records per shard), source
  <split>/images-00000-of-00008.array_record ...   one record per image, in the index's order

A record is the image's encoded bytes: an image file's own bytes (JPEG, PNG, 16-bit PNG, as on
disk, so decoding gives the very pixels the file gives), or a lossless PNG of an in-memory image
(npz, synthetic). A split read from records therefore holds the same images, labels, case ids
and order as the source it was written from, and every host pipeline builds the same batches
from it (tests/input_pipeline/test_records.py). Records are read by index (random access), so
each process reads only the images of its own examples, with the same (seed, step) -> batch
guarantee as any source.
"""
import io
import os
import threading

import numpy as np

from input_pipeline.sources.base import Source, check_no_leakage, require_path, unknown_split
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


def write_split(source: Source, folder: str, images_per_shard: int = 1000) -> dict:
  """Writes `source` as shards + index into `folder` (which must not hold a written split yet).

  `folder` may be remote (gs://...; anything etils.epath opens): each shard is written to a local
  temporary file, uploaded and deleted before the next, so the local disk needs room for one shard
  only; the index is uploaded last. (ArrayRecord files are read from a local or mounted path: copy
  the folder down, or mount the bucket, to train from it.)"""
  import shutil
  import tempfile
  from array_record.python.array_record_module import ArrayRecordWriter
  from etils import epath
  if images_per_shard < 1:
    raise UserError(f"--images_per_shard={images_per_shard} must be >= 1")
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
  files, counts = [], []
  try:
    for k in range(num_shards):
      name = f"images-{k:05d}-of-{num_shards:05d}.array_record"
      writer = ArrayRecordWriter(os.path.join(staging, name), "group_size:1")
      for i in range(bounds[k], bounds[k + 1]):
        writer.write(image_bytes(source, i))
      writer.close()
      publish(name)
      files.append(name)
      counts.append(int(bounds[k + 1] - bounds[k]))
    # Written last: a folder without an index is an unfinished write, never read as a split.
    tmp = os.path.join(staging, INDEX + ".tmp")
    with open(tmp, "wb") as f:
      np.savez(f, labels=source.labels, case_ids=source.case_ids, image_ids=source.image_ids,
               num_classes=np.int64(source.num_classes), class_names=np.asarray(source.class_names, dtype=str),
               files=np.asarray(files), counts=np.asarray(counts, np.int64), source=np.asarray(source.name))
    os.replace(tmp, os.path.join(staging, INDEX))
    publish(INDEX)  # one object upload: it appears whole or not at all
  finally:
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
  check_no_leakage({s: _index(os.path.join(root, s))["case_ids"] for s in splits})
  folder = os.path.join(root, split)
  idx = _index(folder)
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
