"""What the configs' ImageNet variants set: runs that start from weights brought in by
`medssl-jax import-weights` (derm_simclr / chexpert_simclr `:from_imagenet`, chexpert_moco
`:from_imagenet`, derm_finetune / chexpert_finetune `:imagenet`).

A variant names the imported directory in its options, `weights=DIR`, and the architecture of the
file it came from, `arch=A` (the `--arch` given to import-weights). Without `weights=` the variant
is refused: starting from random weights instead would silently be another experiment. The
`model.*` settings are those the format implies (the same ones import-weights stored in
DIR/config.json, which `weights.check_settings` enforces when the run loads DIR).

Also what the SSL method configs' `:local` variants share (byol, simsiam, barlow_twins, vicreg,
dino): `local_pneumoniamnist`.
"""
import os

from medssl_jax.errors import UserError

_SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
LOCAL_WARMUP_STEPS = 50  # 10% of :local's 500 steps (as configs/chexpert_simclr.py:local)


def local_pneumoniamnist(config, warmup_steps: int = LOCAL_WARMUP_STEPS) -> None:
  """The common part of an SSL method config's `:local` variant: PneumoniaMNIST
  (../shared/data/pneumoniamnist.npz, 28 px, grey) with the model, batch, steps, crops, warm-up and
  logging of configs/chexpert_simclr.py:local (ResNet-18 0.25x small stem, float32; crop area 0.2-1;
  no grayscale, no blur, rotation up to 45 degrees; batch 128, 500 steps, logs every 25, checkpoints
  every 250), `warmup_steps` of warm-up, the kNN and linear-head monitor every 100 steps on the 'val'
  split (TensorBoard knn/*, probe/*), linear probe at the end. The caller then sets what is its own
  (head and projector widths, ...)."""
  c = config
  c.data.source = "npz"
  c.data.path = os.path.normpath(os.path.join(_SHARED, "pneumoniamnist.npz"))
  c.data.image_size, c.data.channels = 28, 1
  c.model.arch, c.model.depth, c.model.width, c.model.stem, c.model.dtype = "resnet", 18, 0.25, "small", "float32"
  c.aug.crop_area_min = 0.2
  c.aug.grayscale_prob, c.aug.blur_prob, c.aug.rotation_degrees = 0.0, 0.0, 45.0
  c.optim.warmup_steps = warmup_steps
  c.train.batch_size, c.train.num_steps = 128, 500
  c.train.log_every, c.train.checkpoint_every = 25, 250
  c.monitor.every = 100
  c.probe.enabled = True


def parse_options(options: str, config_name: str, allowed: tuple) -> dict:
  """{'weights': DIR, 'arch': A, ...} of 'weights=DIR,arch=A' (comma-separated key=value)."""
  out = {}
  for item in filter(None, options.split(",")):
    key, eq, value = item.partition("=")
    if not eq or key not in allowed:
      raise UserError(f"{config_name}: unknown variant option {item!r}; expected {', '.join(k + '=...' for k in allowed)}")
    out[key] = value
  if not out.get("weights"):
    raise UserError(f"{config_name}: this variant starts from imported ImageNet weights: name their directory, "
                    f"e.g. ':{'from_imagenet' if 'simclr' in config_name or 'moco' in config_name else 'imagenet'},"
                    f"weights=/path/to/imported' (written by medssl-jax import-weights; docs/guide/weights.md)")
  return out


def simclr_tf_settings(arch: str) -> dict:
  """Model settings of an imported google-research/simclr checkpoint `arch`, with the projection
  head a run can continue: SimCLR v2 files (`r50_1x_sk0`, ...) hold a 3-layer head (the v2
  reference's), SimCLR v1 files (`resnet50_4x`, ...) none, so the run keeps a fresh 2-layer head
  (Azizi et al.: "two fully connected layers" to 128-d)."""
  from medssl_jax.weights import simclr_tf  # imports flax: only for a variant that starts from imported weights
  s = simclr_tf.model_settings(arch)
  s["head_layers"] = 3 if arch.endswith("_sk0") else 2
  s["head_dim"] = 128
  return s


def torchvision_settings(arch: str) -> dict:
  from medssl_jax.weights import torchvision as tv  # imports flax: only for a variant with imported weights
  return tv.model_settings(arch)


def imagenet_settings(arch: str) -> dict:
  """The model settings of supervised ImageNet weights `arch`: a BiT name (`BiT-M-R101x3`, `R50x1`:
  imported with --format bit, model.arch='bit') or a torchvision model name."""
  from medssl_jax.weights import bit  # imports flax: only for a variant with imported weights
  if bit.ARCH.match(arch):
    return bit.model_settings(arch)
  return torchvision_settings(arch)


def apply(config, settings: dict) -> None:
  for k, v in settings.items():
    setattr(config.model, k, v)
