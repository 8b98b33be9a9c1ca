"""The tf.data pipeline: SimCLR pairs, MICLe bags, determinism, resuming, per-process split."""
import numpy as np
import pytest
from PIL import Image

from input_pipeline import pipeline, sources
from tests.helpers import TOY_CASE_SIZES as SIZES, toy_pretrain_config as _cfg, toy_source as _source


def _batches(src, c, n, **kw):
  kw = dict(data_cfg=c.data, aug_cfg=c.aug, pairing=c.pairing, global_batch=4, seed=1) | kw
  it = pipeline.pretrain_iterator(src, **kw)
  return [next(it) for _ in range(n)]


def test_micle_pairs_come_from_one_case_and_distinct_images():
  src = _source(SIZES)
  case_list = sorted(src.cases())
  for b in _batches(src, _cfg(), 6):
    assert len(set(b["case_index"].tolist())) == 4                  # no case twice in a batch
    for ca, ia, ib, d in zip(b["case_index"], b["image_a"], b["image_b"], b["distinct"]):
      case = case_list[ca]
      assert src.case_ids[ia] == src.case_ids[ib] == case
      m = len(src.cases()[case])
      assert (ia != ib) == (m >= 2) == bool(d)


def test_single_image_case_gives_two_different_views():
  src = _source([1] * 8)
  c = _cfg()
  c.aug.flip, c.aug.crop_area_min = True, 0.2
  src = sources.Source("noise", src.labels, src.case_ids, src.image_ids, 2,
                       images=np.random.default_rng(0).integers(0, 255, (8, 8, 8, 1), dtype=np.uint8))
  b = _batches(src, c, 1)[0]
  assert np.all(b["image_a"] == b["image_b"])
  assert not np.allclose(b["view_a"], b["view_b"])


def test_simclr_pairs_are_two_views_of_one_image():
  src = _source(SIZES)
  b = _batches(src, _cfg("views"), 2)
  assert all(np.all(x["image_a"] == x["image_b"]) for x in b)
  assert "distinct" not in b[0]


def test_deterministic_per_seed_and_resumable():
  src, c = _source(SIZES), _cfg()
  first = _batches(src, c, 5)
  again = _batches(src, c, 5)
  for x, y in zip(first, again):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  other = _batches(src, c, 5, seed=2)
  assert any(not np.array_equal(x["case_index"], y["case_index"]) for x, y in zip(first, other))
  resumed = _batches(src, c, 2, start_step=3)
  for x, y in zip(first[3:], resumed):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_processes_read_disjoint_halves_of_the_global_batch():
  src, c = _source(SIZES), _cfg()
  whole = _batches(src, c, 3)
  p0 = _batches(src, c, 3, process_index=0, process_count=2)
  p1 = _batches(src, c, 3, process_index=1, process_count=2)
  for w, a, b in zip(whole, p0, p1):
    assert not set(a["case_index"].tolist()) & set(b["case_index"].tolist())
    for k in w:
      np.testing.assert_array_equal(w[k], np.concatenate([a[k], b[k]]))


def test_every_case_once_per_epoch():
  src, c = _source(SIZES), _cfg()
  # 8 cases, batch 4: an epoch is 2 batches.
  for epoch in range(3):
    seen = np.concatenate([b["case_index"] for b in _batches(src, c, 2, start_step=2 * epoch)])
    assert sorted(seen.tolist()) == list(range(8))


def test_errors():
  src, c = _source(SIZES), _cfg()
  with pytest.raises(ValueError, match="larger than the 8 cases"):
    _batches(src, c, 1, global_batch=16)
  with pytest.raises(ValueError, match="not divisible by the 3 processes"):
    _batches(src, c, 1, process_count=3)
  with pytest.raises(ValueError, match="pairing='byol'"):
    _batches(src, c, 1, pairing="byol")


def test_files_of_varied_formats_decode(tmp_path):
  paths = []
  for name, arr in [("grey.png", np.full((30, 20), 100, np.uint8)),
                    ("deep.png", np.full((12, 12), 40000, np.uint16)),
                    ("rgba.png", np.full((16, 16, 4), 200, np.uint8)),
                    ("rgb.jpg", np.full((10, 14, 3), 50, np.uint8))]:
    Image.fromarray(arr).save(tmp_path / name)
    paths.append(str(tmp_path / name))
  src = sources.Source("files", np.array([0, 1, 0, 1]), np.array(["a", "b", "c", "d"]), np.array(["1", "2", "3", "4"]),
                       2, paths=np.array(paths))
  for channels in (1, 3):
    images, labels = pipeline.make_eval_arrays(src, 8, channels)
    assert images.shape == (4, 8, 8, channels) and images.dtype == np.float32
    np.testing.assert_allclose(images[1], 40000 / 65535, atol=0.01)   # 16 bit scaled, not wrapped
    np.testing.assert_allclose(images[0], 100 / 255, atol=0.01)
  c = _cfg("views")
  c.data.channels = 3
  b = _batches(src, c, 1)[0]
  assert b["view_a"].shape == (4, 8, 8, 3)


def test_supervised_batches_follow_the_indices():
  src, c = _source(SIZES), _cfg()
  ds = pipeline.make_supervised_dataset(src, aug_cfg=c.aug, image_size=8, channels=1, global_batch=4, seed=0,
                                        indices=np.array([0, 3, 6, 10]))
  b = next(ds.as_numpy_iterator())
  assert sorted(b["index"].tolist()) == [0, 3, 6, 10]
  np.testing.assert_array_equal(b["label"], src.labels[b["index"]])
