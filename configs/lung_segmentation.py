"""Lung segmentation on covid_cxr_lungseg with a U-Net over the encoder (Hosseinzadeh Taher et al.
2021, lung segmentation LXS; App. B): `mode='finetune'`, `finetune.task='segmentation'`.

THE MASKS ARE MODEL OUTPUTS: covid_cxr_lungseg's lung masks were made by the lungVAE model
(Selvan et al. 2020, arXiv:2005.10052), not drawn by hand (../shared/data/covid_cxr_lungseg/
PROVENANCE.md). A Dice on them measures agreement with that model, not segmentation accuracy;
results.json carries this note (`data_note`) next to its numbers.

The paper's protocol (App. B) and its code's settings, as used here:
- U-Net with the pretrained ResNet as its encoder, all layers fine-tuned (models/unet.py);
- Adam (0.9, 0.999), lr 1e-3 with cosine decay, no weight decay (none is stated);
- images and masks resized to 224 px; X-ray segmentation augmentation of their code (seg.*
  defaults: brightness/contrast or gamma p 0.3; elastic / grid / optical distortion p 0.3;
  square random crop p 0.25; input_pipeline/augment_seg.py);
- a random 80 / 20 train / test split and early stopping on 10% of train: here drawn per
  PATIENT (106 patients, 180 images; PROVENANCE.md: split by patientid), test 20% of the images,
  val 10% of the rest (seg.test_fraction / val_fraction, seed seg.split_seed); early stopping is
  read as selection of the best state on val by Dice every finetune.eval_every steps (the loop can also
  stop after finetune.early_stop_patience validations without improvement; this config leaves it off,
  as the benchmark's transfer runs set it themselves; medssl_jax/runs/segment.py);
- metric: mean Dice (and IoU) over the test images, 95% bootstrap intervals over patients.
Readings where the paper is silent: batch 16; 100 epochs at most (`finetune.num_epochs`); Dice + BCE
loss with equal weights (the paper names Dice as the metric only); one mask per image
(`canonical_mask == True`), masks binarised at 128 (PROVENANCE.md); grey X-rays given to the
encoder as 3 equal channels.

Variants (comma-separated): scale '' (full: 224 px, ResNet-50 1x, 'imagenet' stem, a GPU),
'small' (CPU: 64 px, ResNet-18 0.25x, U-Net decoder 0.25x the paper's widths), 'smoke' (CI:
32 px, ResNet-18 0.125x, 'small' stem, decoder 0.125x, 4 steps); 'root=PATH': the
covid_cxr_lungseg folder (default ../shared/data/covid_cxr_lungseg beside this repository);
'size=N': images and masks resized to N px instead of the scale's size.

  medssl-jax train --config=configs/lung_segmentation.py:small \\
      --config.finetune.init=random --workdir=runs/lungseg_small_random
  medssl-jax train --config=configs/lung_segmentation.py \\
      --config.train.init_checkpoint=<pretraining workdir> --workdir=runs/lungseg_full
"""
import os

from configs.base import finalize, get_base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ROOT = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "covid_cxr_lungseg"))
DATA_NOTE = ("covid_cxr_lungseg masks are lungVAE model outputs (Selvan et al. 2020), not manual ground truth: "
             "Dice / IoU measure agreement with that model")
SCALES = {  # image size, depth, width, stem, batch, epochs or steps, U-Net decoder width multiplier
    "full": dict(image_size=224, depth=50, width=1.0, stem="imagenet", batch=16, epochs=100.0, steps=0, decoder=1.0),
    "small": dict(image_size=64, depth=18, width=0.25, stem="imagenet", batch=16, epochs=30.0, steps=0, decoder=0.25),
    "smoke": dict(image_size=32, depth=18, width=0.125, stem="small", batch=8, epochs=0.0, steps=4, decoder=0.125),
}


def _parse(variant: str):
  scale, root, size = "full", DEFAULT_ROOT, 0
  for part in filter(None, (p.strip() for p in variant.split(","))):
    if part.startswith("root="):
      root = part[len("root="):]
    elif part.startswith("size=") and part[len("size="):].isdigit() and int(part[len("size="):]) >= 8:
      size = int(part[len("size="):])
    elif part in SCALES:
      scale = part
    else:
      raise ValueError(f"lung_segmentation: variant part {part!r}: use one of {sorted(SCALES)}, root=PATH "
                       f"and/or size=N (pixels, >= 8)")
  return scale, root, size


def get_config(variant: str = ""):
  scale, root, size = _parse(variant)
  s = SCALES[scale]
  c = get_base_config()
  c.mode = "finetune"
  c.finetune.task, c.finetune.init = "segmentation", "pretrained"
  c.data.source, c.data.pipeline = "seg_manifest", "numpy"
  c.data.path = os.path.join(root, "pairs.csv")
  c.data.image_dir = os.path.join(root, "images")
  c.data.path_column, c.data.case_column, c.data.split_column = "image_file", "patientid", ""
  c.seg.mask_column, c.seg.mask_dir, c.seg.keep_rows = "mask_file", os.path.join(root, "masks"), "canonical_mask=True"
  c.seg.mask_threshold, c.seg.test_fraction, c.seg.val_fraction, c.seg.split_seed = 128, 0.2, 0.1, 0
  c.seg.data_note = DATA_NOTE
  c.seg.decoder_width = s["decoder"]
  c.data.train_split, c.finetune.val_split, c.data.eval_split = "train", "val", "test"
  c.data.image_size, c.data.channels = size or s["image_size"], 3
  c.model.arch, c.model.depth, c.model.width, c.model.stem = "resnet", s["depth"], s["width"], s["stem"]
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling, c.optim.weight_decay = "adam", 1e-3, "none", 0.0
  c.optim.schedule, c.optim.warmup_steps = "cosine", 0
  c.train.batch_size = s["batch"]
  c.train.num_steps = s["steps"] or 1000
  c.finetune.num_epochs = s["epochs"]
  c.finetune.repeat_to_fill_batch = True
  if scale == "smoke":
    c.train.log_every, c.train.checkpoint_every, c.finetune.eval_every = 2, 2, 2
    c.eval.num_replicates = 100
  else:  # every 5 epochs of ~120 training images (batch 16: ~8 steps an epoch)
    c.train.log_every, c.train.checkpoint_every, c.finetune.eval_every = 10, 100, 40
  return finalize(c)
