"""The TensorFlow-free host pipeline against the tf.data one: same examples, same interface."""
import numpy as np
import pytest
from PIL import Image

from configs.base import get_base_config
from input_pipeline import backends, numpy_pipeline, pipeline, sources
from tests.helpers import TOY_CASE_SIZES as SIZES, toy_pretrain_config as _cfg, toy_source as _source


def _take(it, n):
  return [next(it) for _ in range(n)]


def _pretrain(mod, src, c, n, **kw):
  kw = dict(data_cfg=c.data, aug_cfg=c.aug, pairing=c.pairing, global_batch=4, seed=1) | kw
  return _take(mod.pretrain_iterator(src, **kw), n)


@pytest.mark.parametrize("pairing", ["case", "views"])
def test_same_images_pairs_and_cases_as_tf_data(pairing):
  src, c = _source(SIZES), _cfg(pairing)
  ref, got = _pretrain(pipeline, src, c, 5), _pretrain(numpy_pipeline, src, c, 5)
  keys = ("image_a", "image_b", "case_index") + (("distinct",) if pairing == "case" else ())
  assert set(got[0]) == set(ref[0])
  for r, g in zip(ref, got):
    for k in keys:
      np.testing.assert_array_equal(g[k], r[k], err_msg=k)
    assert g["view_a"].shape == r["view_a"].shape == (4, 8, 8, 1) and g["view_a"].dtype == np.float32
    assert 0.0 <= g["view_a"].min() and g["view_b"].max() <= 1.0


def test_views_show_their_own_image():
  """Pixel values encode (case, image): a view of a constant image keeps the value (no colour ops)."""
  src, c = _source(SIZES), _cfg("case")
  c.aug.additive_brightness = c.aug.std_contrast = 0.0
  for b in _pretrain(numpy_pipeline, src, c, 4):
    for k in range(4):
      np.testing.assert_allclose(b["view_a"][k], src.images[b["image_a"][k]] / 255.0, atol=1e-6)
      np.testing.assert_allclose(b["view_b"][k], src.images[b["image_b"][k]] / 255.0, atol=1e-6)


def test_deterministic_resumable_and_split_over_processes():
  src, c = _source(SIZES, size=12), _cfg("case")
  c.data.image_size = 12
  run = _pretrain(numpy_pipeline, src, c, 4)
  again = _pretrain(numpy_pipeline, src, c, 4)
  resumed = _pretrain(numpy_pipeline, src, c, 2, start_step=2)
  halves = [_pretrain(numpy_pipeline, src, c, 4, process_index=p, process_count=2) for p in (0, 1)]
  for s in range(4):
    for k in run[s]:
      np.testing.assert_array_equal(again[s][k], run[s][k])
      np.testing.assert_array_equal(np.concatenate([halves[0][s][k], halves[1][s][k]]), run[s][k])
      if s >= 2:
        np.testing.assert_array_equal(resumed[s - 2][k], run[s][k])
  assert not np.array_equal(run[0]["view_a"], _pretrain(numpy_pipeline, src, c, 1, seed=2)[0]["view_a"])


def test_supervised_batches_match_tf_data_and_errors_are_the_same():
  src, c = _source(SIZES), _cfg()
  kw = dict(aug_cfg=c.aug, image_size=8, channels=1, global_batch=4, seed=0, indices=np.array([0, 3, 6, 10, 11, 12]))
  for r, g in zip(_take(pipeline.supervised_iterator(src, **kw), 3), _take(numpy_pipeline.supervised_iterator(src, **kw), 3)):
    np.testing.assert_array_equal(g["index"], r["index"])
    np.testing.assert_array_equal(g["label"], r["label"])
    assert g["label"].dtype == r["label"].dtype and g["image"].shape == r["image"].shape
  with pytest.raises(ValueError, match="larger than the 6 labelled images"):
    numpy_pipeline.supervised_iterator(src, **(kw | {"global_batch": 8}))
  with pytest.raises(ValueError, match="not divisible by the 3 processes"):
    numpy_pipeline.pretrain_iterator(src, data_cfg=c.data, aug_cfg=c.aug, pairing="case", global_batch=4, seed=0,
                                     process_count=3)


