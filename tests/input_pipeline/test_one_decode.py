"""One decode per pair (issue 27 item 1): where both views come from one image (pairing 'views', a case of
one image), every host pipeline reads and decodes it once, and the batches are array for array those of the
decode-twice pair maker that came before (kept here as the reference)."""
import io
import itertools

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from input_pipeline import augment, augment_np, grain_pipeline, indexing, numpy_pipeline, pipeline, sources
from tests.helpers import TOY_CASE_SIZES as SIZES, toy_pretrain_config

BATCH = 4


class CountingRecords:
  """Encoded images by index (a source's `records`), counting the reads."""

  def __init__(self, blobs):
    self.blobs, self.reads = list(blobs), 0

  def __len__(self):
    return len(self.blobs)

  def __getitem__(self, i):
    self.reads += 1
    return self.blobs[int(i)]


def _encoded(k: int) -> bytes:
  """Image k: non-square, grey or RGB, PNG or JPEG."""
  rng = np.random.default_rng(k)
  h, w = 30 + 3 * k, 44 - k
  yy, xx = np.mgrid[0:h, 0:w]
  base = 120 + 80 * np.sin(yy / (3.0 + k % 4)) * np.cos(xx / 5.0)
  c = 3 if k % 3 == 0 else 1
  x = np.clip(base[..., None] + rng.normal(0, 15, (h, w, c)), 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(x if c == 3 else x[..., 0]).save(buf, format="PNG" if k % 2 else "JPEG", quality=90)
  return buf.getvalue()


def _source():
  cases = [f"case{k}" for k, m in enumerate(SIZES) for _ in range(m)]
  n = len(cases)
  records = CountingRecords(_encoded(k) for k in range(n))
  return sources.Source("records", np.arange(n) % 2, np.array(cases), np.array([f"i{k}" for k in range(n)]), 2,
                        records=records)


def _config(pairing, on_device):
  c = toy_pretrain_config(pairing)
  c.data.image_size, c.data.channels = 16, 3
  c.aug.color_prob, c.aug.blur_prob, c.aug.grayscale_prob, c.aug.rotation_degrees = 0.8, 0.5, 0.2, 15.0
  c.aug.on_device = on_device
  return c


def _examples(src, c, steps, start_step=0):
  table, sizes, case_index, _ = indexing.pretrain_units(src, c.pairing, c.data.max_bag_size, 7)
  stream = indexing.pair_stream(table, sizes, case_index, global_batch=BATCH, seed=7, start_step=start_step,
                                process_index=0, process_count=1)
  return list(itertools.islice(stream, steps * BATCH))


def decode_twice_numpy(src, c):
  """The NumPy pair maker before issue 27: each view loads (reads and decodes) its image."""
  load = numpy_pipeline._loader(src)
  view = augment_np.make_view_fn(c.aug, c.data.image_size, c.data.channels, on_device=c.aug.on_device)

  def make_pair(example):
    ia, ib, case, sa, sb = example
    out = {"view_a": view(load(ia), sa), "view_b": view(load(ib), sb), "case_index": np.int32(case),
           "image_a": np.int32(ia), "image_b": np.int32(ib)}
    if c.pairing == "case":
      out["distinct"] = np.bool_(ia != ib)
    return out

  return make_pair


def _reads_per_pair(examples):
  return sum(1 if ia == ib else 2 for ia, ib, *_ in examples)


def _assert_same(got, want):
  assert set(got) == set(want)
  for k in want:
    assert got[k].dtype == want[k].dtype, k
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


PARAMS = [("views", False), ("views", True), ("case", False), ("case", True)]


@pytest.mark.parametrize("pairing,on_device", PARAMS)
def test_numpy_pair_maker_decodes_once_and_makes_the_same_pairs(pairing, on_device):
  src, c = _source(), _config(pairing, on_device)
  examples = _examples(src, c, steps=3)
  if pairing == "case":
    assert 0 < sum(ia == ib for ia, ib, *_ in examples) < len(examples)  # both kinds of pair
  old, new = decode_twice_numpy(src, c), numpy_pipeline.pair_maker(src, c.data, c.aug, pairing)
  src.records.reads = 0
  want = [old(e) for e in examples]
  assert src.records.reads == 2 * len(examples)
  src.records.reads = 0
  got = [new(e) for e in examples]
  assert src.records.reads == _reads_per_pair(examples) < 2 * len(examples)
  for g, w in zip(got, want):
    _assert_same(g, w)
  # Through the iterator (threads, prefetch): the same batches.
  it = numpy_pipeline.pretrain_iterator(src, data_cfg=c.data, aug_cfg=c.aug, pairing=pairing, global_batch=BATCH,
                                        seed=7)
  for step in range(3):
    _assert_same(next(it), numpy_pipeline.stack_rows(want[step * BATCH:(step + 1) * BATCH]))
  it.close()


@pytest.mark.parametrize("pairing,on_device", [("case", True)])  # pairs of one image and of two
def test_grain_batches_decode_once_and_equal_the_decode_twice_batches(pairing, on_device):
  pytest.importorskip("grain")
  src, c = _source(), _config(pairing, on_device)
  old = decode_twice_numpy(src, c)
  want = [numpy_pipeline.stack_rows([old(e) for e in _examples(src, c, steps=1, start_step=s)]) for s in (2, 3)]
  # In this process (the reads counted), then on a worker process.
  table, sizes, case_index, _ = indexing.pretrain_units(src, pairing, c.data.max_bag_size, 7)
  make = grain_pipeline._PretrainBatch(src, (table, sizes, case_index), c.data, c.aug, pairing, BATCH, 7, 0, 1)
  src.records.reads = 0
  _assert_same(make(2), want[0])
  assert src.records.reads == _reads_per_pair(_examples(src, c, steps=1, start_step=2))
  c.data.host_workers = 1
  it = grain_pipeline.pretrain_iterator(src, data_cfg=c.data, aug_cfg=c.aug, pairing=pairing, global_batch=BATCH,
                                        seed=7, start_step=2)
  for w in want:
    _assert_same(next(it), w)
  it.close()


def decode_twice_tf(src, c, examples):
  """The tf.data pair maker before issue 27 (each view loads its image), over a finite list of examples."""
  load = pipeline._loader(src)
  view = augment.make_view_fn(c.aug, c.data.image_size, c.data.channels, on_device=c.aug.on_device)

  def make_pair(ia, ib, case, sa, sb):
    out = {"view_a": view(load(ia), sa), "view_b": view(load(ib), sb), "case_index": tf.cast(case, tf.int32),
           "image_a": tf.cast(ia, tf.int32), "image_b": tf.cast(ib, tf.int32)}
    if c.pairing == "case":
      out["distinct"] = tf.not_equal(ia, ib)
    return out

  spec = (tf.TensorSpec([], tf.int64),) * 3 + (tf.TensorSpec([2], tf.int64),) * 2
  ds = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=spec)
  return list(ds.map(make_pair).batch(BATCH).as_numpy_iterator())


@pytest.mark.parametrize("pairing,on_device", PARAMS)
def test_tf_data_decodes_once_and_makes_the_same_batches(pairing, on_device, monkeypatch):
  src, c = _source(), _config(pairing, on_device)
  examples = _examples(src, c, steps=3)
  src.records.reads = 0
  want = decode_twice_tf(src, c, examples)
  assert src.records.reads == 2 * len(examples)
  # The pipeline's endless stream cut to those examples, so that every read is counted and none is ahead.
  stream = indexing.pair_stream
  monkeypatch.setattr(indexing, "pair_stream", lambda *a, **kw: itertools.islice(stream(*a, **kw), len(examples)))
  src.records.reads = 0
  got = list(pipeline.pretrain_iterator(src, data_cfg=c.data, aug_cfg=c.aug, pairing=pairing, global_batch=BATCH,
                                        seed=7))
  assert src.records.reads == _reads_per_pair(examples) < 2 * len(examples)
  assert len(got) == len(want) == 3
  for g, w in zip(got, want):
    _assert_same(g, w)
