"""SimCLR pretraining on dermatology images (Azizi et al. 2021, Sec. 4.2).

Full scale (default): ResNet-50 (1x) at 224 px, global batch 512, LARS with lr 0.3 (x batch/256),
up to 150,000 steps, SimCLR augmentation (colour strength 1.0, crop with resize, Gaussian blur,
flip), 2-layer projection head to 128-d. Point it at a manifest of the unlabeled images:

  medssl-jax train --config=configs/derm_simclr.py --workdir=gs://bucket/derm_simclr \
      --config.data.path=/data/derm/manifest.csv --config.data.image_dir=/data/derm

`:local` is a small variant that runs on one CPU/GPU on the synthetic colour data; it keeps the
full config's pairing, LARS base lr 0.3 under the linear rule (SimCLR's default; 0.075 at the
peak at batch 64).

`:from_imagenet,weights=DIR[,arch=A]` is the paper's "ImageNet->Derm" (Sec. 4.2, Table 1): step 2
starts from ImageNet SimCLR weights, a google-research/simclr checkpoint imported with
`medssl-jax import-weights --format simclr_tf --arch A --in CKPT --out DIR` (docs/guide/weights.md); A (default r50_1x_sk0) sets depth/width and the port settings the TF model implies
(`model.downsample_padding='tf_fixed'`, `model.input_norm='none'`). Reading: a SimCLR v2 file
(`_sk0`) brings its 3-layer projection head and the run continues it (`model.head_layers=3`); a
v1 file (`resnet50_4x`, ...) has no head and the run starts the paper's 2-layer head fresh.

Readings where the paper is silent (PROTOCOLS.md, "Facts from the public reference"):
temperature 0.1, weight decay 1e-6, warm-up of 10 epochs of the 454,295 unlabeled images at
batch 512 (8,873 steps), cosine decay to 0.
"""
import math

from configs.base import finalize, get_base_config
from configs import presets

UNLABELED_IMAGES = 454_295  # Azizi et al. Sec. 4.1: unlabeled Derm images for pretraining
BATCH = 512
WARMUP_EPOCHS = 10          # SimCLR reference default
WARMUP_STEPS = math.ceil(WARMUP_EPOCHS * UNLABELED_IMAGES / BATCH)  # 8,873; MICLe reuses it


def get_config(variant: str = ""):
  c = get_base_config()
  c.method = "simclr"
  c.data.source = "manifest"
  c.data.image_size = 224
  c.data.channels = 3
  c.model.depth, c.model.width, c.model.stem = 50, 1.0, "imagenet"
  c.model.head_layers, c.model.head_dim = 2, 128
  c.aug.color_strength, c.aug.color_prob, c.aug.grayscale_prob = 1.0, 0.8, 0.2
  c.aug.blur_prob, c.aug.flip, c.aug.rotation_degrees = 0.5, True, 0.0
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "lars", 0.3, "linear"
  c.optim.weight_decay, c.optim.warmup_steps = 1e-6, WARMUP_STEPS
  c.train.batch_size, c.train.num_steps, c.simclr.temperature = BATCH, 150_000, 0.1
  c.train.log_every, c.train.checkpoint_every = 100, 5000
  c.model.dtype = "bfloat16"
  if variant == "local":
    c.data.source = "synthetic"
    c.data.image_size = 64
    c.data.synthetic.image_size = 64
    c.model.depth, c.model.width = 18, 0.5
    c.model.dtype = "float32"
    c.optim.warmup_steps = 50
    c.train.batch_size, c.train.num_steps = 64, 500
    c.train.log_every, c.train.checkpoint_every = 25, 250
    c.probe.enabled = True
  elif variant.partition(",")[0] == "from_imagenet":
    opts = presets.parse_options(variant.partition(",")[2], "derm_simclr", ("weights", "arch"))
    presets.apply(c, presets.simclr_tf_settings(opts.get("arch", "r50_1x_sk0")))
    c.train.init_checkpoint = opts["weights"]
  elif variant:
    raise ValueError(f"derm_simclr: unknown variant {variant!r} (use '', 'local' or 'from_imagenet,weights=DIR')")
  return finalize(c)
