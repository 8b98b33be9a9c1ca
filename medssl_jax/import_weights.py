"""`medssl-jax import-weights`: another library's weights -> a checkpoint every mode reads.

  medssl-jax import-weights --format torchvision --arch resnet50 --in resnet50.pth --out DIR

writes DIR as a run's workdir (`medssl_jax/weights/__init__.py`): fine-tune or linear-evaluate
from it with `--config.eval.init=pretrained --config.eval.checkpoint=DIR`, or continue
pretraining with `--config.train.init_checkpoint=DIR` (the projection head starts fresh), under
the `model.*` settings it prints (also in DIR/config.json; a run under other settings is
refused). Formats: torchvision (ResNet-18/34/50/101/152, wide_resnet50_2/101_2; `.pth`
state_dict or `.safetensors`). Needs `pip install medssl-jax[torch]` for `.pth` files.
"""
import argparse
import os

FORMATS = ("torchvision",)


def import_weights(fmt: str, arch: str, in_path: str, out_dir: str) -> dict:
  """Converts `in_path` and writes `out_dir`; returns the model settings the weights need."""
  from medssl_jax import weights
  from medssl_jax.errors import UserError
  from medssl_jax.features import file_sha256
  if fmt not in FORMATS:
    raise UserError(f"--format={fmt!r}: expected one of {FORMATS}")
  from medssl_jax.weights import torchvision as fmt_lib
  settings = fmt_lib.model_settings(arch)  # refuses an unknown arch before reading the file
  params, batch_stats = fmt_lib.from_state_dict(weights.load_tensors(in_path), arch)
  weights.write_checkpoint(out_dir, params, batch_stats, settings,
                           {"format": fmt, "arch": arch, "file": os.path.abspath(in_path), "sha256": file_sha256(in_path),
                            "classifier_outputs": int(params["classifier"]["bias"].shape[0]) if "classifier" in params else 0})
  return settings


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="medssl-jax import-weights", description=__doc__.split("\n")[0])
  p.add_argument("--format", required=True, choices=FORMATS)
  p.add_argument("--arch", required=True, help="e.g. resnet50 (torchvision's model name)")
  p.add_argument("--in", dest="in_path", required=True, help=".pth state_dict or .safetensors file")
  p.add_argument("--out", required=True, help="new checkpoint directory")
  args = p.parse_args(argv)
  settings = import_weights(args.format, args.arch, args.in_path, args.out)
  flags = " ".join(f"--config.model.{k}={v}" for k, v in settings.items())
  print(f"wrote {os.path.abspath(args.out)} ({args.format} {args.arch})\n"
        f"use it with: --config.eval.checkpoint={args.out} (fine-tuning, linear evaluation) or "
        f"--config.train.init_checkpoint={args.out} (continued pretraining), with\n  {flags} --config.data.channels=3")
  return 0


if __name__ == "__main__":
  from medssl_jax import errors
  raise SystemExit(errors.guard(main)())
