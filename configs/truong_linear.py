"""Linear evaluation as in Truong et al. 2021 (How transferable are self-supervised features ...).

Frozen backbone, new linear layer; Adam, initial lr 1e-3, batch 64, 30-50 epochs; images
larger than 224 are resized to 256 then cropped to 224 with flips (no heavy augmentation);
APTOS-style tasks report quadratic Cohen's kappa (in results.json as `kappa`).

  medssl-jax train --config=configs/truong_linear.py --workdir=DIR \
      --config.train.init_checkpoint=PRETRAIN_WORKDIR --config.data.path=manifest.csv

Readings: "resized to 256 then cropped to 224" as the fixed-size random crop
(`aug.crop_mode='fixed'`): a square of 87.5% (224/256) of the short side at a uniformly random
place, resized to 224 (the same square as resizing the short side to 256 first, resampled once);
evaluation takes the centred square of 87.5% of the short side, resized
(`aug.eval_crop_fraction=0.875`, as the SimCLR code evaluates), so test images match the
training crops' scale. (The crop was an Inception crop of exactly 0.875^2 of the area, which
tf.data cannot draw on non-square images and silently replaced by the whole image.)

The training loop (App. B.1): at most 50 epochs (`finetune.num_epochs`), validated once per
epoch (`finetune.eval_every_epochs=1`: ceil(labelled images / 64) steps);
ReduceLROnPlateau x0.1 after 5 epochs without improvement, early stopping after 10, never before
30 epochs (`finetune.min_epochs`); the best validation state is tested. Reading: the quantity
monitored is the validation loss (`finetune.select_metric='loss'`; Sec. 5.2 says "validation loss",
App. B.1 "validation score"), which also picks the tested state. Their validation split is the
data set's own (`finetune.val_split='val'`).

Variants: `:finetune`, all layers trained (their fine-tuning arm), same optimiser and loop;
`:dino_finetune`, their DINO fine-tuning setting (App. B.2: lr 1e-4, batch 16; the ViT encoder's
`model.*` settings come from the imported weights, see docs/guide/weights.md).
"""
from configs.base import finalize, get_base_config


def get_config(variant: str = ""):
  c = get_base_config()
  c.mode = "linear_eval"
  c.data.source = "manifest"
  c.data.image_size, c.data.channels = 224, 3
  c.model.depth, c.model.width, c.model.stem = 50, 1.0, "imagenet"
  c.aug.crop, c.aug.crop_mode, c.aug.fixed_crop_fraction = True, "fixed", 0.875
  c.aug.eval_crop_fraction = 0.875
  c.aug.flip = True
  c.aug.color_prob, c.aug.grayscale_prob, c.aug.blur_prob = 0.0, 0.0, 0.0
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "adam", 1e-3, "none"
  c.optim.weight_decay, c.optim.schedule, c.optim.warmup_steps = 0.0, "constant", 0
  c.train.batch_size = 64
  c.train.log_every, c.train.checkpoint_every = 100, 2000
  c.finetune.task, c.finetune.init = "multiclass", "pretrained"
  c.finetune.num_epochs, c.finetune.min_epochs, c.finetune.eval_every_epochs = 50.0, 30.0, 1.0
  c.finetune.val_split, c.finetune.select_metric = "val", "loss"
  c.finetune.plateau_factor, c.finetune.plateau_patience, c.finetune.early_stop_patience = 0.1, 5, 10
  if variant == "finetune":
    c.mode = "finetune"
  elif variant == "dino_finetune":
    c.mode = "finetune"
    c.optim.base_lr, c.train.batch_size = 1e-4, 16
  elif variant:
    raise ValueError(f"truong_linear: unknown variant {variant!r} (use '', 'finetune' or 'dino_finetune')")
  return finalize(c)
