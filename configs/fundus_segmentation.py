"""Retinal vessel segmentation (Hosseinzadeh Taher et al. 2021, task VFS on DRIVE; App. A and B): a
U-Net over the encoder, `mode='finetune'`, `finetune.task='segmentation'`, 512 px inputs.

What the paper states (../shared/PROTOCOLS.md, section 3): DRIVE's 40 retinal images with manual
vessel masks, the providers' split (20 train, 20 test); images resized to 512 x 512 for the
fundoscopic task; a U-Net with the pretrained ResNet-50 as its encoder, all layers fine-tuned;
Adam (0.9, 0.999), lr 1e-3 with cosine decay for segmentation; early stopping on 10% of train;
augmentation "random rotation, Gaussian noise, color jittering, and horizontal, vertical and
diagonal flips"; metric: mean Dice over the test images.

DRIVE is not in ../shared/data: describe it by a CSV (`--config.data.path=drive.csv`; columns
image, mask, case, split; paths relative to the CSV's folder, or to `data.image_dir` /
`seg.mask_dir`), e.g. `training/images/21_training.tif,training/1st_manual/21_manual1.gif,21,train`.
Pillow reads DRIVE's TIFF images and GIF masks; masks are binarised at 128 (255 = vessel).

Readings where the paper is silent (magnitudes of the augmentation; input_pipeline/augment_seg.py):
- the 10% early-stopping hold-out: 2 of the 20 training images, marked `val` in the CSV's split
  column (the official split has no validation part); the best state on val by Dice is kept, checked
  every `finetune.eval_every` steps;
- rotation U(-30, 30) degrees; horizontal, vertical and diagonal (transpose) flips with p 0.5 each;
  colour jitter with p 0.5 at strength 0.25 (SimCLR's parametrisation: brightness, contrast and
  saturation factors in [0.8, 1.2], hue shift within 0.05 of a turn); Gaussian noise with p 0.5 and
  std U(sqrt(10), sqrt(50)) / 255 (albumentations GaussNoise's default variance range, 8-bit units);
  none of the X-ray set's distortions, crops or brightness / gamma;
- batch 8 (18 training images of 512 px; 8 divides a TPU host's cores), 200 epochs at most; Dice +
  BCE with equal weights.

Variants: scale '' (full: 512 px, ResNet-50 1x), 'small' (CPU: 128 px, ResNet-18 0.25x, decoder
0.25x), 'smoke' (CI: 32 px, ResNet-18 0.125x, 'small' stem, 4 steps).

  medssl-jax train --config=configs/fundus_segmentation.py --config.data.path=/data/DRIVE/drive.csv \\
      --config.train.init_checkpoint=<pretrained workdir> --workdir=runs/drive_vessels
"""
from configs.base import finalize, get_base_config

IMAGE_SIZE = 512  # App. B: fundoscopic inputs 512 x 512
SCALES = {  # image size, depth, width, stem, batch, epochs or steps, U-Net decoder width multiplier
    "full": dict(image_size=IMAGE_SIZE, depth=50, width=1.0, stem="imagenet", batch=8, epochs=200.0, steps=0,
                 decoder=1.0),
    "small": dict(image_size=128, depth=18, width=0.25, stem="imagenet", batch=8, epochs=50.0, steps=0, decoder=0.25),
    "smoke": dict(image_size=32, depth=18, width=0.125, stem="small", batch=8, epochs=0.0, steps=4, decoder=0.125),
}


def get_config(variant: str = ""):
  scale = variant.strip() or "full"
  if scale not in SCALES:
    raise ValueError(f"fundus_segmentation: variant {variant!r}: use one of {sorted(SCALES)}")
  s = SCALES[scale]
  c = get_base_config()
  c.mode = "finetune"
  c.finetune.task, c.finetune.init = "segmentation", "pretrained"
  c.data.source, c.data.pipeline = "seg_manifest", "numpy"
  c.data.path_column, c.data.case_column, c.data.split_column = "image", "case", "split"
  c.seg.mask_column, c.seg.mask_threshold = "mask", 128
  c.data.train_split, c.finetune.val_split, c.data.eval_split = "train", "val", "test"
  c.data.image_size, c.data.channels = s["image_size"], 3
  c.model.arch, c.model.depth, c.model.width, c.model.stem = "resnet", s["depth"], s["width"], s["stem"]
  c.seg.decoder_width = s["decoder"]
  # The fundus augmentation (readings: see the docstring); the X-ray set's ops off.
  c.seg.crop_prob = c.seg.distort_prob = c.seg.intensity_prob = 0.0
  c.seg.rotation_degrees = 30.0
  c.seg.flip_prob = c.seg.vflip_prob = c.seg.transpose_prob = 0.5
  c.seg.color_prob, c.seg.color_strength = 0.5, 0.25
  c.seg.noise_prob, c.seg.noise_std_range = 0.5, (10 ** 0.5 / 255, 50 ** 0.5 / 255)
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling, c.optim.weight_decay = "adam", 1e-3, "none", 0.0
  c.optim.schedule, c.optim.warmup_steps = "cosine", 0
  c.train.batch_size = s["batch"]
  c.train.num_steps = s["steps"] or 1000
  c.finetune.num_epochs = s["epochs"]
  c.finetune.repeat_to_fill_batch = True
  if scale == "smoke":
    c.train.log_every, c.train.checkpoint_every, c.finetune.eval_every = 2, 2, 2
    c.eval.num_replicates = 100
  else:  # every ~10 epochs of 18 training images (batch 8: 2.25 steps an epoch)
    c.train.log_every, c.train.checkpoint_every, c.finetune.eval_every = 10, 100, 25
  return finalize(c)
