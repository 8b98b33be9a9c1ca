"""U-Net decoder over a ResNet encoder, for segmentation (Hosseinzadeh Taher et al. 2021, App. B).

The paper segments with "a U-Net network with a ResNet-50 encoder, where the encoder is
initialized with the pre-trained models" (their footnote 4: the `segmentation_models.pytorch`
U-Net, whose decoder widths (256, 128, 64, 32, 16) are the default here). This is a U-Net of
the same shape written for this project (Ronneberger et al. 2015):

- encoder: `ResNet(return_stages=True)`, any depth, width and stem, kept under the name
  'encoder' exactly as in `ContrastiveModel` and `Classifier`, so pretrained encoder weights
  (and their batch-norm statistics) load by name;
- skips: the stem output (after its ReLU, before the max pool) and stages 1-3; the decoder
  starts from stage 4;
- 5 decoder levels, one per entry of `decoder_widths`: upsample x2 when the next skip (or, at the
  last level, the input) has a higher resolution, concatenate that skip, then two 3x3
  conv-BN-ReLU. The last level has no skip. With the 'imagenet' stem (strides 2, 4, 8, 16, 32)
  the levels run at strides 16, 8, 4, 2, 1; with the 'small' stem (strides 1, 1, 2, 4, 8) at 4,
  2, 1, 1, 1 (no upsampling where the skip is already at the current resolution), so the
  parameter names are the same for both stems;
- upsampling: bilinear resize x2 (`jax.image.resize`, half-pixel centres), no parameters. A
  transposed convolution tends to leave checkerboard artefacts (Odena et al. 2016, "Deconvolution
  and checkerboard artifacts") and adds parameters that the pretrained encoder does not
  constrain; the two 3x3 convolutions after it learn what a learned upsampling would.
  (`segmentation_models.pytorch` uses nearest-neighbour interpolation.)
- output: a 1x1 convolution to `num_classes` float32 logits at the input resolution. One class:
  binary segmentation (sigmoid); more: one logit per class (softmax), background included.

Input sizes: the encoder halves the resolution 5 times ('imagenet' stem, total stride 32) or 3
times ('small', total stride 8). An input whose height or width is not a multiple of that is
padded at the bottom and right by repeating its edge pixels up to the next multiple, and the
logits are cropped back to the input size, so every skip matches its upsampled map exactly and
pixel (i, j) of the output belongs to pixel (i, j) of the input.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medssl_jax.models.resnet import ResNet
from medssl_jax.errors import UserError
from medssl_jax.models.contrastive import resnet_settings

DECODER_WIDTHS = (256, 128, 64, 32, 16)


def decoder_widths(multiplier: float = 1.0) -> tuple:
  """DECODER_WIDTHS x `multiplier` (config seg.decoder_width), rounded, at least 1 channel each."""
  if not multiplier > 0:
    raise UserError(f"seg.decoder_width={multiplier}: must be > 0 (1.0 = widths {DECODER_WIDTHS})")
  return tuple(max(1, int(round(w * multiplier))) for w in DECODER_WIDTHS)
TOTAL_STRIDE = {"imagenet": 32, "small": 8}


def total_stride(stem: str) -> int:
  """By how much the encoder's deepest map is smaller than the input, per stem."""
  if stem not in TOTAL_STRIDE:
    raise ValueError(f"model.stem={stem!r}: expected one of {sorted(TOTAL_STRIDE)}")
  return TOTAL_STRIDE[stem]


def pad_to_multiple(x, multiple: int):
  """Edge-pads (N, H, W, C) at the bottom and right up to multiples of `multiple`."""
  h, w = x.shape[1], x.shape[2]
  ph, pw = -h % multiple, -w % multiple
  if ph == 0 and pw == 0:
    return x
  return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")


