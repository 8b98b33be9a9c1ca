"""configs/fundus_segmentation.py (Hosseinzadeh Taher et al. 2021, VFS on DRIVE): the paper's numbers,
the fundus augmentation on, and its smoke variant running end to end on a DRIVE-like CSV (TIFF images,
GIF masks, the split in a column)."""
import json
import os

import numpy as np
from PIL import Image

from configs import fundus_segmentation
from input_pipeline import augment_seg, seg_pipeline
from input_pipeline.sources import seg_manifest
from medssl_jax import main as main_lib
from medssl_jax import setting_rules


def _drive_like(root, n=8, size=40):
  """n RGB 'fundus' TIFFs with dark 'vessel' lines, their GIF masks (255 = vessel), drive.csv:
  4 train, 1 val, 3 test (one case per image, as DRIVE)."""
  rng = np.random.default_rng(0)
  rows = ["image,mask,case,split"]
  for i in range(n):
    mask = np.zeros((size, size), np.uint8)
    for _ in range(3):
      if rng.random() < 0.5:
        mask[int(rng.integers(2, size - 2)), :] = 255
      else:
        mask[:, int(rng.integers(2, size - 2))] = 255
    image = np.stack([np.full((size, size), 180, np.uint8), np.full((size, size), 90, np.uint8),
                      np.full((size, size), 40, np.uint8)], -1)
    image[mask > 0] = (60, 20, 10)
    image = np.clip(image + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(os.path.join(root, f"{i:02d}_image.tif"))
    Image.fromarray(mask).save(os.path.join(root, f"{i:02d}_manual1.gif"))
    split = "train" if i < 4 else "val" if i == 4 else "test"
    rows.append(f"{i:02d}_image.tif,{i:02d}_manual1.gif,{i:02d},{split}")
  path = os.path.join(root, "drive.csv")
  with open(path, "w") as f:
    f.write("\n".join(rows) + "\n")
  return path


def test_the_papers_numbers_and_the_fundus_augmentation():
  c = fundus_segmentation.get_config()
  setting_rules.check(c)
  assert c.data.image_size == 512 and c.model.depth == 50 and c.finetune.task == "segmentation"
  assert (c.optim.name, c.optim.base_lr, c.optim.schedule) == ("adam", 1e-3, "cosine")
  assert c.data.split_column == "split"  # DRIVE's official split
  assert min(c.seg.flip_prob, c.seg.vflip_prob, c.seg.transpose_prob, c.seg.color_prob, c.seg.noise_prob) > 0
  assert c.seg.rotation_degrees > 0
  assert c.seg.crop_prob == c.seg.distort_prob == c.seg.intensity_prob == 0.0  # the X-ray set's ops: off


def test_each_fundus_op_is_drawn_over_a_few_seeds():
  c = fundus_segmentation.get_config("smoke")
  image = (np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)
  mask = (np.arange(256).reshape(16, 16) % 5 == 0).astype(np.uint8)
  drawn = {"vflip": 0, "transpose": 0, "color": 0, "noise": 0}
  for s in range(16):
    rngs = augment_seg.op_rngs([0, s])
    for name, key in (("vflip", "vflip_prob"), ("transpose", "transpose_prob"), ("color", "color_prob"),
                      ("noise", "noise_prob")):
      drawn[name] += rngs[name].random() < c.seg[key]
    out, out_mask = augment_seg.augment_pair(image, mask, [0, s], c.seg)
    assert out.shape == (16, 16, 3) and set(np.unique(out_mask)) <= {0, 1}
  assert all(0 < v < 16 for v in drawn.values()), drawn


def test_smoke_variant_reads_tiff_and_gif_and_runs_end_to_end(tmp_path):
  c = fundus_segmentation.get_config("smoke")
  c.data.path = _drive_like(str(tmp_path))
  c.finetune.init = "random"  # (a pretrained encoder: train.init_checkpoint)
  train = seg_manifest.load(c.data, c.seg, "train")
  assert len(train) == 4 and train.paths[0].endswith(".tif")
  images, masks = seg_pipeline.load_pairs(train, c.data.image_size, c.data.channels, c.seg.mask_threshold)
  assert images.shape == (4, 32, 32, 3) and set(np.unique(masks)) == {0, 1}
  workdir = str(tmp_path / "run")
  results = main_lib.run(c, workdir)
  assert results["completed"] and results["task"] == "segmentation" and results["final_step"] == 4
  assert results["num_test_images"] == 3
  assert 0.0 <= results["test"]["dice"]["value"] <= 1.0
  assert json.load(open(os.path.join(workdir, "config.json")))["seg"]["vflip_prob"] == 0.5
