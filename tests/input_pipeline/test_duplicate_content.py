"""Content duplicates across splits (issue 32 item 5): the same image bytes in two splits, under two
file names and two case ids, are refused naming both rows; within one split they are allowed."""
import shutil

import numpy as np
import pytest
from PIL import Image

from configs.base import get_base_config
from input_pipeline.sources import manifest
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
