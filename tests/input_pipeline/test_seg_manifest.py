"""Segmentation data: the seg_manifest source (splits, leakage, filters) and the pair loader."""
import os

import numpy as np
import pytest
from PIL import Image

from configs.base import get_base_config
from input_pipeline import seg_pipeline
from input_pipeline.sources import load_source, seg_manifest
from medssl_jax.errors import UserError

LUNGSEG = "/work/shared/data/covid_cxr_lungseg"


def _write(tmp_path, rows, header="image,mask,case_id,split"):
  path = tmp_path / "pairs.csv"
  path.write_text(header + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
  return str(path)


def _pair(tmp_path, name, size=(12, 10), mask_size=None, value=255):
  img = np.random.default_rng(len(name)).integers(0, 255, (size[1], size[0], 3), np.uint8)
  Image.fromarray(img).save(tmp_path / f"{name}.png")
  m = np.zeros((mask_size or size)[::-1], np.uint8)
  m[2:6, 3:8] = value
  Image.fromarray(m).save(tmp_path / f"{name}_mask.png")
  return f"{name}.png", f"{name}_mask.png"


def _cfg(path, split_column="split"):
  c = get_base_config()
  c.data.source, c.data.path, c.data.path_column, c.data.split_column = "seg_manifest", path, "image", split_column
  c.seg.mask_column = "mask"
  return c


def test_split_column_and_leakage(tmp_path):
  rows = [(*_pair(tmp_path, f"im{i}"), f"p{i // 2}", "train" if i < 4 else "test") for i in range(6)]
  c = _cfg(_write(tmp_path, rows))
  train = seg_manifest.load(c.data, c.seg, "train")
  assert len(train) == 4 and train.image_ids.tolist() == [f"im{i}.png" for i in range(4)]
  assert train.mask_paths[0] == os.path.join(str(tmp_path), "im0_mask.png")
  with pytest.raises(UserError, match="splits"):
    seg_manifest.load(c.data, c.seg, "val")
  rows[4] = (rows[4][0], rows[4][1], "p0", "test")  # patient p0 now in train and test
  c = _cfg(_write(tmp_path, rows))
  with pytest.raises(UserError, match="leakage"):
    seg_manifest.load(c.data, c.seg, "train")
  with pytest.raises(UserError, match="segmentation"):
    load_source(c.data, "train")  # the classification sources refuse it in one line


def test_drawn_splits_are_case_disjoint_and_sized():
  case_ids = np.repeat(np.arange(100), 2).astype(str)
  split = seg_manifest.drawn_splits(case_ids, 0.2, 0.1, seed=0)
  for a in ("train", "val", "test"):
    for b in ("train", "val", "test"):
      if a < b:
        assert not set(case_ids[split == a]) & set(case_ids[split == b])
  n = {s: int(np.sum(split == s)) for s in ("train", "val", "test")}
  assert abs(n["test"] - 40) <= 2 and abs(n["val"] - 16) <= 2 and sum(n.values()) == 200
  np.testing.assert_array_equal(split, seg_manifest.drawn_splits(case_ids, 0.2, 0.1, seed=0))
  assert not np.array_equal(split, seg_manifest.drawn_splits(case_ids, 0.2, 0.1, seed=1))


def test_keep_rows_and_missing_files(tmp_path):
  rows = [(*_pair(tmp_path, f"im{i}"), f"p{i}", "train", "True" if i % 2 else "False") for i in range(4)]
  c = _cfg(_write(tmp_path, rows, header="image,mask,case_id,split,keep"))
  c.seg.keep_rows = "keep=True"
  assert seg_manifest.load(c.data, c.seg, "train").image_ids.tolist() == ["im1.png", "im3.png"]
  c.seg.keep_rows = "nope"
  with pytest.raises(UserError, match="column=value"):
    seg_manifest.load(c.data, c.seg, "train")
  os.remove(tmp_path / "im3_mask.png")
  c.seg.keep_rows = ""
  with pytest.raises(Exception, match="missing"):
    seg_manifest.load(c.data, c.seg, "train")


def test_load_pairs_binarises_resizes_and_checks_sizes(tmp_path):
  rows = [(*_pair(tmp_path, "a", value=128), "p0", "train"), (*_pair(tmp_path, "b", value=127), "p1", "train")]
  c = _cfg(_write(tmp_path, rows))
  src = seg_manifest.load(c.data, c.seg, "train")
  images, masks = seg_pipeline.load_pairs(src, 24, 1, threshold=128)
  assert images.shape == (2, 24, 24, 1) and images.dtype == np.uint8 and masks.shape == (2, 24, 24)
  want = np.zeros((10, 12), np.uint8)
  want[2:6, 3:8] = 1
  # Nearest-neighbour resize of the 12 x 10 mask to 24 x 24 (half-pixel centres).
  rows_i = np.floor((np.arange(24) + 0.5) * 10 / 24).astype(int)
  cols_i = np.floor((np.arange(24) + 0.5) * 12 / 24).astype(int)
  np.testing.assert_array_equal(masks[0], want[rows_i][:, cols_i])
  assert masks[1].sum() == 0  # 127 < threshold 128
  _pair(tmp_path, "c", mask_size=(11, 10))
  rows.append(("c.png", "c_mask.png", "p2", "train"))
  c = _cfg(_write(tmp_path, rows))
  with pytest.raises(UserError, match="must have its image's size"):
    seg_pipeline.load_pairs(seg_manifest.load(c.data, c.seg, "train"), 16, 3)


def test_train_batches_are_a_function_of_seed_and_step(tmp_path):
  images = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), np.uint8)
  masks = (images[..., 0] > 128).astype(np.uint8)
  cfg = get_base_config().seg
  it = seg_pipeline.train_iterator(images, masks, seg_cfg=cfg, global_batch=4, seed=3)
  first = [next(it) for _ in range(3)]
  again = next(seg_pipeline.train_iterator(images, masks, seg_cfg=cfg, global_batch=4, seed=3, start_step=2))
  for k in ("image", "mask", "index"):
    np.testing.assert_array_equal(first[2][k], again[k])
  assert first[0]["image"].shape == (4, 16, 16, 3) and first[0]["mask"].shape == (4, 16, 16)


@pytest.mark.skipif(not os.path.isfile(os.path.join(LUNGSEG, "pairs.csv")), reason="covid_cxr_lungseg not staged")
def test_covid_cxr_lungseg_config_reads_disjoint_splits():
  from configs import lung_segmentation
  c = lung_segmentation.get_config("smoke")
  c.data.verify_images = False
  splits = {s: seg_manifest.load(c.data, c.seg, s) for s in ("train", "val", "test")}
  assert sum(len(s) for s in splits.values()) == 180  # canonical masks only: one per image
  assert len({p for s in splits.values() for p in s.case_ids}) == 106
  for a in splits:
    for b in splits:
      if a < b:
        assert not set(splits[a].case_ids) & set(splits[b].case_ids)
  assert abs(len(splits["test"]) - 36) <= 6
