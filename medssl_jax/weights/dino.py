"""The official DINO backbone checkpoints (Caron et al. 2021, facebookresearch/dino) -> our weights.

Import only. The released backbone files (`dino_deitsmall16_pretrain.pth`, `dino_deitsmall8_...`,
`dino_vitbase16_...`, `dino_vitbase8_...`, `dino_resnet50_pretrain.pth`) are plain state_dicts:

  ViTs (`--arch dino_vits16`, `dino_vits8`, `dino_vitb16`, `dino_vitb8`): the names of DINO's
  `vision_transformer.py` (`cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.N.norm1`,
  `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`, `norm`), which are timm's; its
  `vit_small` / `vit_base` use qkv bias, LayerNorm epsilon 1e-6 and PyTorch's exact GELU, and the
  head is `nn.Identity()` (no tensors), so a file with a `head.*` tensor is refused. They become
  `model.arch='vit'` with `model.vit_variant` S/16, S/8, B/16, B/8 (`weights/timm.py` does the
  renaming). Set `model.vit_tokens=4` for DINO's linear-evaluation features (the last 4 blocks'
  class tokens; Truong et al. 2021's DVME: 4 x 384 for ViT-S).
  ResNet-50 (`--arch dino_resnet50`): torchvision's resnet50 with `fc = nn.Identity()`, so
  torchvision's names without `fc` (`weights/torchvision.py`); a file with `fc.*` is refused.

All expect ImageNet mean/std normalised inputs (DINO's transforms), so `model.input_norm='imagenet'`
is stored with the checkpoint; the ResNet also gets torchvision's `downsample_padding='symmetric'`.
The ViTs were trained at 224 px: their `pos_embed` (1, 197, dim) for patch 16, (1, 785, dim) for
patch 8 sets `data.image_size` = 224 (not interpolated; see weights/timm.py). The full training
checkpoints (`*_full_checkpoint.pth`: student, teacher, optimiser) are not these files: use the
backbone-only downloads.
"""
import numpy as np

from medssl_jax.errors import UserError
from medssl_jax.weights import timm as timm_lib
from medssl_jax.weights import torchvision as tv
from medssl_jax import weights

VITS = {"dino_vits16": "S/16", "dino_vits8": "S/8", "dino_vitb16": "B/16", "dino_vitb8": "B/8"}
ARCHS = tuple(VITS) + ("dino_resnet50",)


def model_settings(arch: str) -> dict:
  """The `model.*` settings under which our encoder computes what DINO's backbone `arch` does."""
  if arch not in ARCHS:
    raise UserError(f"--arch={arch!r} is not an official DINO backbone; expected one of {list(ARCHS)}")
  if arch == "dino_resnet50":
    return tv.model_settings("resnet50")
  return {"arch": "vit", "vit_variant": VITS[arch], "vit_tokens": 1, "input_norm": "imagenet"}


def _mismatch(state_dict: dict, arch: str):
  if arch == "dino_resnet50":
    fc = [k for k in state_dict if k.startswith("fc.")]
    if fc:
      return f"the file has tensor '{fc[0]}', which DINO's ResNet-50 backbone (fc = Identity) does not"
    return tv._mismatch(state_dict, "resnet50")
  return timm_lib.vit_mismatch(state_dict, VITS[arch], arch, head=None)


def check_state_dict(state_dict: dict, arch: str) -> None:
  """Refuses (one-line UserError) a state_dict that is not DINO's `arch` backbone, naming the
  first differing tensor and both shapes."""
  model_settings(arch)
  problem = _mismatch(state_dict, arch)
  if problem:
    fits = [a for a in ARCHS if a != arch and _mismatch(state_dict, a) is None]
    hint = f"; it fits --arch {fits[0]}" if fits else ""
    raise UserError(f"not a DINO {arch} backbone state_dict: {problem}{hint}")


def from_state_dict(state_dict: dict, arch: str):
  """(params, batch_stats) of our encoder (no classifier) from a DINO backbone state_dict."""
  state_dict = {k: np.asarray(v) for k, v in state_dict.items()}
  check_state_dict(state_dict, arch)
  if arch == "dino_resnet50":
    return tv.from_state_dict(state_dict, "resnet50")
  return timm_lib.vit_from_state_dict(state_dict, VITS[arch], head=None)


def load(path: str, arch: str):
  """import-weights' loader: (params, batch_stats, model settings) of the DINO file at `path`."""
  settings = model_settings(arch)
  params, batch_stats = from_state_dict(weights.load_tensors(path), arch)
  return params, batch_stats, settings


data_settings = timm_lib.data_settings
