"""The official SwAV checkpoint layout (facebookresearch/swav) -> our ResNet-50 trunk.

SwAV's `src/resnet50.py` is torchvision's ResNet (Bottleneck, stride on the 3x3 convolution, BN
epsilon 1e-5) with three changes, none of which touches the trunk's computation or names: the
stem's zero padding is split into a `ConstantPad2d(1)` layer plus `padding=2` in `conv1` (3 on
each side in all, as torchvision), there is no `fc`, and the model ends in `projection_head`
(`Linear(2048, 2048)`, `BatchNorm1d`, ReLU, `Linear(2048, 128)`: tensors `projection_head.0.*`,
`.1.*`, `.3.*`), L2 normalisation and `prototypes` (`Linear(128, K, bias=False)`, or
`prototypes.prototypes{i}` for several heads). Training wraps it in DistributedDataParallel, so
every name starts with `module.`; the released files (`swav_800ep_pretrain.pth.tar`, ...) are
that state_dict, a training checkpoint has it under 'state_dict' (both read). Its training and
evaluation scripts normalise inputs with the ImageNet mean/std.

Import: the trunk, as torchvision's `resnet50` (`weights/torchvision.py`; the same model
settings). The projection head and prototypes are not imported: SwAV's last projection layer is
a Linear with bias and no batch norm, which neither of our heads has (SimCLR's ends in batch
norm, MoCo's has no batch norm after its first layer), so a run from these weights starts a
fresh head. The wider SwAV models (RN50-w2/w4/w5) widen every layer, stem included, which
torchvision's layout cannot express: only `resnet50` converts.
"""
import numpy as np

from medssl_jax.errors import UserError
from medssl_jax.weights import moco_v2
from medssl_jax.weights import torchvision as tv

ARCHS = ("resnet50",)
HEADS = ("projection_head.", "prototypes.")


def model_settings(arch: str) -> dict:
  if arch not in ARCHS:
    raise UserError(f"--arch={arch!r}: the SwAV format converts {ARCHS} (the wider RN50-w2/w4/w5 are not "
                    f"torchvision layouts)")
  return tv.model_settings(arch)


def from_state_dict(state_dict: dict, arch: str, where: str = "the file"):
  """(params {'encoder'}, batch_stats {'encoder'}, settings) of a SwAV state_dict."""
  model_settings(arch)
  prefix = "module." if any(k.startswith("module.") for k in state_dict) else ""
  trunk = {}
  for k, v in state_dict.items():
    if not k.startswith(prefix):
      raise UserError(f"{where} has tensor '{k}' without the '{prefix}' prefix its other tensors have")
    name = k[len(prefix):]
    if not name.startswith(HEADS):
      trunk[name] = np.asarray(v)
  if "fc.weight" in trunk or "fc.bias" in trunk:
    raise UserError(f"{where} has tensor '{prefix}fc.weight'; SwAV's model has no fc (a torchvision or linear-"
                    f"evaluation file? --format torchvision)")
  try:
    params, batch_stats = tv.from_state_dict(trunk, arch)
  except UserError as e:
    raise UserError(f"{where}, names under '{prefix}': {e}") from None
  return params, batch_stats, model_settings(arch)


def load(path: str, arch: str):
  model_settings(arch)
  return from_state_dict(moco_v2.load_pth(path), arch, where=path)
