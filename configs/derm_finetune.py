"""Fine-tuning on dermatology (Azizi et al. 2021, Sec. 4.3; multi-class, 26 conditions + 'Other').

Full scale: ResNet-50 (1x) at 448 px from a pretraining workdir, SGD momentum 0.9, batch 256,
30,000 steps; augmentation: random colour, crop with resize, blur, rotation, flips. Learning
rate and weight decay come from the paper's grid (medssl-jax sweep --preset azizi_finetune:
7 log-spaced lr in [10^-3.5, 10^-0.5] x weight decay {1e-5, 1e-4, 1e-3, 0}); the defaults here
are the grid's middle. Metrics: top-1/top-3 accuracy, top-k sensitivity over the 26 conditions
(the class named 'Other' left out), AUC, each with a 1,000-replicate bootstrap 95% interval,
with the predictions of a case's images averaged (case level).

`eval.exclude_classes=('Other',)` names the class: it is looked up in the manifest's label
strings (sorted, so 'Other' is not necessarily index 26), and a name the data does not have is
an error listing the classes it has. A manifest with integer labels has no class names: give
the index instead, e.g. `--config.eval.exclude_classes='(26,)'` (checked to exist).

  medssl-jax train --config=configs/derm_finetune.py --workdir=DIR \
      --config.train.init_checkpoint=PRETRAIN_WORKDIR --config.data.path=/data/derm/manifest.csv

Variants: `:imagenet,weights=DIR[,arch=A]` (the paper's supervised ImageNet baseline, Sec. 4.3:
fine-tuning starts from supervised ImageNet weights imported with `import-weights --format
torchvision --arch A` (default resnet50) into DIR; `train.init_checkpoint=DIR` and torchvision's
settings. Reading: the paper's "publicly available ResNet models" are TF's; torchvision's
ResNet-50 stands in for them), `:linear` (linear evaluation: frozen encoder, new linear head), `:local` and
`:local_linear` (synthetic colour data, small ResNet, a few hundred steps on a CPU).
Readings: rotation up to 20 degrees and colour strength 0.5 (the paper names the ops, not their
strengths); lr is used as given (no batch scaling); cosine decay without warm-up.
"""
from configs.base import finalize, get_base_config
from configs import presets


def get_config(variant: str = ""):
  c = get_base_config()
  c.mode = "finetune"
  c.data.source = "manifest"
  c.data.image_size, c.data.channels = 448, 3
  c.data.eval_split = "test"
  c.model.depth, c.model.width, c.model.stem = 50, 1.0, "imagenet"
  c.model.dtype = "bfloat16"
  c.aug.crop, c.aug.crop_area_min = True, 0.08
  c.aug.color_strength, c.aug.color_prob, c.aug.grayscale_prob = 0.5, 0.8, 0.0
  c.aug.blur_prob, c.aug.flip, c.aug.rotation_degrees = 0.5, True, 20.0
  c.optim.name, c.optim.lr_scaling = "sgd", "none"
  c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_steps = 10 ** -2.0, 1e-4, 0
  c.optim.momentum = 0.9
  c.train.batch_size, c.train.num_steps = 256, 30_000
  c.train.log_every, c.train.checkpoint_every = 100, 5000
  c.finetune.task, c.finetune.init = "multiclass", "pretrained"
  c.eval.case_level = True
  c.eval.exclude_classes = ("Other",)
  if variant in ("linear", "local_linear"):
    c.mode = "linear_eval"
    c.aug.color_prob, c.aug.blur_prob, c.aug.rotation_degrees = 0.0, 0.0, 0.0
  if variant in ("local", "local_linear"):
    c.data.source = "synthetic"
    c.data.image_size = c.data.synthetic.image_size = 32
    c.model.depth, c.model.width, c.model.stem, c.model.dtype = 18, 0.25, "small", "float32"
    c.aug.crop_area_min, c.aug.blur_prob = 0.3, 0.0
    c.optim.base_lr = 0.1 if variant == "local_linear" else 0.05
    c.train.batch_size, c.train.num_steps = 64, 300
    c.train.log_every, c.train.checkpoint_every = 50, 300
    c.eval.exclude_classes = ()
    c.eval.case_level = False
    c.finetune.init = "random"
  elif variant.partition(",")[0] == "imagenet":
    opts = presets.parse_options(variant.partition(",")[2], "derm_finetune", ("weights", "arch"))
    presets.apply(c, presets.imagenet_settings(opts.get("arch", "resnet50")))
    c.finetune.init, c.train.init_checkpoint = "pretrained", opts["weights"]
  elif variant not in ("", "linear"):
    raise ValueError(f"derm_finetune: unknown variant {variant!r}")
  return finalize(c)
