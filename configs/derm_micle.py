"""MICLe on dermatology cases (Azizi et al. 2021, Sec. 3.2, Algorithm 1, App. A.1).

A batch holds N distinct cases; a case with M >= 2 images gives two crops of two DIFFERENT
randomly chosen images, a case with one image two augmented views of it. Same NT-Xent and step
as SimCLR. Full scale: initialised from a SimCLR checkpoint (`train.init_checkpoint`),
batch 128, lr 0.1 (x batch/256), 100,000 steps, LARS, weight decay and warm-up as SimCLR,
ResNet-50 (1x) at 224 px, up to 6 images per case.

  medssl-jax train --config=configs/derm_micle.py --workdir=DIR \
      --config.train.init_checkpoint=SIMCLR_WORKDIR --config.data.path=/data/derm/manifest.csv

Variants: `:partial` = partial augmentation (random crop only), the other arm of Table B.2;
`:local` = synthetic multi-image cases, small ResNet, CPU-sized.
Warm-up: the paper keeps "optimizer, weight decay, and warmup step" of its SimCLR pretraining
(Sec. 4.2), so this config takes the warm-up steps of configs/derm_simclr.py, the run it
continues: 8,873 steps (10 epochs of the 454,295 unlabeled images at batch 512), not 10 epochs of
MICLe's own 15,340 cases at batch 128 (1,198 steps, which an earlier version used).
Readings: lr 0.1 is read as a base lr under the linear rule like the paper's SimCLR 0.3 (0.05 at
the peak at batch 128; the paper lowers it for the smaller batch, citing SimCLR). `:local`
warms up for 20 of its 200 steps, the share derm_simclr:local uses (50 of 500), since the
full-scale 8,873 exceed its length.
"""
from configs import derm_simclr
from configs.base import finalize, get_base_config


def get_config(variant: str = ""):
  c = get_base_config()
  c.method, c.pairing = "simclr", "case"   # MICLe = SimCLR on pairs from two images of a case
  c.data.source = "manifest"
  c.data.image_size, c.data.channels = 224, 3
  c.data.max_bag_size = 6
  c.model.depth, c.model.width, c.model.stem = 50, 1.0, "imagenet"
  c.model.head_layers, c.model.head_dim = 2, 128
  c.model.dtype = "bfloat16"
  c.aug.color_strength, c.aug.color_prob, c.aug.grayscale_prob = 1.0, 0.8, 0.2
  c.aug.blur_prob, c.aug.flip = 0.5, True
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "lars", 0.1, "linear"
  c.optim.weight_decay, c.optim.warmup_steps = 1e-6, derm_simclr.WARMUP_STEPS  # = SimCLR's (docstring)
  c.train.batch_size, c.train.num_steps, c.simclr.temperature = 128, 100_000, 0.1
  c.train.log_every, c.train.checkpoint_every = 100, 5000
  variants = set(variant.split(",")) - {""}
  if "partial" in variants:
    c.aug.flip = False
    c.aug.color_prob, c.aug.grayscale_prob, c.aug.blur_prob = 0.0, 0.0, 0.0
  if "local" in variants:
    c.data.source = "synthetic"
    c.data.image_size = c.data.synthetic.image_size = 32
    c.model.depth, c.model.width, c.model.stem, c.model.dtype = 18, 0.25, "small", "float32"
    c.aug.crop_area_min, c.aug.color_strength, c.aug.blur_prob = 0.2, 0.5, 0.0
    c.optim.warmup_steps = 20
    c.train.batch_size, c.train.num_steps = 64, 200
    c.train.log_every, c.train.checkpoint_every = 25, 100
    c.probe.enabled = True
  if variants - {"partial", "local"}:
    raise ValueError(f"derm_micle: unknown variant {variant!r} (use '', 'partial', 'local' or 'local,partial')")
  return finalize(c)
