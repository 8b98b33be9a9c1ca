"""`medssl-jax export-weights`: a checkpoint of this project -> another library's weights file.

  medssl-jax export-weights --checkpoint WORKDIR --format torchvision --out resnet50.pth

writes the ResNet trunk (and a fine-tuned classifier as `fc`, when the checkpoint has one) as a
torchvision state_dict (`.pth`, torch.save) or `.safetensors`. Load it with
`torchvision.models.resnet50(num_classes=K).load_state_dict(torch.load(FILE))`; a file without
`fc` (a pretraining checkpoint) loads strictly after `model.fc = torch.nn.Identity()`, and the
model then returns the pooled features. torchvision pads as `model.downsample_padding='symmetric'`:
a checkpoint trained under 'same' is refused unless --allow_padding_change (its weights then
compute slightly different features in torchvision). The input normalisation the weights expect
(`model.input_norm`) is printed and stored in a `.safetensors` file's metadata.
`--format timm` writes timm's names: ResNets as torchvision, ViTs (model.arch='vit') as
timm's VisionTransformer with the classifier as `head` (medssl_jax/weights/timm.py).
"""
import os

from absl import flags

from medssl_jax import weights
from medssl_jax.commands import common
from medssl_jax.errors import UserError
from medssl_jax.models.contrastive import RESNET_DEFAULTS
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.weights import torchvision as fmt_lib

FLAGS = flags.FLAGS

FORMATS = ("torchvision", "timm")  # timm: ResNets as torchvision, and ViTs (medssl_jax/weights/timm.py)


def export_weights(checkpoint: str, fmt: str, out: str, allow_padding_change: bool = False,
                   overwrite: bool = False) -> dict:
  """Writes `out` (an existing file only with `overwrite`); returns {'arch', 'tensors', 'fc', 'input_norm',
  'downsample_padding'}."""
  if fmt not in FORMATS:
    raise UserError(f"--format={fmt!r}: expected one of {FORMATS}")
  if not (out.endswith(".pth") or out.endswith(".pt") or out.endswith(".safetensors")):
    raise UserError(f"--out={out}: expected a .pth (torch state_dict) or .safetensors file name")
  if os.path.exists(out) and not overwrite:
    raise UserError(f"--out={out} already exists; pass --overwrite to replace it, or choose another file name")
  if (weights.stored_config(checkpoint) or {}).get("model", {}).get("arch") == "bit":
    raise UserError(f"{checkpoint} is a BiT encoder (model.arch='bit'): export-weights writes torchvision / timm "
                    f"ResNet, DenseNet and ViT layouts only; its weights stay usable here (train.init_checkpoint)")
  if fmt == "timm":
    from medssl_jax.weights import timm as timm_lib
    return timm_lib.export(checkpoint, out, allow_padding_change)
  config = weights.stored_config(checkpoint) or {}
  model = {**RESNET_DEFAULTS, **{k: v for k, v in config.get("model", {}).items() if k in RESNET_DEFAULTS}}
  is_densenet = config.get("model", {}).get("arch") == "densenet"  # torchvision's padding throughout
  if model["downsample_padding"] != "symmetric" and not allow_padding_change and not is_densenet:
    raise UserError(f"{checkpoint} was trained with model.downsample_padding={model['downsample_padding']!r}; "
                    f"torchvision pads 'symmetric', so its outputs would differ; pass --allow_padding_change to "
                    f"export anyway")
  params, batch_stats, step = ckpt_lib.restore_weights(checkpoint)
  arch = fmt_lib.infer_arch(params)
  # A linear evaluation's feature batch norm sits between trunk and classifier: torchvision has none.
  include_fc = "classifier" in params and "norm" not in batch_stats
  state_dict = fmt_lib.to_state_dict(params, batch_stats, arch, include_fc=include_fc)
  meta = {"format": "torchvision", "arch": arch, "input_norm": model["input_norm"],
          "downsample_padding": model["downsample_padding"], "source": os.path.abspath(checkpoint), "step": step}
  weights.save_tensors(state_dict, out, metadata=meta)
  return {"arch": arch, "tensors": len(state_dict), "fc": include_fc, "input_norm": model["input_norm"],
          "downsample_padding": model["downsample_padding"], "dropped_classifier": "classifier" in params and not include_fc}


def _define_flags() -> None:
  flags.DEFINE_string("checkpoint", None, "A run's workdir (or its checkpoints/), or an imported DIR.")
  flags.DEFINE_enum("format", None, FORMATS, "Layout of the weights file to write.")
  flags.DEFINE_string("out", None, "FILE.pth or FILE.safetensors.")
  flags.DEFINE_bool("allow_padding_change", False,
                    "Export a model trained with model.downsample_padding='same' anyway.")
  flags.DEFINE_bool("overwrite", False, "Replace --out if it exists (else an existing file is refused).")
  flags.mark_flags_as_required(["checkpoint", "format", "out"])


def main(argv) -> int:
  del argv  # common.run refuses positional arguments
  r = export_weights(FLAGS.checkpoint, FLAGS.format, FLAGS.out, FLAGS.allow_padding_change, FLAGS.overwrite)
  norm = {"imagenet": "ImageNet mean/std normalised inputs",
          "inception": "inputs in [-1, 1] ((x - 0.5) / 0.5)"}.get(r["input_norm"], "inputs in [0, 1], not normalised")
  print(f"wrote {FLAGS.out}: {r.get('format', 'torchvision')} {r['arch']}, {r['tensors']} tensors, "
        + (("with fc" if r["fc"] else "no fc (load after model.fc = torch.nn.Identity())")
           if r.get("format", "torchvision") == "torchvision"
           else ("with its classifier" if r["fc"] else "no classifier (timm.create_model(..., num_classes=0))"))
        + f"; the weights expect {norm}"
        + ("; the linear evaluation's classifier (behind a feature batch norm) was left out" if r["dropped_classifier"] else ""))
  return 0


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main)
