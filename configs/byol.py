"""BYOL pretraining (Grill et al. 2020, "Bootstrap your own latent"; method: medssl_jax/methods/byol.py).

Default (the paper's ImageNet recipe, Sec. 3.3 and App. C, on a data set you name): ResNet-50 at
224 px; projector and predictor MLPs Linear(4096)-BN-ReLU-Linear(256); target EMA with base
momentum 0.996, raised to 1 by the cosine schedule; LARS with lr 0.2 x batch/256, weight decay
1.5e-6, biases and BN parameters excluded from LARS adaptation and weight decay (the library's
LARS does the same), batch 4096, 10 epochs of warm-up then cosine decay; 1000 epochs of
ImageNet-1k's 1,281,167 images at batch 4096 (312 full batches an epoch) = 312,000 steps.

  medssl-jax train --config=configs/byol.py --workdir=gs://bucket/byol \
      --config.data.source=manifest --config.data.path=/data/train.csv

BYOL's augmentation (App. B, Table 6) onto our keys, and what differs:
  random resized crop, area 0.08-1           -> aug.crop_mode 'inception', area 0.08-1
  flip                                        -> aug.flip
  colour jitter (0.4, 0.4, 0.2, 0.1), p 0.8   -> aug.color_strength 0.5, color_prob 0.8 (saturation 0.4, not 0.2)
  grayscale p 0.2                             -> aug.grayscale_prob 0.2
  blur p 1.0 / 0.1, solarise p 0 / 0.2        -> aug.blur_prob 0.5 on both views (the pipeline draws both
                                                 views from one distribution: no asymmetric blur, no solarisation)

`:local`: PneumoniaMNIST (../shared/data/pneumoniamnist.npz, 28 px, grey) with the model, batch,
steps, crops, warm-up and logging of configs/chexpert_simclr.py:local (ResNet-18 0.25x small stem,
batch 128, 500 steps, rotation up to 45 degrees, no blur), projector and predictor 512 hidden,
128 out (the encoder's features are 128-d), linear probe at the end. BYOL's rule 0.2 x 128/256 =
0.1 and tau_base 0.996 are kept, untuned for 500 steps.
The part every SSL method's :local shares is configs/presets.py local_pneumoniamnist.
"""
from configs import presets
from configs.base import finalize, get_base_config

BASE_LR, WEIGHT_DECAY, BATCH, TAU_BASE = 0.2, 1.5e-6, 4096, 0.996   # Sec. 3.3
HIDDEN, PROJECTION = 4096, 256                                       # Sec. 3.3
IMAGENET_TRAIN_IMAGES, EPOCHS, WARMUP_EPOCHS = 1_281_167, 1000, 10
LOCAL_HIDDEN, LOCAL_PROJECTION, LOCAL_WARMUP_STEPS = 512, 128, 50


def get_config(variant: str = ""):
  c = get_base_config()
  c.method, c.pairing = "byol", "views"
  c.data.image_size, c.data.channels = 224, 3
  c.model.arch, c.model.depth, c.model.width, c.model.stem = "resnet", 50, 1.0, "imagenet"
  c.model.head_layers, c.model.head_dim, c.model.dtype = 2, PROJECTION, "bfloat16"
  c.byol.momentum, c.byol.projector_hidden, c.byol.predictor_hidden = TAU_BASE, HIDDEN, HIDDEN
  c.aug.crop, c.aug.crop_mode, c.aug.crop_area_min, c.aug.crop_area_max = True, "inception", 0.08, 1.0
  c.aug.color_strength, c.aug.color_prob, c.aug.grayscale_prob = 0.5, 0.8, 0.2
  c.aug.blur_prob, c.aug.flip, c.aug.rotation_degrees = 0.5, True, 0.0
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "lars", BASE_LR, "linear"
  c.optim.weight_decay, c.optim.schedule = WEIGHT_DECAY, "cosine"
  steps_per_epoch = IMAGENET_TRAIN_IMAGES // BATCH
  c.optim.warmup_steps = WARMUP_EPOCHS * steps_per_epoch
  c.train.batch_size, c.train.num_steps = BATCH, EPOCHS * steps_per_epoch
  c.train.log_every, c.train.checkpoint_every = 100, 5000
  if variant == "local":
    presets.local_pneumoniamnist(c, warmup_steps=LOCAL_WARMUP_STEPS)
    c.model.head_dim = LOCAL_PROJECTION
    c.byol.projector_hidden = c.byol.predictor_hidden = LOCAL_HIDDEN
  elif variant:
    raise ValueError(f"byol: unknown variant {variant!r} (use '' or 'local')")
  return finalize(c)
