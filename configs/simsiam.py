"""SimSiam pretraining (Chen & He 2021, "Exploring simple Siamese representation learning"; method:
medssl_jax/methods/simsiam.py).

Default (the paper's ImageNet baseline, Sec. 3 "Baseline settings", on a data set you name):
ResNet-50 at 224 px; projector 3 x Linear(2048) with BN on each (the output too); predictor
Linear(512)-BN-ReLU-Linear(2048); SGD momentum 0.9, lr 0.05 x batch/256, weight decay 1e-4, cosine
decay, no warm-up, batch 512; 100 epochs of ImageNet-1k's 1,281,167 images (2,502 full batches an
epoch) = 250,200 steps. Augmentation as MoCo v2's (the paper's Sec. 3; mapped to our keys in
configs/moco_v2.py): crop area 0.2-1, colour jitter strength 0.5 p 0.8, grayscale 0.2, blur 0.5, flip.

Not matched: a fixed learning rate for the predictor (the paper's predictor ablation reports it a little
better, and its code offers it); here the predictor decays with the rest (one schedule per run).

  medssl-jax train --config=configs/simsiam.py --workdir=gs://bucket/simsiam \
      --config.data.source=manifest --config.data.path=/data/train.csv

`:local`: PneumoniaMNIST (../shared/data/pneumoniamnist.npz, 28 px, grey) with the model, batch,
steps, crops and logging of configs/chexpert_simclr.py:local (ResNet-18 0.25x small stem, batch
128, 500 steps, rotation up to 45 degrees, no blur), projector 512 wide and out, predictor
bottleneck 128 (the paper's 1/4), linear probe at the end. The paper's rule 0.05 x 128/256 = 0.025
is kept, untuned for 500 steps.
The part every SSL method's :local shares is configs/presets.py local_pneumoniamnist (here with
warm-up 0, the paper's none).
"""
from configs import presets
from configs.base import finalize, get_base_config

BASE_LR, WEIGHT_DECAY, MOMENTUM, BATCH = 0.05, 1e-4, 0.9, 512     # Sec. 3
PROJECTOR, PREDICTOR_HIDDEN, PROJECTOR_LAYERS = 2048, 512, 3       # Sec. 3
IMAGENET_TRAIN_IMAGES, EPOCHS = 1_281_167, 100
LOCAL_PROJECTOR, LOCAL_PREDICTOR_HIDDEN = 512, 128


def get_config(variant: str = ""):
  c = get_base_config()
  c.method, c.pairing = "simsiam", "views"
  c.data.image_size, c.data.channels = 224, 3
  c.model.arch, c.model.depth, c.model.width, c.model.stem = "resnet", 50, 1.0, "imagenet"
  c.model.head_layers, c.model.head_dim, c.model.dtype = PROJECTOR_LAYERS, PROJECTOR, "bfloat16"
  c.simsiam.projector_hidden, c.simsiam.predictor_hidden = PROJECTOR, PREDICTOR_HIDDEN
  c.aug.crop, c.aug.crop_mode, c.aug.crop_area_min, c.aug.crop_area_max = True, "inception", 0.2, 1.0
  c.aug.color_strength, c.aug.color_prob, c.aug.grayscale_prob = 0.5, 0.8, 0.2
  c.aug.blur_prob, c.aug.flip, c.aug.rotation_degrees = 0.5, True, 0.0
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "sgd", BASE_LR, "linear"
  c.optim.weight_decay, c.optim.momentum = WEIGHT_DECAY, MOMENTUM
  c.optim.schedule, c.optim.warmup_steps = "cosine", 0
  c.train.batch_size, c.train.num_steps = BATCH, EPOCHS * (IMAGENET_TRAIN_IMAGES // BATCH)
  c.train.log_every, c.train.checkpoint_every = 100, 5000
  if variant == "local":
    presets.local_pneumoniamnist(c, warmup_steps=0)
    c.model.head_dim = c.simsiam.projector_hidden = LOCAL_PROJECTOR
    c.simsiam.predictor_hidden = LOCAL_PREDICTOR_HIDDEN
  elif variant:
    raise ValueError(f"simsiam: unknown variant {variant!r} (use '' or 'local')")
  return finalize(c)
