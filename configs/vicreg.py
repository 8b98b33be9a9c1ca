"""VICReg pretraining (Bardes, Ponce & LeCun 2022, "VICReg: variance-invariance-covariance regularization
for self-supervised learning"; method: medssl_jax/methods/vicreg.py).

Default (the paper's ImageNet recipe, Sec. 4.1, on a data set you name): ResNet-50 at
224 px; expander 3 x Linear(8192), BN + ReLU after the first two; loss weights 25 / 25 / 1 (invariance /
variance / covariance), gamma 1, eps 1e-4; LARS with lr 0.2 x batch/256, weight decay 1e-6, batch 2048,
1000 epochs of ImageNet-1k's 1,281,167 images (625 full batches an epoch) = 625,000 steps, 10 epochs of
warm-up, cosine decay; biases and BN parameters excluded from LARS adaptation and weight decay.

Not matched: the paper's cosine schedule ends at a small final rate (its code: 1/1000 of the peak),
ours at 0. The variance weight follows Eq. 6 (mu = 25 on the sum of the two views' terms); the
authors' code, which made the paper's numbers, and lightly weight their mean, i.e. our
--config.vicreg.var_weight=12.5 (tests/losses/test_losses_vs_lightly.py). Augmentation as BYOL's (mapped in configs/byol.py: blur 0.5 on both views, no solarisation).

  medssl-jax train --config=configs/vicreg.py --workdir=gs://bucket/vicreg \
      --config.data.source=manifest --config.data.path=/data/train.csv

`:local`: PneumoniaMNIST (../shared/data/pneumoniamnist.npz, 28 px, grey) with the model, batch,
steps, crops, warm-up and logging of configs/chexpert_simclr.py:local (ResNet-18 0.25x small stem,
batch 128, 500 steps, rotation up to 45 degrees, no blur), expander 512 wide and out, linear probe
at the end. The paper's 0.2 x 128/256 = 0.1 and weights 25 / 25 / 1 are kept, untuned for 500 steps.
The part every SSL method's :local shares is configs/presets.py local_pneumoniamnist.
"""
from configs import presets
from configs.base import finalize, get_base_config

BASE_LR, WEIGHT_DECAY, BATCH = 0.2, 1e-6, 2048                       # Sec. 4.1
SIM_WEIGHT, VAR_WEIGHT, COV_WEIGHT = 25.0, 25.0, 1.0                 # Sec. 4.1
PROJECTOR, PROJECTOR_LAYERS = 8192, 3                                # Sec. 4.1
IMAGENET_TRAIN_IMAGES, EPOCHS, WARMUP_EPOCHS = 1_281_167, 1000, 10
LOCAL_PROJECTOR, LOCAL_WARMUP_STEPS = 512, 50


def get_config(variant: str = ""):
  c = get_base_config()
  c.method, c.pairing = "vicreg", "views"
  c.data.image_size, c.data.channels = 224, 3
  c.model.arch, c.model.depth, c.model.width, c.model.stem = "resnet", 50, 1.0, "imagenet"
  c.model.head_layers, c.model.head_dim, c.model.dtype = PROJECTOR_LAYERS, PROJECTOR, "bfloat16"
  c.vicreg.sim_weight, c.vicreg.var_weight, c.vicreg.cov_weight = SIM_WEIGHT, VAR_WEIGHT, COV_WEIGHT
  c.vicreg.projector_hidden = PROJECTOR
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
    c.model.head_dim = c.vicreg.projector_hidden = LOCAL_PROJECTOR
  elif variant:
    raise ValueError(f"vicreg: unknown variant {variant!r} (use '' or 'local')")
  return finalize(c)
