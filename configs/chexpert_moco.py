"""MoCo-CXR pretraining (Sowrirajan et al. 2021): MoCo v2 on CheXpert's training images.

What the paper states (Sec. 3.1-3.2, Table 2):
- MoCo v2 (configs/moco_v2.py) on the entire CheXpert training set, images resized to 224 x 224;
- augmentation: random rotation (10 degrees) and horizontal flip only. Sec. 3.2 names random
  crop and Gaussian blur as able to "change the disease label" and colour jitter / random
  grayscale as meaningless on grey X-rays, and replaces them: so no crop (the whole image is
  resized, `aug.crop=False`), no blur, no colour jitter, no grayscale;
- MoCo's momentum, weight decay and feature dimension kept (m 0.999, weight decay 1e-4, 128-d);
- backbones ResNet-18 (default) and DenseNet-121 (`:densenet121`);
- batch 16 (one GTX 1070, Sec. 3.2);
- pretraining learning rates swept over 1e-2, 1e-3, 1e-4, 1e-5 (Sec. 3.2); the only result of
  the sweep is Table 2 (Sec. 4.3, ResNet-18, Shenzhen, 100% labels, linear model): AUC 0.786 /
  0.908 / 0.944 / 0.939, so 1e-4 is the best. The paper reports no per-backbone best; DenseNet-121
  takes the same 1e-4 here (a reading). The rate is the peak itself (`optim.lr_scaling='none'`),
  SGD with momentum 0.9 as in MoCo;
- initialised from ImageNet weights (Sec. 3.2): `:from_imagenet,weights=DIR`, DIR written by
  `medssl-jax import-weights --format torchvision --arch resnet18 --in resnet18-f37072fd.pth
  --out DIR` (torchvision's supervised ImageNet ResNet-18, what a PyTorch MoCo run starting from
  "ImageNet weights" loads: a reading, the paper names no file); the run takes the trunk and starts
  a fresh MoCo head and queue, under torchvision's settings (`model.downsample_padding='symmetric'`,
  `model.input_norm='imagenet'`). The plain config starts from random weights, which is NOT the
  paper's setting. DenseNet-121 has an ImageNet import too (`medssl-jax import-weights --format
  torchvision --arch densenet121`): start from it with `:densenet121` and
  `--config.train.init_checkpoint=DIR` plus the model settings stored in DIR/config.json (a run
  under other settings is refused, naming them).
Queue 24,576 keys (PROTOCOLS.md: the size MoCo-CXR used; not stated in the paper's text).

Readings where the paper is silent: cosine schedule (it tried step milestones and cosine and does
not say which it kept); length 20 epochs of CheXpert's 223,414 training images at batch 16
(279,268 steps; the paper gives no pretraining length); temperature 0.2 (MoCo v2's); global batch
norm (`moco.bn='global'`): on the paper's single GPU, MoCo's shuffled BN has one group and
reduces to plain batch statistics over the 16 images; grey images repeated to 3 channels.
Reads CheXpert through TFDS's `chexpert` builder with the manual download in `data.path`:

  medssl-jax train --config=configs/chexpert_moco.py --workdir=gs://bucket/mococxr_r18 \
      --config.data.path=/data/tfds
  medssl-jax train --config=configs/chexpert_moco.py:densenet121 ...
  medssl-jax train --config=configs/chexpert_moco.py:from_imagenet,weights=/ckpt/r18_imagenet ...

Evaluation: configs/chexpert_finetune.py:mococxr,fraction=F (lr 3e-5, batch 16, 220/95/41/18
epochs), `--config.mode=linear_eval` for the linear model, `--config.train.init_checkpoint=<workdir>`.
That variant builds ResNet-18; for a DenseNet-121 checkpoint add `--config.model.arch=densenet
--config.model.depth=121`. The Shenzhen TB transfer: configs/shenzhen_transfer.py:fraction=F.
"""
import math

from configs import moco_v2
from configs import presets

QUEUE = 24_576
BATCH = 16
LR_SWEEP = (1e-2, 1e-3, 1e-4, 1e-5)   # Sec. 3.2
BEST_LR = 1e-4                         # Table 2 (Sec. 4.3)
CHEXPERT_TRAIN_IMAGES = 223_414
EPOCHS = 20                            # reading: the paper gives no pretraining length


def get_config(variant: str = ""):
  c = moco_v2.get_config()
  with c.unlocked():
    c.data.source, c.data.tfds_name, c.data.train_split = "tfds", "chexpert", "train"
    c.data.image_size, c.data.channels = 224, 3
    c.model.arch, c.model.depth, c.model.width, c.model.stem = "resnet", 18, 1.0, "imagenet"
    c.model.dtype = "float32"
    c.aug.crop, c.aug.flip, c.aug.rotation_degrees = False, True, 10.0
    c.aug.color_prob, c.aug.grayscale_prob, c.aug.blur_prob = 0.0, 0.0, 0.0
    c.optim.base_lr, c.optim.lr_scaling = BEST_LR, "none"
    c.train.batch_size = BATCH
    c.train.num_steps = math.ceil(EPOCHS * CHEXPERT_TRAIN_IMAGES / BATCH)
    c.train.init_checkpoint = ""  # paper: ImageNet init, which is :from_imagenet
    c.moco.queue_size, c.moco.bn = QUEUE, "global"
    if variant == "densenet121":
      c.model.arch, c.model.depth = "densenet", 121
    elif variant.partition(",")[0] == "from_imagenet":
      opts = presets.parse_options(variant.partition(",")[2], "chexpert_moco", ("weights",))
      presets.apply(c, presets.torchvision_settings("resnet18"))
      c.train.init_checkpoint = opts["weights"]
    elif variant:
      raise ValueError(f"chexpert_moco: unknown variant {variant!r} (use '', 'densenet121' or "
                       f"'from_imagenet,weights=DIR')")
  return c
