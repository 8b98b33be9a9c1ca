"""SimCLR pretraining on chest X-rays (Azizi et al. 2021, Sec. 4.2, CheXpert).

Full scale (default): ResNet-50 (1x) at 224 px, global batch 1024, LARS with lr 0.5 (x batch/256),
up to 100,000 steps (the best of their sweep: lr {0.5, 1.0, 1.5}, temperature {0.1, 0.5, 1.0},
batch {512, 1024}). Augmentation: random crop, colour jitter strength 0.5, rotation up to 45
degrees, horizontal flip, NO blur. Reads CheXpert through TFDS's `chexpert` builder with the
manual download in `data.path`:

  medssl-jax train --config=configs/chexpert_simclr.py --workdir=gs://bucket/cxr_simclr \
      --config.data.path=/data/tfds

`:from_imagenet,weights=DIR[,arch=A]`: the paper's "ImageNet->CheXpert" (Table 1), step 2 from
ImageNet SimCLR weights imported with `import-weights --format simclr_tf` (the settings and the
head reading of configs/derm_simclr.py:from_imagenet).

`:local` runs on PneumoniaMNIST (../shared/data/pneumoniamnist.npz, 28 px chest X-rays) at batch
128 with LARS base lr 0.075 under the square-root rule (0.075 x sqrt(128) = 0.85 at the peak):
the SimCLR reference's pairing for small batches (paper App. B.1; its README: the square-root
rule trains better at smaller batches). The full config's 0.5 is a linear-rule value
(x batch/256); under the square-root rule it gave 5.66 (see medssl_jax/training/optim.py).

Readings where the paper is silent: temperature 0.1 (the reference default; their sweep's best is
not stated), weight decay 1e-6, warm-up of 10 epochs of CheXpert's 223,414 training images at
batch 1024 (2,182 steps), grey images repeated to 3 channels.
"""
import os

from configs.base import finalize, get_base_config
from configs import presets

LOCAL_WARMUP_STEPS = 50  # :local, 10% of its 500 steps; covid_cxr_micle (MICLe from it) reuses it

_SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def get_config(variant: str = ""):
  c = get_base_config()
  c.method = "simclr"
  c.data.source = "tfds"
  c.data.tfds_name = "chexpert"
  c.data.image_size = 224
  c.data.channels = 3
  c.model.depth, c.model.width, c.model.stem = 50, 1.0, "imagenet"
  c.model.head_layers, c.model.head_dim = 2, 128
  c.aug.color_strength, c.aug.color_prob, c.aug.grayscale_prob = 0.5, 0.8, 0.0
  c.aug.blur_prob, c.aug.flip, c.aug.rotation_degrees = 0.0, True, 45.0
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "lars", 0.5, "linear"
  c.optim.weight_decay, c.optim.warmup_steps = 1e-6, 2182
  c.train.batch_size, c.train.num_steps, c.simclr.temperature = 1024, 100_000, 0.1
  c.train.log_every, c.train.checkpoint_every = 100, 5000
  c.model.dtype = "bfloat16"
  if variant == "local":
    c.data.source = "npz"
    c.data.path = os.path.normpath(os.path.join(_SHARED, "pneumoniamnist.npz"))
    c.data.image_size, c.data.channels = 28, 1
    c.model.depth, c.model.width, c.model.stem = 18, 0.25, "small"
    c.model.dtype = "float32"
    c.aug.crop_area_min = 0.2
    c.optim.warmup_steps = LOCAL_WARMUP_STEPS
    c.optim.base_lr, c.optim.lr_scaling = 0.075, "sqrt"  # SimCLR's small-batch pairing (docstring)
    c.train.batch_size, c.train.num_steps = 128, 500
    c.train.log_every, c.train.checkpoint_every = 25, 250
    c.probe.enabled = True
  elif variant.partition(",")[0] == "from_imagenet":  # "ImageNet->CheXpert", as derm_simclr:from_imagenet
    opts = presets.parse_options(variant.partition(",")[2], "chexpert_simclr", ("weights", "arch"))
    presets.apply(c, presets.simclr_tf_settings(opts.get("arch", "r50_1x_sk0")))
    c.train.init_checkpoint = opts["weights"]
  elif variant:
    raise ValueError(f"chexpert_simclr: unknown variant {variant!r} (use '', 'local' or 'from_imagenet,weights=DIR')")
  return finalize(c)
