"""`medssl-jax import-weights`: another library's weights -> a checkpoint every mode reads.

  medssl-jax import-weights --format torchvision --arch resnet50 --in resnet50.pth --out DIR

writes DIR as a run's workdir (`medssl_jax/weights/__init__.py`): fine-tune or linear-evaluate
from it with `--config.finetune.init=pretrained --config.train.init_checkpoint=DIR`, or continue
pretraining with `--config.train.init_checkpoint=DIR` (the projection head starts fresh), under
the `model.*` settings it prints (also in DIR/config.json; a run under other settings is
refused). Formats: torchvision (ResNet-18/34/50/101/152, wide_resnet50_2/101_2, DenseNet-121/169/201; `.pth`
state_dict or `.safetensors`). Needs `pip install medssl-jax[torch]` for `.pth` files.
timm (ResNets; ViT-Ti/S/B 16, S/B 8) and dino (the official ViT and ResNet-50 backbones) are in
medssl_jax/weights/timm.py and dino.py; a ViT's data.image_size is stored in DIR/config.json.
moco_v2 (facebookresearch/moco and MoCo-CXR checkpoints: query encoder + MLP head), swav (the
official ResNet-50 layout: trunk) and simclr_tf (google-research/simclr TF1 checkpoints, v1 and
v2: trunk + projection head; --in is the checkpoint prefix or its directory, --arch e.g.
r50_1x_sk0 or resnet50_4x) are in medssl_jax/weights/moco_v2.py, swav.py and simclr_tf.py. bit (the
released BiT-S / BiT-M `.npz` files, --arch e.g. BiT-M-R101x3: model.arch='bit') is in weights/bit.py.
"""
import os

from absl import flags

from medssl_jax import weights
from medssl_jax.commands import common
from medssl_jax.commands.features import file_sha256
from medssl_jax.errors import UserError

FLAGS = flags.FLAGS

FORMATS = ("torchvision",)
# Formats whose module has `load(path, arch) -> (params, batch_stats, model settings)` (official SSL layouts).
LOADERS = {"moco_v2": "medssl_jax.weights.moco_v2", "swav": "medssl_jax.weights.swav",
           "simclr_tf": "medssl_jax.weights.simclr_tf"}
# timm (ResNets, ViT-Ti/S/B) and the official DINO backbones (ViT-S/B 16 and 8, ResNet-50); their
# modules also have `data_settings(params)`: a ViT's data.image_size, read off its position embeddings.
LOADERS.update({"timm": "medssl_jax.weights.timm", "dino": "medssl_jax.weights.dino"})
# The released BiT checkpoints (.npz; no torch needed): model.arch='bit'.
LOADERS["bit"] = "medssl_jax.weights.bit"
FORMATS += tuple(LOADERS)


def import_weights(fmt: str, arch: str, in_path: str, out_dir: str) -> dict:
  """Converts `in_path` and writes `out_dir`; returns the model settings the weights need."""
  if fmt not in FORMATS:
    raise UserError(f"--format={fmt!r}: expected one of {FORMATS}")
  digest_file = in_path
  if fmt in LOADERS:
    import importlib
    fmt_lib = importlib.import_module(LOADERS[fmt])
    params, batch_stats, settings = fmt_lib.load(in_path, arch)
    digest_file = fmt_lib.digest_file(in_path) if hasattr(fmt_lib, "digest_file") else in_path
  else:
    from medssl_jax.weights import torchvision as fmt_lib
    settings = fmt_lib.model_settings(arch)  # refuses an unknown arch before reading the file
    params, batch_stats = fmt_lib.from_state_dict(weights.load_tensors(in_path), arch)
  data_settings = fmt_lib.data_settings(params) if hasattr(fmt_lib, "data_settings") else None
  weights.write_checkpoint(out_dir, params, batch_stats, settings,
                           {"format": fmt, "arch": arch, "file": os.path.abspath(in_path), "sha256": file_sha256(digest_file),
                            "classifier_outputs": int(params["classifier"]["bias"].shape[0]) if "classifier" in params else 0},
                           data_settings=data_settings)
  return settings


def _define_flags() -> None:
  flags.DEFINE_enum("format", None, FORMATS, "Layout of the weights file.")
  flags.DEFINE_string("arch", None, "e.g. resnet50 (torchvision's model name; also for moco_v2, swav); "
                      "simclr_tf: r50_1x_sk0, resnet50_4x, ...; bit: BiT-M-R101x3, ...")
  flags.DEFINE_string("in", None, ".pth state_dict or .safetensors file (simclr_tf: TF checkpoint prefix or directory; bit: .npz).")
  flags.DEFINE_string("out", None, "New checkpoint directory.")
  flags.mark_flags_as_required(["format", "arch", "in", "out"])


def main(argv) -> int:
  del argv  # common.run refuses positional arguments
  fmt, arch, in_path, out = FLAGS.format, FLAGS.arch, FLAGS["in"].value, FLAGS.out
  settings = import_weights(fmt, arch, in_path, out)
  model_flags = " ".join(f"--config.model.{k}={v}" for k, v in settings.items())
  if settings.get("arch") == "vit":  # position embeddings fix the image size
    model_flags += f" --config.data.image_size={weights.stored_config(out)['data']['image_size']}"
  print(f"wrote {os.path.abspath(out)} ({fmt} {arch})\n"
        f"use it with: --config.train.init_checkpoint={out} (fine-tuning, linear evaluation or continued "
        f"pretraining), with\n  {model_flags} --config.data.channels=3")
  return 0


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main)
