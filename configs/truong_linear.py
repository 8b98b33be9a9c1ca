"""Linear evaluation as in Truong et al. 2021 (How transferable are self-supervised features ...).

Frozen backbone, new linear layer; Adam, initial lr 1e-3, batch 64, 30-50 epochs; images
larger than 224 are resized to 256 then cropped to 224 with flips (no heavy augmentation);
APTOS-style tasks report quadratic Cohen's kappa (in results.json as `kappa`).

  python -m medssl_jax.main --config=configs/truong_linear.py --workdir=DIR \
      --config.eval.checkpoint=PRETRAIN_WORKDIR --config.data.path=manifest.csv \
      --config.train.num_steps=<epochs * images / 64>

Readings: "resized to 256 then cropped to 224" as the fixed-size random crop
(`aug.crop_mode='fixed'`): a square of 87.5% (224/256) of the short side at a uniformly random
place, resized to 224 (the same square as resizing the short side to 256 first, resampled once);
evaluation takes the centred square of 87.5% of the short side, resized
(`aug.eval_crop_fraction=0.875`, as the SimCLR code evaluates), so test images match the
training crops' scale. (The crop was an Inception crop of exactly 0.875^2 of the area, which
tf.data cannot draw on non-square images and silently replaced by the whole image.)

Variant `:finetune`: all layers trained (their fine-tuning arm), same optimiser.
Difference from the paper: they reduce the learning rate by 10x when the validation loss stalls
for 5 epochs (ReduceLROnPlateau) and stop early after 10; this config keeps the learning rate
constant for a fixed number of steps (select the number of steps on validation with
medssl-jax sweep + medssl-jax select-best).
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
  c.train.batch_size, c.train.num_steps = 64, 20_000
  c.train.log_every, c.train.checkpoint_every = 100, 2000
  c.eval.task, c.eval.init = "multiclass", "pretrained"
  if variant == "finetune":
    c.mode = "finetune"
  elif variant:
    raise ValueError(f"truong_linear: unknown variant {variant!r} (use '' or 'finetune')")
  return finalize(c)
