"""MoCo v2 pretraining (Chen, Fan, Girshick & He 2020, "Improved baselines with momentum
contrastive learning"; defaults in ../shared/PROTOCOLS.md, "MoCo v2 defaults").

Default (the reference's ImageNet recipe, on a data set you name, e.g. a manifest):
ResNet-50 at 224 px, batch 256, SGD momentum 0.9, lr 0.03 x batch/256, weight decay 1e-4, cosine
to zero, no warm-up; InfoNCE at temperature 0.2 against a queue of 65,536 keys; key encoder
momentum 0.999; 2-layer MLP head (hidden width = the encoder's 2,048, 128-d out, no batch norm);
shuffled BN in 8 groups (the reference's 8 GPUs of 32). Steps: the reference's 200 epochs of
ImageNet-1k's 1,281,167 images at batch 256 (5,004 full batches per epoch) = 1,000,800; set
`train.num_steps` for another data set.

  medssl-jax train --config=configs/moco_v2.py --workdir=gs://bucket/moco \
      --config.data.source=manifest --config.data.path=/data/train.csv

MoCo v2's augmentation ("aug+") onto our keys:
  RandomResizedCrop(224, scale=(0.2, 1))  -> aug.crop_mode 'inception', area 0.2-1, aspect 3/4-4/3
  ColorJitter(0.4, 0.4, 0.4, 0.1), p 0.8  -> aug.color_strength 0.5 (0.8 s = 0.4, 0.2 s = 0.1), color_prob 0.8
  RandomGrayscale(p=0.2)                  -> aug.grayscale_prob 0.2
  GaussianBlur(sigma U(0.1, 2)), p 0.5    -> aug.blur_prob 0.5
  RandomHorizontalFlip                    -> aug.flip
Where ours differs: the blur kernel is 10% of the image side (the reference's PIL blur sizes its
kernel from sigma); brightness/contrast/saturation/hue are TensorFlow's (or the NumPy pipeline's
equivalents) in a random order with a clip after each op, as SimCLR's; saturation and hue act on
colour images only (a no-op on grey ones, as is grayscale).

Variants (each sets only what differs from the default):
- `:demo`: the README demo's embedded synthetic data (configs/demo.py: 32 px, ResNet-18 0.25x
  with the small stem, 64-d projection, batch 128, 300 steps, blur off, linear probe at the end);
  queue 1,024 (8 batches); shuffled BN in 8 groups of 16.
- `:local`: PneumoniaMNIST (../shared/data/pneumoniamnist.npz, 28 px, grey) with the model, batch,
  steps, crops and logging of configs/chexpert_simclr.py:local (ResNet-18 0.25x small stem,
  batch 128, 500 steps; rotation up to 45 degrees, no blur at 28 px), so Study A's MoCo and SimCLR
  arms differ in the objective and its optimiser only. Queue 1,024 (8 batches, 22% of the 4,708
  training images; MoCo-CXR's 24,576 is 11% of CheXpert's); shuffled BN in 8 groups of 16.
  The learning rate keeps MoCo v2's rule, 0.03 x 128/256 = 0.015, untuned for 500 steps.
"""
import os

from configs.base import finalize, get_base_config

# MoCo v2 reference defaults (PROTOCOLS.md "MoCo v2 defaults").
QUEUE, EMA, TEMPERATURE, BASE_LR, BATCH = 65_536, 0.999, 0.2, 0.03, 256
IMAGENET_TRAIN_IMAGES, EPOCHS = 1_281_167, 200
LOCAL_QUEUE = 1024

_SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def get_config(variant: str = ""):
  c = get_base_config()
  c.method, c.pairing = "moco_v2", "views"
  c.data.image_size, c.data.channels = 224, 3
  c.model.arch, c.model.depth, c.model.width, c.model.stem = "resnet", 50, 1.0, "imagenet"
  c.model.head_layers, c.model.head_dim = 2, 128
  c.model.dtype = "bfloat16"
  c.aug.crop, c.aug.crop_mode, c.aug.crop_area_min, c.aug.crop_area_max = True, "inception", 0.2, 1.0
  c.aug.color_strength, c.aug.color_prob, c.aug.grayscale_prob = 0.5, 0.8, 0.2
  c.aug.blur_prob, c.aug.flip, c.aug.rotation_degrees = 0.5, True, 0.0
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "sgd", BASE_LR, "linear"
  c.optim.weight_decay, c.optim.momentum = 1e-4, 0.9
  c.optim.schedule, c.optim.warmup_steps = "cosine", 0
  c.train.batch_size, c.moco.temperature = BATCH, TEMPERATURE
  c.train.num_steps = EPOCHS * (IMAGENET_TRAIN_IMAGES // BATCH)
  c.train.log_every, c.train.checkpoint_every = 100, 5000
  c.moco.queue_size, c.moco.momentum, c.moco.bn, c.moco.bn_groups = QUEUE, EMA, "shuffle", 8
  if variant == "demo":
    c.data.source, c.data.image_size = "synthetic", 32
    c.data.synthetic.num_cases, c.data.synthetic.num_classes = 600, 4
    c.model.depth, c.model.width, c.model.stem, c.model.dtype = 18, 0.25, "small", "float32"
    c.model.head_dim = 64
    c.aug.blur_prob = 0.0
    c.train.batch_size, c.train.num_steps = 128, 300
    c.train.log_every, c.train.checkpoint_every = 25, 100
    c.moco.queue_size = LOCAL_QUEUE
    c.probe.enabled = True
  elif variant == "local":
    c.data.source = "npz"
    c.data.path = os.path.normpath(os.path.join(_SHARED, "pneumoniamnist.npz"))
    c.data.image_size, c.data.channels = 28, 1
    c.model.depth, c.model.width, c.model.stem, c.model.dtype = 18, 0.25, "small", "float32"
    c.aug.grayscale_prob, c.aug.blur_prob, c.aug.rotation_degrees = 0.0, 0.0, 45.0
    c.train.batch_size, c.train.num_steps = 128, 500
    c.train.log_every, c.train.checkpoint_every = 25, 250
    c.moco.queue_size = LOCAL_QUEUE
    c.probe.enabled = True
  elif variant:
    raise ValueError(f"moco_v2: unknown variant {variant!r} (use '', 'demo' or 'local')")
  return finalize(c)
