"""SimCLR pretraining on a folder of your own images (JPEG, PNG, DICOM; no labels needed), then
linear evaluation of the encoder on a labelled CSV manifest.

  medssl-jax train --config=configs/folder_simclr.py --config.data.path=/data/xrays --workdir=workdirs/folder_simclr
  medssl-jax train --config=configs/folder_simclr.py:linear --config.data.path=/data/labelled.csv \
      --config.train.init_checkpoint=workdirs/folder_simclr --workdir=workdirs/folder_linear

The folder (data.source='folder', input_pipeline/sources/folder.py) is scanned recursively; each
image is its own case unless `data.case_rule` says otherwise (e.g. 'parent': one folder per
patient, 'dicom': the PatientID tag), and `data.val_fraction` / `data.test_fraction` hold out cases
(none by default: every image pretrains). A large DICOM folder trains faster from records written
once: `medssl-jax prepare-data --config=configs/folder_simclr.py --config.data.path=/data/xrays
--out=/data/xrays_records --splits=train`, then `--config.data.source=records
--config.data.path=/data/xrays_records`.

Full scale (default): ResNet-50 (1x) at 224 px, global batch 256, LARS with lr 0.3 (x batch/256,
the SimCLR reference's linear rule), temperature 0.1, weight decay 1e-6, 20,000 steps with 1,000
of warm-up, 2-layer projection head to 128-d; SimCLR's augmentation with colour strength 0.5 (as
the medical configs of Azizi et al. 2021: configs/derm_simclr.py, configs/chexpert_simclr.py). No
paper stands behind these numbers for an arbitrary folder: they are the reference's defaults at a
single-accelerator batch; set train.num_steps for your folder's size (an epoch is N / 256 steps).

`:linear` is the linear evaluation (frozen encoder, new linear head) of a `train.init_checkpoint`
pretrained with the default variant, on a manifest CSV (columns path, case_id, label, split;
splits 'train', 'val' and 'test', or `--config.finetune.val_split=''` without a 'val'): the same
model, SGD lr 0.1, no colour or blur augmentation. `:local` and `:local_linear` are the same pair
small enough for a CPU: ResNet-18 (0.25x, small stem) at 32 px, batch 32, LARS base lr 0.075 under
the square-root rule (SimCLR's pairing for small batches, as configs/demo.py).
"""
from configs.base import finalize, get_base_config

VARIANTS = ("", "linear", "local", "local_linear")


def get_config(variant: str = ""):
  if variant not in VARIANTS:
    raise ValueError(f"folder_simclr: unknown variant {variant!r} (use one of {', '.join(map(repr, VARIANTS))})")
  c = get_base_config()
  c.method = "simclr"
  c.data.source = "folder"
  c.data.path = ""  # the folder: --config.data.path=...
  c.data.image_size, c.data.channels = 224, 3  # grey images are repeated to 3 channels
  c.model.depth, c.model.width, c.model.stem = 50, 1.0, "imagenet"
  c.model.head_layers, c.model.head_dim = 2, 128
  c.model.dtype = "bfloat16"
  c.aug.color_strength, c.aug.color_prob, c.aug.grayscale_prob = 0.5, 0.8, 0.2
  c.aug.blur_prob, c.aug.flip = 0.5, True
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "lars", 0.3, "linear"
  c.optim.weight_decay, c.optim.warmup_steps = 1e-6, 1000
  c.train.batch_size, c.train.num_steps, c.simclr.temperature = 256, 20_000, 0.1
  c.train.log_every, c.train.checkpoint_every = 100, 2000
  if variant.startswith("local"):
    c.data.image_size = 32
    c.model.depth, c.model.width, c.model.stem, c.model.dtype = 18, 0.25, "small", "float32"
    c.model.head_dim = 64
    c.aug.crop_area_min, c.aug.blur_prob = 0.2, 0.0  # small images: milder crops, no blur (configs/demo.py)
    c.optim.base_lr, c.optim.lr_scaling, c.optim.warmup_steps = 0.075, "sqrt", 10
    c.train.batch_size, c.train.num_steps = 32, 100
    c.train.log_every, c.train.checkpoint_every = 10, 50
  if variant.endswith("linear"):
    c.mode = "linear_eval"
    c.data.source = "manifest"
    c.data.path = ""  # the labelled CSV: --config.data.path=...
    c.finetune.task, c.finetune.init = "multiclass", "pretrained"
    c.aug.color_prob, c.aug.blur_prob, c.aug.grayscale_prob = 0.0, 0.0, 0.0
    c.optim.name, c.optim.lr_scaling, c.optim.base_lr = "sgd", "none", 0.1
    c.optim.momentum, c.optim.weight_decay, c.optim.warmup_steps = 0.9, 0.0, 0
    c.train.num_steps = 300 if variant == "local_linear" else 5000
  return finalize(c)
