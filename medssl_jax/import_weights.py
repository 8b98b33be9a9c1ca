"""`medssl-jax import-weights`: another library's weights -> a checkpoint every mode reads.

  medssl-jax import-weights --format torchvision --arch resnet50 --in resnet50.pth --out DIR

writes DIR as a run's workdir (`medssl_jax/weights/__init__.py`): fine-tune or linear-evaluate
from it with `--config.eval.init=pretrained --config.eval.checkpoint=DIR`, or continue
pretraining with `--config.train.init_checkpoint=DIR` (the projection head starts fresh), under
the `model.*` settings it prints (also in DIR/config.json; a run under other settings is
refused). Formats: torchvision (ResNet-18/34/50/101/152, wide_resnet50_2/101_2, DenseNet-121/169/201; `.pth`
state_dict or `.safetensors`). Needs `pip install medssl-jax[torch]` for `.pth` files.
timm (ResNets; ViT-Ti/S/B 16, S/B 8) and dino (the official ViT and ResNet-50 backbones) are in
medssl_jax/weights/timm.py and dino.py; a ViT's data.image_size is stored in DIR/config.json.
moco_v2 (facebookresearch/moco and MoCo-CXR checkpoints: query encoder + MLP head), swav (the
official ResNet-50 layout: trunk) and simclr_tf (google-research/simclr TF1 checkpoints, v1 and
v2: trunk + projection head; --in is the checkpoint prefix or its directory, --arch e.g.
r50_1x_sk0 or resnet50_4x) are in medssl_jax/weights/moco_v2.py, swav.py and simclr_tf.py.
"""
import argparse
import os

FORMATS = ("torchvision",)
# Formats whose module has `load(path, arch) -> (params, batch_stats, model settings)` (official SSL layouts).
LOADERS = {"moco_v2": "medssl_jax.weights.moco_v2", "swav": "medssl_jax.weights.swav",
           "simclr_tf": "medssl_jax.weights.simclr_tf"}
# timm (ResNets, ViT-Ti/S/B) and the official DINO backbones (ViT-S/B 16 and 8, ResNet-50); their
# modules also have `data_settings(params)`: a ViT's data.image_size, read off its position embeddings.
LOADERS.update({"timm": "medssl_jax.weights.timm", "dino": "medssl_jax.weights.dino"})
FORMATS += tuple(LOADERS)


def import_weights(fmt: str, arch: str, in_path: str, out_dir: str) -> dict:
  """Converts `in_path` and writes `out_dir`; returns the model settings the weights need."""
  from medssl_jax import weights
  from medssl_jax.errors import UserError
  from medssl_jax.features import file_sha256
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


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="medssl-jax import-weights", description=__doc__.split("\n")[0])
  p.add_argument("--format", required=True, choices=FORMATS)
  p.add_argument("--arch", required=True, help="e.g. resnet50 (torchvision's model name; also for moco_v2, swav); "
                                               "simclr_tf: r50_1x_sk0, resnet50_4x, ...")
  p.add_argument("--in", dest="in_path", required=True,
                 help=".pth state_dict or .safetensors file (simclr_tf: TF checkpoint prefix or directory)")
  p.add_argument("--out", required=True, help="new checkpoint directory")
  args = p.parse_args(argv)
  settings = import_weights(args.format, args.arch, args.in_path, args.out)
  flags = " ".join(f"--config.model.{k}={v}" for k, v in settings.items())
  if settings.get("arch") == "vit":  # position embeddings fix the image size
    from medssl_jax import weights
    flags += f" --config.data.image_size={weights.stored_config(args.out)['data']['image_size']}"
  print(f"wrote {os.path.abspath(args.out)} ({args.format} {args.arch})\n"
        f"use it with: --config.eval.checkpoint={args.out} (fine-tuning, linear evaluation) or "
        f"--config.train.init_checkpoint={args.out} (continued pretraining), with\n  {flags} --config.data.channels=3")
  return 0


if __name__ == "__main__":
  from medssl_jax import errors
  raise SystemExit(errors.guard(main)())
