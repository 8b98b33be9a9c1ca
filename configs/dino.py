"""DINO pretraining (Caron et al. 2021, "Emerging properties in self-supervised vision transformers";
method: medssl_jax/methods/dino.py), on two views.

Default (the paper's ViT-S/16 ImageNet recipe, Sec. 4 and App., on a data set you name): ViT-S/16 at
224 px; DINO head 3 layers, hidden 2048, bottleneck 256, 65,536 weight-normalised prototypes; student
temperature 0.1, teacher temperature warmed up linearly from 0.04 to 0.07 over the first 30 epochs;
center momentum 0.9; teacher EMA 0.996 -> 1 (cosine); the prototypes frozen during the first epoch;
AdamW with lr 0.0005 x batch/256, 10 epochs of warm-up then cosine decay, batch 1024; 100 epochs of
ImageNet-1k's 1,281,167 images (1,251 full batches an epoch) = 125,100 steps.

The weight decay rises from 0.04 to 0.4 with a cosine schedule (optim.weight_decay_schedule).
Not matched: multi-crop (the paper adds small local crops for the student; our ViT cannot take
them, its position embeddings are not interpolated, so both views are global crops, area 0.4-1, the
reference's default global-crop scale; a ResNet takes --config.aug.local_crops=6, see
docs/guide/methods.md); the lr decays to 0 (the paper to 1e-6). Augmentation as BYOL's mapping
(configs/byol.py: blur 0.5 on both views, no solarisation).

  medssl-jax train --config=configs/dino.py --workdir=gs://bucket/dino \
      --config.data.source=manifest --config.data.path=/data/train.csv

`:local`: PneumoniaMNIST (../shared/data/pneumoniamnist.npz, 28 px, grey) with the model, batch,
steps, warm-up and logging of configs/chexpert_simclr.py:local (ResNet-18 0.25x small stem, batch
128, 500 steps, rotation up to 45 degrees, no blur), a head 512 hidden / 128 bottleneck / 4,096
prototypes, the teacher temperature warmed up over 150 steps, linear probe at the end. AdamW at
0.0005 x 128/256, untuned for 500 steps.
The part every SSL method's :local shares is configs/presets.py local_pneumoniamnist.
"""
from configs import presets
from configs.base import finalize, get_base_config

BASE_LR, WEIGHT_DECAY, WEIGHT_DECAY_END, BATCH = 0.0005, 0.04, 0.4, 1024  # Sec. 4 / App.
OUT_DIM, HEAD_HIDDEN, BOTTLENECK, HEAD_LAYERS = 65536, 2048, 256, 3  # Sec. 3.1 / App.
STUDENT_TEMP, TEACHER_TEMP, WARMUP_TEACHER_TEMP, CENTER_MOMENTUM, TEACHER_MOMENTUM = 0.1, 0.07, 0.04, 0.9, 0.996
IMAGENET_TRAIN_IMAGES, EPOCHS, WARMUP_EPOCHS, TEACHER_WARMUP_EPOCHS, FREEZE_EPOCHS = 1_281_167, 100, 10, 30, 1


def get_config(variant: str = ""):
  c = get_base_config()
  c.method, c.pairing = "dino", "views"
  c.data.image_size, c.data.channels = 224, 3
  c.model.arch, c.model.vit_variant, c.model.vit_tokens, c.model.dtype = "vit", "S/16", 1, "bfloat16"
  c.model.head_layers, c.model.head_dim = HEAD_LAYERS, BOTTLENECK
  steps_per_epoch = IMAGENET_TRAIN_IMAGES // BATCH
  d = c.dino
  d.out_dim, d.head_hidden = OUT_DIM, HEAD_HIDDEN
  d.student_temp, d.teacher_temp, d.warmup_teacher_temp = STUDENT_TEMP, TEACHER_TEMP, WARMUP_TEACHER_TEMP
  d.warmup_teacher_temp_steps = TEACHER_WARMUP_EPOCHS * steps_per_epoch
  d.center_momentum, d.momentum = CENTER_MOMENTUM, TEACHER_MOMENTUM
  d.freeze_last_layer_steps = FREEZE_EPOCHS * steps_per_epoch
  c.aug.crop, c.aug.crop_mode, c.aug.crop_area_min, c.aug.crop_area_max = True, "inception", 0.4, 1.0
  c.aug.color_strength, c.aug.color_prob, c.aug.grayscale_prob = 0.5, 0.8, 0.2
  c.aug.blur_prob, c.aug.flip, c.aug.rotation_degrees = 0.5, True, 0.0
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "adam", BASE_LR, "linear"
  c.optim.weight_decay, c.optim.schedule = WEIGHT_DECAY, "cosine"
  c.optim.weight_decay_schedule, c.optim.weight_decay_end = "cosine", WEIGHT_DECAY_END
  c.optim.warmup_steps = WARMUP_EPOCHS * steps_per_epoch
  c.train.batch_size, c.train.num_steps = BATCH, EPOCHS * steps_per_epoch
  c.train.log_every, c.train.checkpoint_every = 100, 5000
  if variant == "local":
    presets.local_pneumoniamnist(c)
    c.model.head_dim = 128
    d.out_dim, d.head_hidden = 4096, 512
    d.warmup_teacher_temp_steps, d.freeze_last_layer_steps = 150, 0
  elif variant:
    raise ValueError(f"dino: unknown variant {variant!r} (use '' or 'local')")
  return finalize(c)
