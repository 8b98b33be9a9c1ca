"""Host pipeline for segmentation: image + mask pairs decoded once, augmented jointly per step.

- `load_pairs` decodes every pair of a `SegSource` once and keeps it in memory at
  data.image_size: the image converted to data.channels (Pillow 'L' / 'RGB'; alpha dropped,
  16-bit greys scaled to 8 bits as in `numpy_pipeline`) and resized with Pillow's bilinear filter
  (antialiased when shrinking), the mask read as grey, binarised (value >= seg.mask_threshold)
  at its own resolution and resized by nearest neighbour. Images are not kept at their native
  size: the metrics are computed at data.image_size, where the network sees the masks (the
  paper resizes its X-rays and masks to 224 px before training, too). Memory: N x S x S x (C + 1)
  bytes (180 pairs at 224 px: 36 MB).
- `train_iterator`: process-local batches {image float32 (B, S, S, C), mask uint8 (B, S, S),
  index}; the same index stream as classification fine-tuning (`indexing.supervised_stream`:
  epoch permutations, one view seed per example) and `augment_seg.augment_pair` per example, so a
  batch is a pure function of (seed, step) and a resumed run sees the batches it would have seen.

NumPy only (no tf.data or grain twin yet): fine-tuning refuses data.pipeline 'tf' and 'grain'
for finetune.task='segmentation'.
"""
import concurrent.futures
from typing import Iterator

import numpy as np

from input_pipeline import augment_seg, indexing, numpy_pipeline
from medssl_jax.errors import UserError


def _load_pair(image_path: str, mask_path: str, image_size: int, channels: int, threshold: float):
  from PIL import Image
  x = numpy_pipeline._decode(image_path)  # uint8 (H, W, 1 or 3)
  with Image.open(mask_path) as im:
    m = np.asarray(im.convert("L")) >= threshold
  if m.shape != x.shape[:2]:
    raise UserError(f"mask {mask_path} is {m.shape[1]}x{m.shape[0]} pixels but its image {image_path} is "
                    f"{x.shape[1]}x{x.shape[0]}; a mask must have its image's size")
  img = Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x)
  img = img.convert("L" if channels == 1 else "RGB").resize((image_size, image_size), Image.BILINEAR)
  img = np.asarray(img)
  img = img[..., None] if img.ndim == 2 else img
  mask = Image.fromarray(m.astype(np.uint8) * 255).resize((image_size, image_size), Image.NEAREST)
  return img, (np.asarray(mask) >= 128).astype(np.uint8)


def load_pairs(source, image_size: int, channels: int, threshold: float = 128, workers: int = 4):
  """(images uint8 (N, S, S, C), masks uint8 (N, S, S) in {0, 1}) of every pair, in order."""
  if channels not in (1, 3):
    raise UserError(f"data.channels={channels}: expected 1 or 3")
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    rows = list(pool.map(lambda i: _load_pair(source.paths[i], source.mask_paths[i], int(image_size),
                                              int(channels), float(threshold)), range(len(source))))
  if not rows:
    return np.zeros((0, image_size, image_size, channels), np.uint8), np.zeros((0, image_size, image_size), np.uint8)
  return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


def train_iterator(images: np.ndarray, masks: np.ndarray, *, seg_cfg, global_batch: int, seed: int,
                   start_step: int = 0, process_index: int = 0, process_count: int = 1,
                   indices=None, repeat_to_fill: bool = False) -> Iterator[dict]:
  """Process-local augmented batches {image, mask, index}, from step `start_step` on."""
  indices = np.arange(len(images), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
  indices, local = indexing.supervised_units(indices, global_batch, process_count, repeat_to_fill)
  labels = np.zeros(len(images), np.int32)
  stream = indexing.supervised_stream(indices, labels, global_batch=global_batch, seed=seed, start_step=start_step,
                                      process_index=process_index, process_count=process_count)

  def make(example):
    i, _, s = example
    image, mask = augment_seg.augment_pair(images[i], masks[i], s, seg_cfg)
    return {"image": image, "mask": mask, "index": np.int32(i)}

  return numpy_pipeline._background(numpy_pipeline._batched(stream, local, make, numpy_pipeline._workers()))
