"""SwAV pretraining (Caron et al. 2020, "Unsupervised learning of visual features by contrasting
cluster assignments"; method: medssl_jax/methods/swav.py), with multi-crop.

Default (the paper's ResNet-50 ImageNet recipe, Sec. 4.1 and App. A.1, on a data set you name):
ResNet-50; multi-crop 2 x 224 px (area 0.14-1) + 6 x 96 px (area 0.05-0.14); projector
Linear(2048)-BN-ReLU-Linear(128), 3000 prototypes; temperature 0.1; Sinkhorn-Knopp epsilon 0.05,
3 iterations; the prototypes frozen for the first epoch (313 steps); no queue at batch 4096 (the
paper's small-batch runs, 256, add a queue of 3840 embeddings: swav.queue_length, swav.queue_start_step); LARS with
lr 4.8 at batch 4096 (0.3 x batch/256), weight decay 1e-6, 10 epochs of warm-up then cosine decay;
800 epochs of ImageNet-1k's 1,281,167 images (312 full batches an epoch) = 249,600 steps.
Augmentation: SimCLR's colour distortion at strength 1 (p 0.8), grayscale 0.2, blur 0.5, flip, on
every view.

Not matched: the lr warms up from 0 (the paper from 0.3) and decays to 0 (the paper to 0.0048);
LARS leaves biases and BN parameters out of adaptation and weight decay (the reference's LARC
adapts and decays all); the reference's mixed precision is our bfloat16.

  medssl-jax train --config=configs/swav.py --workdir=gs://bucket/swav \
      --config.data.source=manifest --config.data.path=/data/train.csv

`:local`: PneumoniaMNIST (../shared/data/pneumoniamnist.npz, 28 px, grey) with the model, batch,
steps, warm-up and logging of configs/chexpert_simclr.py:local (ResNet-18 0.25x small stem, batch
128, 500 steps, rotation up to 45 degrees, no blur; configs/presets.py local_pneumoniamnist), 2 x
28 px (area 0.14-1) + 4 x 12 px local views, projector 512 -> 128, 100 prototypes (the paper's
ratio of rows to prototypes, 4096 to 3000, about 1.4: here 128 a batch), the prototypes frozen for
the first epoch (36 steps), a queue of 1,024 rows (8 batches: batch 128 is small) from the end of
that epoch, the monitor every 100 steps, linear probe at the end. LARS at 0.3 x 128/256, untuned
for 500 steps. Seen on a 2-core CPU (`medssl-jax train --config=configs/swav.py:local`, 2026-12-08):
the loss reaches log 100 = 4.605, uniform predictions, by step ~100 and stays there, while the
monitor's kNN top-1 on 'val' goes from 0.824 (step 0) to 0.866 (step 100) and then holds; on 28 px
views this heavily cropped, SwAV gains little (tests/methods/test_swav_method.py shows it learning on easy
views). Tune before comparing it with the other methods.
"""
from configs import presets
from configs.base import finalize, get_base_config

BASE_LR, WEIGHT_DECAY, BATCH = 0.3, 1e-6, 4096                       # 4.8 at 4096; App. A.1
PROTOTYPES, HIDDEN, FEATURES, TEMPERATURE, EPSILON, ITERATIONS = 3000, 2048, 128, 0.1, 0.05, 3
GLOBAL_AREA, LOCAL_CROPS, LOCAL_SIZE, LOCAL_AREA = (0.14, 1.0), 6, 96, (0.05, 0.14)  # Sec. 3.2 / 4.1
IMAGENET_TRAIN_IMAGES, EPOCHS, WARMUP_EPOCHS, FREEZE_STEPS = 1_281_167, 800, 10, 313
PNEUMONIAMNIST_TRAIN = 4708  # training images of ../shared/data/pneumoniamnist.npz


def get_config(variant: str = ""):
  c = get_base_config()
  c.method, c.pairing = "swav", "views"
  c.data.image_size, c.data.channels = 224, 3
  c.model.depth, c.model.width, c.model.dtype = 50, 1.0, "bfloat16"
  c.model.head_layers, c.model.head_dim = 2, FEATURES
  s = c.swav
  s.num_prototypes, s.projector_hidden, s.temperature = PROTOTYPES, HIDDEN, TEMPERATURE
  s.epsilon, s.sinkhorn_iterations, s.freeze_prototypes_steps = EPSILON, ITERATIONS, FREEZE_STEPS
  c.aug.crop, c.aug.crop_mode = True, "inception"
  c.aug.crop_area_min, c.aug.crop_area_max = GLOBAL_AREA
  c.aug.local_crops, c.aug.local_crop_size = LOCAL_CROPS, LOCAL_SIZE
  c.aug.local_crop_area_min, c.aug.local_crop_area_max = LOCAL_AREA
  c.aug.color_strength, c.aug.color_prob, c.aug.grayscale_prob = 1.0, 0.8, 0.2
  c.aug.blur_prob, c.aug.flip, c.aug.rotation_degrees = 0.5, True, 0.0
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "lars", BASE_LR, "linear"
  c.optim.weight_decay, c.optim.schedule = WEIGHT_DECAY, "cosine"
  steps_per_epoch = IMAGENET_TRAIN_IMAGES // BATCH
  c.optim.warmup_steps = WARMUP_EPOCHS * steps_per_epoch
  c.train.batch_size, c.train.num_steps = BATCH, EPOCHS * steps_per_epoch
  c.train.log_every, c.train.checkpoint_every = 100, 5000
  if variant == "local":
    presets.local_pneumoniamnist(c)
    c.aug.crop_area_min = GLOBAL_AREA[0]
    c.aug.local_crops, c.aug.local_crop_size = 4, 12
    c.model.head_dim, s.projector_hidden, s.num_prototypes = 128, 512, 100
    s.freeze_prototypes_steps = PNEUMONIAMNIST_TRAIN // c.train.batch_size
    s.queue_length, s.queue_start_step = 8 * c.train.batch_size, s.freeze_prototypes_steps
  elif variant:
    raise ValueError(f"swav: unknown variant {variant!r} (use '' or 'local')")
  return finalize(c)
