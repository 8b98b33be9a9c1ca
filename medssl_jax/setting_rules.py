"""The allowed values of the settings (medssl_jax/settings.py), checked before any work.

One table, `RULES`: key -> what it takes (a range, or one of some values). `check(config)` refuses
the first setting outside its rule in one line naming the key, its value and what it takes, and
then the relations between keys (`RELATIONS`). Loading a config never imports JAX: this module is
plain Python, like settings.py. Rules that need the data (a batch larger than the data set) or the
method registry stay with the code that knows them; this table holds what a config alone decides.
"""
import dataclasses
import math

from medssl_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Range:
  """A number in [lo, hi] (`lo_open` / `hi_open`: the bound itself excluded); `integer`: whole."""
  lo: float = -math.inf
  hi: float = math.inf
  lo_open: bool = False
  hi_open: bool = False
  integer: bool = False

  def ok(self, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
      return False
    if self.integer and value != int(value):
      return False
    above = value > self.lo if self.lo_open else value >= self.lo
    below = value < self.hi if self.hi_open else value <= self.hi
    return above and below

  def describe(self) -> str:
    kind = "an integer" if self.integer else "a number"
    parts = []
    if self.lo > -math.inf:
      parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
    if self.hi < math.inf:
      parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
    if len(parts) == 2 and not self.integer:
      left = "(" if self.lo_open else "["
      right = ")" if self.hi_open else "]"
      return f"{kind} in {left}{self.lo:g}, {self.hi:g}{right}"
    return f"{kind} {' and '.join(parts)}" if parts else kind


@dataclasses.dataclass(frozen=True)
class OneOf:
  values: tuple

  def ok(self, value) -> bool:
    return value in self.values

  def describe(self) -> str:
    return "one of " + ", ".join(repr(v) for v in self.values)


POSITIVE_INT = Range(1, integer=True)
COUNT = Range(0, integer=True)                 # 0 allowed (off / none)
PROB = Range(0.0, 1.0)
POSITIVE = Range(0.0, lo_open=True)
NON_NEGATIVE = Range(0.0)
FRACTION = Range(0.0, 1.0, lo_open=True)       # (0, 1]

RULES = {
    "mode": OneOf(("pretrain", "finetune", "linear_eval", "dvme")),
    "pairing": OneOf(("views", "case")),
    # data
    "data.image_size": POSITIVE_INT,
    "data.channels": OneOf((1, 3)),
    "data.max_bag_size": COUNT,
    "data.pipeline": OneOf(("auto", "tf", "numpy", "grain")),
    "data.host_workers": COUNT,
    "data.val_fraction": Range(0.0, 1.0, hi_open=True),
    "data.test_fraction": Range(0.0, 1.0, hi_open=True),
    "data.nih_target": OneOf(("binary", "multilabel")),
    "data.nih_split": OneOf(("patient", "source")),
    "data.nih_train_patients": FRACTION,
    # augmentation
    "aug.crop_mode": OneOf(("inception", "fixed")),
    "aug.crop_area_min": FRACTION,
    "aug.crop_area_max": FRACTION,
    "aug.crop_aspect_min": POSITIVE,
    "aug.crop_aspect_max": POSITIVE,
    "aug.fixed_crop_fraction": FRACTION,
    "aug.eval_crop_fraction": FRACTION,
    "aug.local_crops": COUNT,
    "aug.local_crop_size": POSITIVE_INT,
    "aug.local_crop_area_min": FRACTION,
    "aug.local_crop_area_max": FRACTION,
    "aug.color_prob": PROB,
    "aug.grayscale_prob": PROB,
    "aug.blur_prob": PROB,
    "aug.color_strength": NON_NEGATIVE,
    "aug.rotation_degrees": Range(0.0, 180.0),
    "aug.additive_brightness": NON_NEGATIVE,
    "aug.std_contrast": NON_NEGATIVE,
    # model
    "model.arch": OneOf(("resnet", "densenet", "vit", "bit")),
    "model.width": POSITIVE,
    "model.bottleneck_width": POSITIVE,
    "model.head_dim": POSITIVE_INT,
    "model.head_layers": POSITIVE_INT,
    "model.bn_momentum": Range(0.0, 1.0, hi_open=True),
    "model.dtype": OneOf(("float32", "bfloat16")),
    "model.input_norm": OneOf(("none", "imagenet", "inception")),  # 'inception': ViTs and BiT (models/vit.py, bit.py)
    "model.downsample_padding": OneOf(("same", "symmetric", "tf_fixed")),
    "model.stem": OneOf(("imagenet", "small")),
    # optimiser
    "optim.name": OneOf(("lars", "sgd", "adam")),
    "optim.schedule": OneOf(("cosine", "constant", "piecewise")),
    "optim.lr_scaling": OneOf(("linear", "sqrt", "none")),
    "optim.base_lr": POSITIVE,
    "optim.weight_decay": NON_NEGATIVE,
    "optim.weight_decay_schedule": OneOf(("constant", "cosine")),
    "optim.weight_decay_end": NON_NEGATIVE,
    "optim.momentum": Range(0.0, 1.0, hi_open=True),
    "optim.warmup_steps": COUNT,
    "optim.decay_factor": Range(0.0, 1.0, lo_open=True),
    "optim.trust_coefficient": POSITIVE,
    # training loop
    "train.batch_size": POSITIVE_INT,
    "train.num_steps": POSITIVE_INT,
    "train.log_every": POSITIVE_INT,
    "train.checkpoint_every": POSITIVE_INT,
    "train.keep_checkpoints": POSITIVE_INT,
    "train.prefetch": POSITIVE_INT,
    # fine-tuning and linear evaluation
    "finetune.task": OneOf(("multiclass", "multilabel", "segmentation")),
    "finetune.init": OneOf(("pretrained", "supervised", "random")),
    "finetune.feature_norm": OneOf(("none", "batchnorm")),
    "finetune.head_init": OneOf(("auto", "zeros", "lecun_normal")),
    "finetune.uncertain_policy": OneOf(("ignore", "ones", "zeros")),
    "finetune.label_fraction": FRACTION,
    "finetune.num_epochs": NON_NEGATIVE,
    "finetune.eval_every": COUNT,
    "finetune.eval_every_epochs": NON_NEGATIVE,
    "finetune.min_epochs": NON_NEGATIVE,
    "finetune.plateau_factor": Range(0.0, 1.0, hi_open=True),
    "finetune.plateau_patience": POSITIVE_INT,
    "finetune.early_stop_patience": COUNT,
    "finetune.train_size": COUNT,
    "finetune.fold": COUNT,
    # test metrics
    "eval.num_replicates": POSITIVE_INT,
    "eval.min_positives": COUNT,
    # linear probe after pretraining
    "probe.max_train_examples": POSITIVE_INT,
    "probe.batch_size": POSITIVE_INT,
    # monitor of pretraining (runs/monitor.py; which metric keep_best names is checked there)
    "monitor.every": COUNT,
    "monitor.knn_k": POSITIVE_INT,
    "monitor.knn_temperature": POSITIVE,
    "monitor.probe_steps": POSITIVE_INT,
    "monitor.probe_lr": POSITIVE,
    "monitor.max_train_examples": Range(2, integer=True),
    "monitor.max_eval_examples": POSITIVE_INT,
    "monitor.batch_size": POSITIVE_INT,
    # methods
    "simclr.temperature": POSITIVE,
    "moco.temperature": POSITIVE,
    "moco.queue_size": POSITIVE_INT,
    "moco.momentum": PROB,
    "moco.bn": OneOf(("shuffle", "global")),
    "moco.bn_groups": POSITIVE_INT,
    # DVME
    "dvme.num_heads": POSITIVE_INT,
    "dvme.proj_dim": POSITIVE_INT,
    "dvme.hidden_dim": POSITIVE_INT,
    "dvme.dropout_rate": Range(0.0, 1.0, hi_open=True),
    "dvme.lr": POSITIVE,
    "dvme.batch_size": POSITIVE_INT,
    "dvme.epochs": POSITIVE_INT,
    "dvme.tokens": OneOf(("source", "scalar")),
    "dvme.block": OneOf(("vit", "attention")),
    "dvme.tsne_max_points": COUNT,
    # segmentation
    "seg.threshold": Range(0.0, 1.0, lo_open=True, hi_open=True),
    "seg.mask_threshold": Range(1, 255, integer=True),
    "seg.test_fraction": Range(0.0, 1.0, hi_open=True),
    "seg.val_fraction": Range(0.0, 1.0, hi_open=True),
    "seg.dice_weight": NON_NEGATIVE,
    "seg.bce_weight": NON_NEGATIVE,
    "seg.decoder_width": POSITIVE,
    "seg.overlay_images": COUNT,
    "seg.flip_prob": PROB,
    "seg.vflip_prob": PROB,
    "seg.transpose_prob": PROB,
    "seg.color_prob": PROB,
    "seg.color_strength": NON_NEGATIVE,
    "seg.noise_prob": PROB,
}


def _get(config, key: str):
  node = config
  for part in key.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return _MISSING
    node = node[part]
  return node


_MISSING = object()

# Relations between keys: (keys, holds(values), what it takes).
RELATIONS = (
    (("aug.crop_area_min", "aug.crop_area_max"), lambda lo, hi: lo <= hi, "aug.crop_area_min <= aug.crop_area_max"),
    (("aug.local_crop_area_min", "aug.local_crop_area_max"), lambda lo, hi: lo <= hi,
     "aug.local_crop_area_min <= aug.local_crop_area_max"),
    (("aug.crop_aspect_min", "aug.crop_aspect_max"), lambda lo, hi: lo <= hi,
     "aug.crop_aspect_min <= aug.crop_aspect_max"),
    (("data.val_fraction", "data.test_fraction"), lambda v, t: v + t < 1.0,
     "data.val_fraction + data.test_fraction < 1 (some images must be left to train on)"),
    (("seg.val_fraction", "seg.test_fraction"), lambda v, t: v + t < 1.0,
     "seg.val_fraction + seg.test_fraction < 1 (some images must be left to train on)"),
    (("train.profile_steps",), lambda p: (len(p) == 2 and all(isinstance(s, int) and s >= 0 for s in p)
                                          and (p[0] == p[1] == 0 or 0 < p[0] <= p[1])),
     "train.profile_steps = (N, M) with 0 < N <= M, or (0, 0) for no trace"),
)


class SettingError(UserError):
  """A setting outside its rule: one line, exit 2."""


def check(config) -> None:
  """SettingError (one line) for the first key outside its RULES entry, then the first broken
  relation. Keys a config does not have (an older saved one) are skipped."""
  for key, rule in RULES.items():
    value = _get(config, key)
    if value is _MISSING:
      continue
    if not rule.ok(value):
      raise SettingError(f"{key}={value!r}: expected {rule.describe()}; set --config.{key} to such a value")
  for keys, holds, says in RELATIONS:
    values = [_get(config, k) for k in keys]
    if any(v is _MISSING for v in values):
      continue
    if not holds(*values):
      shown = ", ".join(f"{k}={v!r}" for k, v in zip(keys, values))
      raise SettingError(f"{shown}: expected {says}")