class UNetDecoder(nn.Module):
  """Decoder levels over the encoder's [stem, stage 1, ..., stage 4]; returns the last level's map."""
  widths: Sequence[int] = DECODER_WIDTHS
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, stages, out_hw, train: bool = True):
    if len(self.widths) != 5:
      raise ValueError(f"decoder_widths={tuple(self.widths)}: expected 5 widths, one per level")
    if len(stages) != 5:
      raise ValueError(f"expected 5 encoder maps [stem, stage1..stage4]; got {len(stages)}")
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), use_bias=False, dtype=self.dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=1e-5, dtype=self.dtype, axis_name=self.bn_axis_name)
    x = stages[4]
    skips = [stages[3], stages[2], stages[1], stages[0], None]
    for level, (width, skip) in enumerate(zip(self.widths, skips)):
      target = tuple(out_hw) if skip is None else skip.shape[1:3]
      if x.shape[1:3] != target:
        if (2 * x.shape[1], 2 * x.shape[2]) != target:
          raise ValueError(f"decoder level {level}: cannot upsample {x.shape[1:3]} x2 to {target}")
        x = jax.image.resize(x, (x.shape[0], *target, x.shape[3]), method="bilinear")
      if skip is not None:
        x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
      for i in range(2):
        x = conv(width, name=f"level{level}_conv{i}")(x)
        x = nn.relu(norm(name=f"level{level}_bn{i}")(x))
    return x


class SegmentationModel(nn.Module):
  """ResNet encoder + U-Net decoder; returns (N, H, W, num_classes) float32 logits."""
  num_classes: int
  depth: int = 50
  width: float = 1.0
  stem: str = "imagenet"
  decoder_widths: Sequence[int] = DECODER_WIDTHS
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  resnet_kw: tuple = ()  # (name, value) pairs of models.contrastive.RESNET_DEFAULTS settings (imported weights)

  def setup(self):
    if self.num_classes < 1:
      raise ValueError(f"num_classes={self.num_classes}: need at least 1")
    if len(self.decoder_widths) != 5:
      raise ValueError(f"decoder_widths={tuple(self.decoder_widths)}: expected 5 widths, one per level")
    total_stride(self.stem)  # refuses an unknown stem before anything runs
    self.encoder = ResNet(depth=self.depth, width=self.width, stem=self.stem, dtype=self.dtype,
                          bn_momentum=self.bn_momentum, bn_axis_name=self.bn_axis_name,
                          return_stages=True, **dict(self.resnet_kw))
    self.decoder = UNetDecoder(widths=tuple(self.decoder_widths), dtype=self.dtype,
                               bn_momentum=self.bn_momentum, bn_axis_name=self.bn_axis_name)
    self.seg_head = nn.Conv(self.num_classes, (1, 1), dtype=jnp.float32)

  def __call__(self, x, train: bool = True):
    if x.ndim != 4:
      raise ValueError(f"expected images (N, H, W, C); got shape {x.shape}")
    h, w = x.shape[1], x.shape[2]
    x = pad_to_multiple(x, total_stride(self.stem))
    stages = self.encoder(x, train=train)
    y = self.decoder(stages, x.shape[1:3], train=train)
    logits = self.seg_head(y.astype(jnp.float32))
    return logits[:, :h, :w, :]


def segmentation_from_config(model_cfg, num_classes: int,
                             decoder_widths: Sequence[int] = DECODER_WIDTHS) -> SegmentationModel:
  """The U-Net of `model.*` (a ResNet encoder only; its port settings, e.g. of imported
  torchvision weights, are passed on)."""
  if getattr(model_cfg, "arch", "resnet") != "resnet":
    raise UserError(f"model.arch={model_cfg.arch!r}: the U-Net's encoder is a ResNet; set model.arch='resnet'")
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if model_cfg.dtype not in dtypes:
    raise ValueError(f"model.dtype={model_cfg.dtype!r}: expected one of {sorted(dtypes)}")
  return SegmentationModel(num_classes=num_classes, depth=model_cfg.depth, width=model_cfg.width,
                           stem=model_cfg.stem, decoder_widths=tuple(decoder_widths),
                           dtype=dtypes[model_cfg.dtype], bn_momentum=model_cfg.bn_momentum,
                           resnet_kw=tuple(sorted(resnet_settings(model_cfg).items())))
