"""Encoder + projection head, the network trained by the contrastive methods (SimCLR, MICLe, MoCo v2).

The encoder is chosen by `model.arch`: 'resnet' (ResNet v1, `model.depth` 18-152, any
`model.width`, `model.stem`) or 'densenet' (DenseNet-BC, `model.depth` 121/169/201, torchvision's
layout: width 1 and the ImageNet stem only; DenseNet-121 is MoCo-CXR's second backbone,
Sowrirajan et al. 2021 Sec. 3.2) or 'vit' (models/vit.py: `model.vit_variant` 'S/16', 'B/16',
'S/8', 'B/8', 'Ti/16' or the 2-block 'test'; features = the final-LayerNorm class tokens of the
last `model.vit_tokens` blocks concatenated, k x width: 1 is the usual class token, 4 with ViT-S
is DVME's 1536-d DINO embedding). A ViT ignores `model.depth`, `model.width`, `model.stem` and
`model.bn_momentum` (its size is the variant's); of the port settings it has `model.input_norm`
only (plus 'inception', [-1, 1] inputs). Its position embeddings are made for `data.image_size`
(a multiple of the patch size). Or 'bit' (models/bit.py: BiT's pre-activation ResNet v2 with Group Norm
and Weight Standardisation, `model.depth` 50/101/152, `model.width` its width factor, `model.input_norm`
'none' or 'inception'; no batch norm, no stem choice). In every case the sub-module is named 'encoder', so encoder
weights load by name into `Classifier` (and ResNet parameter paths are what they always were).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from medssl_jax.errors import UserError
from medssl_jax.models import bit as bit_lib
from medssl_jax.models.bit import DEPTHS as BIT_DEPTHS
from medssl_jax.models.bit import BiT
from medssl_jax.models.densenet import BLOCKS as DENSENET_BLOCKS
from medssl_jax.models.densenet import DenseNet
from medssl_jax.models.heads import ProjectionHead
from medssl_jax.models.resnet import ResNet
from medssl_jax.models.vit import INPUT_NORMS as VIT_INPUT_NORMS
from medssl_jax.models.vit import PRESETS as VIT_PRESETS
from medssl_jax.models.vit import feature_dim as _vit_dim
from medssl_jax.models.vit import vit as _make_vit

ARCHS = ("resnet", "densenet", "vit", "bit")


def check_arch(model_cfg) -> None:
  """One-line refusals of `model.*` settings the chosen encoder does not have."""
  arch = getattr(model_cfg, "arch", "resnet")
  if arch not in ARCHS:
    raise UserError(f"model.arch={arch!r}: expected one of {ARCHS}")
  if arch == "densenet":
    if model_cfg.depth not in DENSENET_BLOCKS:
      raise UserError(f"model.depth={model_cfg.depth} is not a DenseNet depth (model.arch='densenet'); "
                      f"expected one of {sorted(DENSENET_BLOCKS)}")
    if float(model_cfg.width) != 1.0 or model_cfg.stem != "imagenet":
      raise UserError(f"model.arch='densenet' has torchvision's layout only: model.width must be 1 and "
                      f"model.stem 'imagenet' (got width={model_cfg.width}, stem={model_cfg.stem!r})")
    changed = {k: v for k, v in resnet_settings(model_cfg).items() if k != "input_norm" and v != RESNET_DEFAULTS[k]}
    if changed:
      raise UserError(f"model.arch='densenet' does not have the ResNet settings {changed}; leave them at "
                      f"their defaults {RESNET_DEFAULTS}")
    if resnet_settings(model_cfg)["input_norm"] not in ("none", "imagenet"):
      raise UserError(f"model.input_norm={model_cfg.input_norm!r}: expected 'none' or 'imagenet' for a DenseNet")
  if arch == "vit":
    vit_settings(model_cfg)
  if arch == "bit":
    if model_cfg.depth not in BIT_DEPTHS:
      raise UserError(f"model.depth={model_cfg.depth} is not a BiT depth (model.arch='bit'); expected one of "
                      f"{sorted(BIT_DEPTHS)}")
    if not bit_lib.valid_width(model_cfg.width):
      raise UserError(f"model.width={model_cfg.width} for model.arch='bit': expected a multiple of 0.5 (the released "
                      f"BiT widths are 1, 2, 3 and 4), so that every layer's channels divide into Group Norm's 32 groups")
    settings = resnet_settings(model_cfg)
    if settings["input_norm"] not in bit_lib.INPUT_NORMS:
      raise UserError(f"model.input_norm={model_cfg.input_norm!r}: expected one of {sorted(bit_lib.INPUT_NORMS)} "
                      f"for BiT ('inception': [-1, 1] inputs, as the released weights were trained)")
    changed = {k: v for k, v in settings.items() if k != "input_norm" and v != RESNET_DEFAULTS[k]}
    if changed:
      raise UserError(f"model.arch='bit' does not have the ResNet settings {changed}; leave them at their defaults")


def vit_settings(model_cfg) -> dict:
  """{variant, tokens, input_norm} of `model.arch='vit'`, validated (one-line UserErrors)."""
  variant, tokens = getattr(model_cfg, "vit_variant", "S/16"), getattr(model_cfg, "vit_tokens", 1)
  input_norm = getattr(model_cfg, "input_norm", "none")
  if variant not in VIT_PRESETS:
    raise UserError(f"model.vit_variant={variant!r}: expected one of {list(VIT_PRESETS)}")
  depth = VIT_PRESETS[variant]["depth"]
  if not isinstance(tokens, int) or not 1 <= tokens <= depth:
    raise UserError(f"model.vit_tokens={tokens!r}: expected an integer from 1 (the class token) to the "
                    f"{depth} blocks of ViT-{variant}")
  if input_norm not in VIT_INPUT_NORMS:
    raise UserError(f"model.input_norm={input_norm!r}: expected one of {list(VIT_INPUT_NORMS)} for a ViT")
  changed = {k: v for k, v in resnet_settings(model_cfg).items() if k != "input_norm" and v != RESNET_DEFAULTS[k]}
  if changed:
    raise UserError(f"model.arch='vit' does not have the ResNet settings {changed}; leave them at their "
                    f"defaults")
  return {"variant": variant, "tokens": tokens, "input_norm": input_norm}


def vit_feature_dim(model_cfg) -> int:
  """Width of a `model.arch='vit'` encoder's features: vit_tokens x the variant's width."""
  s = vit_settings(model_cfg)
  return _vit_dim(s["variant"], s["tokens"])


# ResNet settings that reproduce other libraries' ResNets (models/resnet.py); defaults = the original model.
RESNET_DEFAULTS = {"downsample_padding": "same", "bottleneck_width": 1.0, "input_norm": "none"}


def resnet_settings(model_cfg) -> dict:
  """The ResNet port settings of `model_cfg` (a config without them has the defaults)."""
  return {k: getattr(model_cfg, k, v) for k, v in RESNET_DEFAULTS.items()}


def make_encoder(arch: str, depth: int, width: float, stem: str, dtype: Any, bn_momentum: float,
                 bn_axis_name: str | None = None, resnet_kw: tuple = (), vit_kw: tuple = ()) -> nn.Module:
  """The encoder module of `arch`; its caller binds it to the attribute name 'encoder'.
  `resnet_kw`: (name, value) pairs of `RESNET_DEFAULTS` settings for a ResNet; `vit_kw`: the
  (name, value) pairs of `vit_settings` for a ViT."""
  if arch == "vit":
    kw = dict(vit_kw)
    return _make_vit(kw.get("variant", "S/16"), return_last_k_cls=kw.get("tokens", 1), dtype=dtype,
                     input_norm=kw.get("input_norm", "none"), batch_stats_placeholder=True)
  if arch == "bit":
    return BiT(depth=depth, width=width, dtype=dtype, input_norm=dict(resnet_kw).get("input_norm", "none"))
  if arch == "densenet":
    return DenseNet(depth=depth, dtype=dtype, bn_momentum=bn_momentum, bn_axis_name=bn_axis_name,
                    input_norm=dict(resnet_kw).get("input_norm", "none"))
  if arch == "resnet":
    return ResNet(depth=depth, width=width, stem=stem, dtype=dtype, bn_momentum=bn_momentum,
                  bn_axis_name=bn_axis_name, **dict(resnet_kw))
  raise ValueError(f"model.arch={arch!r}: expected one of {ARCHS}")


class ContrastiveModel(nn.Module):
  """Returns (features, projections); features feed downstream tasks, projections the loss."""
  depth: int = 50
  width: float = 1.0
  stem: str = "imagenet"
  head_layers: int = 2
  head_dim: int = 128
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  head_batch_norm: bool = True   # False: MoCo v2's MLP head (biases, no batch norm)
  arch: str = "resnet"           # 'resnet' | 'densenet' | 'vit' | 'bit' (model.arch)
  resnet_kw: tuple = ()          # ((name, value), ...) of RESNET_DEFAULTS settings
  vit_kw: tuple = ()             # ((name, value), ...) of vit_settings (model.arch='vit')

  def setup(self):
    self.encoder = make_encoder(self.arch, self.depth, self.width, self.stem, self.dtype, self.bn_momentum,
                                self.bn_axis_name, self.resnet_kw, self.vit_kw)
    self.head = ProjectionHead(num_layers=self.head_layers, out_dim=self.head_dim, dtype=self.dtype,
                               bn_momentum=self.bn_momentum, bn_axis_name=self.bn_axis_name,
                               batch_norm=self.head_batch_norm)

  def __call__(self, x, train: bool = True):
    h = self.encoder(x, train=train)
    return h, self.head(h, train=train)

  def features(self, x, train: bool = False):
    return self.encoder(x, train=train)


def from_config(model_cfg, bn_axis_name: str | None = None, head_batch_norm: bool = True) -> ContrastiveModel:
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if model_cfg.dtype not in dtypes:
    raise ValueError(f"model.dtype={model_cfg.dtype!r}: expected one of {sorted(dtypes)}")
  check_arch(model_cfg)
  return ContrastiveModel(arch=getattr(model_cfg, "arch", "resnet"), depth=model_cfg.depth, width=model_cfg.width,
                          stem=model_cfg.stem, head_layers=model_cfg.head_layers, head_dim=model_cfg.head_dim,
                          dtype=dtypes[model_cfg.dtype], bn_momentum=model_cfg.bn_momentum,
                          bn_axis_name=bn_axis_name, head_batch_norm=head_batch_norm,
                          resnet_kw=tuple(sorted(resnet_settings(model_cfg).items())), vit_kw=vit_kw(model_cfg))


def vit_kw(model_cfg) -> tuple:
  """`make_encoder`'s vit_kw of `model_cfg` (empty unless model.arch='vit')."""
  if getattr(model_cfg, "arch", "resnet") != "vit":
    return ()
  return tuple(sorted(vit_settings(model_cfg).items()))
