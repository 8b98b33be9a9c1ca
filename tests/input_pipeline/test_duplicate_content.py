"""Content duplicates across splits (issue 32 item 5): the same image bytes in two splits, under two
file names and two case ids, are refused naming both rows; within one split they are allowed."""
import hashlib
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from configs.base import get_base_config
from input_pipeline import sources
from input_pipeline.sources import folder, manifest, records
from input_pipeline.sources.images import file_fingerprint
from medssl_jax.errors import UserError


def _folder(tmp_path, copy_to_split):
  rng = np.random.default_rng(0)
  rows = ["path,case_id,label,split"]
  for i, split in enumerate(["train", "train", "test", "test"]):
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    rows.append(f"img{i}.png,case{i},{i % 2},{split}")
  shutil.copy(tmp_path / "img0.png", tmp_path / "copy.png")  # a train image again, under another name
  rows.append(f"copy.png,case9,0,{copy_to_split}")
  (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
  c = get_base_config()
  c.data.source, c.data.path, c.data.verify_images = "manifest", str(tmp_path / "labels.csv"), True
  return c


def test_the_same_bytes_in_two_splits_are_refused_naming_both_rows(tmp_path):
  c = _folder(tmp_path, "test")
  assert file_fingerprint(tmp_path / "img0.png") == file_fingerprint(tmp_path / "copy.png")
  with pytest.raises(UserError) as e:
    manifest.load(c.data, "train")
  message = str(e.value)
  assert "\n" not in message
  assert (f"1 image file(s) have the same content in two splits of manifest {tmp_path / 'labels.csv'}: "
          f"{tmp_path / 'copy.png'} (split 'test') and {tmp_path / 'img0.png'} (split 'train')") in message


def test_a_copy_within_one_split_is_accepted(tmp_path):
  c = _folder(tmp_path, "train")
  assert len(manifest.load(c.data, "train").labels) == 3


def _image_folder(tmp_path, n=12):
  rng = np.random.default_rng(1)
  for i in range(n):
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
  c = get_base_config()
  c.data.source, c.data.path, c.data.verify_images = "folder", str(tmp_path), True
  c.data.val_fraction, c.data.test_fraction, c.data.split_seed = 0.0, 0.5, 0
  return c


def test_folder_source_refuses_a_copy_in_another_split_naming_both_files(tmp_path):
  c = _image_folder(tmp_path)
  test_ids = folder.load(c.data, "test").image_ids
  train_ids = folder.load(c.data, "train").image_ids
  # One file per case (data.case_rule='stem'): copy a test image under a new name until the copy's
  # case is drawn into train (the split is a seeded function of the case ids).
  for k in range(100):
    shutil.copy(tmp_path / test_ids[0], tmp_path / f"q{k}.png")
    if f"q{k}.png" in folder.load(_changed(c.data, verify_images=False), "train").image_ids:
      break
    (tmp_path / f"q{k}.png").unlink()
  else:
    pytest.fail("no copy landed in train")
  with pytest.raises(UserError) as e:
    folder.load(c.data, "train")
  assert str(e.value).startswith(f"1 image file(s) have the same content in two splits of image folder {tmp_path}: ")
  assert f"{tmp_path / f'q{k}.png'}" in str(e.value) and f"{tmp_path / test_ids[0]}" in str(e.value)
  assert len(train_ids) > 0


def _changed(data_cfg, **changes):
  """A copy of a config group with some keys changed."""
  copy = data_cfg.copy_and_resolve_references()
  with copy.unlocked():
    for k, v in changes.items():
      setattr(copy, k, v)
  return copy


def test_prepared_records_refuse_the_same_content_in_two_splits(tmp_path):
  c = _folder(tmp_path, "test")  # copy.png (test) holds img0.png's bytes (train)
  c.data.verify_images = False  # the manifest reader would refuse it first
  out = tmp_path / "prepared"
  for split in ("train", "test"):
    records.write_split(manifest.load(c.data, split), str(out / split), images_per_shard=2)
  idx = np.load(out / "train" / "index.npz")
  assert idx["content_sha256"].shape == (2, 32)  # img0, img1
  assert idx["content_sha256"][0].tobytes().hex() == file_fingerprint(tmp_path / "img0.png")  # sha256 of the file
  r = get_base_config()
  r.data.source, r.data.path = "records", str(out)
  with pytest.raises(UserError, match=r"^1 image file\(s\) have the same content in two splits of prepared data "
                                      + re.escape(f"{out}: test/copy.png (split 'test') and train/img0.png (split 'train')")):
    records.load(r.data, "train")


def test_prepared_records_without_a_copy_load_and_arrays_are_hashed_by_shape_and_pixels(tmp_path):
  c = _folder(tmp_path, "train")
  c.data.verify_images = False
  out = tmp_path / "prepared"
  for split in ("train", "test"):
    records.write_split(manifest.load(c.data, split), str(out / split), images_per_shard=2)
  r = get_base_config()
  r.data.source, r.data.path = "records", str(out)
  assert len(records.load(r.data, "train")) == 3
  # In-memory images: the digest is of shape and pixels (equal pixels, other shape: another digest).
  a = sources.Source("a", np.zeros(2, np.int64), np.array(["c0", "c1"]), np.array(["i0", "i1"]), 2,
                     images=np.zeros((2, 4, 4, 1), np.uint8))
  records.write_split(a, str(tmp_path / "mem" / "train"))
  digests = np.load(tmp_path / "mem" / "train" / "index.npz")["content_sha256"]
  assert digests[0].tobytes() == hashlib.sha256(repr((4, 4, 1)).encode() + bytes(16)).digest()