def test_eval_arrays_equal_tf_data_on_files_and_memory(tmp_path):
  paths = []
  rng = np.random.default_rng(0)
  for name, arr in [("grey.png", rng.integers(0, 256, (8, 8), dtype=np.uint8)),
                    ("deep.png", np.full((8, 8), 40000, np.uint16)),
                    ("rgba.png", rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)),
                    ("rgb.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))]:
    Image.fromarray(arr).save(tmp_path / name)
    paths.append(str(tmp_path / name))
  files = sources.Source("files", np.array([0, 1, 0, 1]), np.array(list("abcd")), np.array(list("1234")), 2,
                         paths=np.array(paths))
  for src in (files, _source(SIZES)):
    for channels in (1, 3):
      ref, ref_labels = pipeline.make_eval_arrays(src, 8, channels)
      got, labels = numpy_pipeline.make_eval_arrays(src, 8, channels)
      np.testing.assert_array_equal(labels, ref_labels)
      # same size: no resampling, so only the uint8 -> float conversion and the luma remain
      np.testing.assert_allclose(got, ref, atol=2e-3)


def test_backend_choice():
  assert backends.get("tf") is pipeline and backends.get("numpy") is numpy_pipeline
  assert backends.get("auto") is pipeline  # TensorFlow is installed here
  assert backends.short_name(numpy_pipeline) == "numpy" and backends.short_name(pipeline) == "tf"
  with pytest.raises(ValueError, match="data.pipeline='torch'"):
    backends.get("torch")
  assert get_base_config().data.pipeline == "auto"


def test_errors_in_the_background_thread_reach_the_caller(tmp_path):
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"not an image")
  src = sources.Source("files", np.array([0, 1]), np.array(["a", "b"]), np.array(["1", "2"]), 2,
                       paths=np.array([str(bad), str(bad)]))
  c = _cfg("simclr")
  it = numpy_pipeline.pretrain_iterator(src, data_cfg=c.data, aug_cfg=c.aug, pairing="views", global_batch=2, seed=0)
  with pytest.raises(Exception, match="bad.png|cannot identify"):
    next(it)


def test_a_labelled_set_smaller_than_the_batch_is_repeated_only_when_asked():
  src, c = _source(SIZES), _cfg()
  noise = np.random.default_rng(0).integers(0, 256, src.images.shape, dtype=np.uint8)  # views can differ
  src = sources.Source("toy", src.labels, src.case_ids, src.image_ids, 2, images=noise)
  kw = dict(aug_cfg=c.aug, image_size=8, channels=1, global_batch=8, seed=0, indices=np.array([0, 3, 6, 10, 11]))
  for it in (pipeline.supervised_iterator, numpy_pipeline.supervised_iterator):
    with pytest.raises(ValueError, match="larger than the 5 labelled images.*finetune.repeat_to_fill_batch=True"):
      it(src, **kw)
  tf_batches = _take(pipeline.supervised_iterator(src, **kw, repeat_to_fill=True), 3)
  np_batches = _take(numpy_pipeline.supervised_iterator(src, **kw, repeat_to_fill=True), 3)
  labelled = [0, 3, 6, 10, 11]
  for r, g in zip(tf_batches, np_batches):
    np.testing.assert_array_equal(g["index"], r["index"])
    # 5 images tiled twice = 10 units, one batch of 8 per epoch: no image more than twice,
    # and a repeated image as two different views.
    counts = np.bincount(g["index"], minlength=13)[labelled]
    assert counts.max() == 2 and counts.sum() == 8 and set(g["index"]) <= set(labelled)
    rows = np.flatnonzero(g["index"] == labelled[int(np.argmax(counts))])
    assert not np.array_equal(g["image"][rows[0]], g["image"][rows[1]])
  assert set(np.concatenate([g["index"] for g in np_batches])) == set(labelled)
