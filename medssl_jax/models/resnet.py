"""ResNet v1 encoders (18-152 layers) with a width multiplier, as used by SimCLR.

Batch norm is plain `flax.linen.BatchNorm`: under `jax.jit` on a batch that is sharded over a
device mesh, its mean and variance are taken over the whole global batch (XLA inserts the
cross-device reduction), which is SimCLR's global BN. Inside `shard_map`, pass `bn_axis_name`
to get the same statistics with an explicit `pmean`.

The stride of a bottleneck block sits on its 3x3 convolution, as in the SimCLR reference
encoder; the last BN scale of every residual block starts at zero (Goyal et al. 2017).

Three settings reproduce other libraries' ResNets (`medssl_jax/weights/`); their defaults are
this model as it always was. `downsample_padding='symmetric'` pads the stride-2 3x3
convolutions and the stem's 3x3 max pool by 1 on each side, as torchvision does; 'same' pads
as TensorFlow's SAME, (0, 1) on even sizes, which shifts every downsampled map by one pixel
relative to torchvision's. 'tf_fixed' is the google-research/simclr TF ResNet: its
`conv2d_fixed_padding` pads stride-2 convolutions by 1 on each side as 'symmetric' does, but its
max pool is TF's SAME, as 'same' pads it. `bottleneck_width` multiplies the width of a bottleneck block's
inner 1x1/3x3 convolutions but not its output (torchvision's wide_resnet50_2 / 101_2: 2, Zagoruyko
& Komodakis 2016 as torchvision builds it). `input_norm='imagenet'` standardises [0, 1] inputs
with the ImageNet channel mean and standard deviation torchvision's weights were trained with.
"""
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any

# torchvision's ImageNet normalisation (torchvision.transforms.Normalize in its reference recipes).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_NORMS = ("none", "imagenet")
DOWNSAMPLE_PADDINGS = ("same", "symmetric", "tf_fixed")

# depth -> (block type, blocks per stage)
STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _pad3(padding: str) -> dict:
  """Keyword arguments of a 3x3 convolution: Flax's default ('SAME'), or 1 on each side."""
  return {} if padding == "same" else {"padding": [(1, 1), (1, 1)]}


class BasicBlock(nn.Module):
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  padding: str = "same"

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides), **_pad3(self.padding))(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3), **_pad3(self.padding))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), (self.strides, self.strides), name="proj_conv")(residual)
      residual = self.norm(name="proj_bn")(residual)
    return nn.relu(residual + y)


class BottleneckBlock(nn.Module):
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  padding: str = "same"
  inner_width: float = 1.0   # inner 1x1/3x3 width = int(filters * inner_width); output filters * 4

  @nn.compact
  def __call__(self, x):
    residual = x
    inner = self.filters if self.inner_width == 1.0 else int(self.filters * self.inner_width)
    y = nn.relu(self.norm()(self.conv(inner, (1, 1))(x)))
    y = self.conv(inner, (3, 3), (self.strides, self.strides), **_pad3(self.padding))(y)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), (self.strides, self.strides), name="proj_conv")(residual)
      residual = self.norm(name="proj_bn")(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """ResNet v1 trunk; returns the globally average-pooled features (no classifier).

  With `return_stages=True` it returns instead the list of 5 feature maps [stem, stage 1, ...,
  stage 4] (the U-Net's skip connections; same parameters either way). The stem map is taken
  after its ReLU and before the 'imagenet' stem's max pool: strides 2, 4, 8, 16, 32 of the input
  with the 'imagenet' stem, 1, 1, 2, 4, 8 with the 'small' one.
  """
  depth: int = 50
  width: float = 1.0
  stem: str = "imagenet"   # 'imagenet': 7x7/2 conv + 3x3/2 max pool; 'small': 3x3/1 conv.
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  return_stages: bool = False
  downsample_padding: str = "same"   # 'same' | 'symmetric' (torchvision) | 'tf_fixed'; see the module docstring
  bottleneck_width: float = 1.0      # 2.0: torchvision's wide_resnet50_2 / wide_resnet101_2
  input_norm: str = "none"           # 'none' | 'imagenet' (inputs in [0, 1] -> (x - mean) / std)

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.depth not in STAGES:
      raise ValueError(f"model.depth={self.depth} is not one of {sorted(STAGES)}")
    if self.downsample_padding not in DOWNSAMPLE_PADDINGS:
      raise ValueError(f"model.downsample_padding={self.downsample_padding!r}: expected one of {DOWNSAMPLE_PADDINGS}")
    if self.input_norm not in INPUT_NORMS:
      raise ValueError(f"model.input_norm={self.input_norm!r}: expected one of {INPUT_NORMS}")
    kind, blocks = STAGES[self.depth]
    block_cls = BasicBlock if kind == "basic" else BottleneckBlock
    block_kw = {"padding": self.downsample_padding}
    if kind == "bottleneck":
      block_kw["inner_width"] = self.bottleneck_width
    elif self.bottleneck_width != 1.0:
      raise ValueError(f"model.bottleneck_width={self.bottleneck_width} applies to bottleneck ResNets "
                       f"(depth 50, 101, 152) only; model.depth={self.depth} has basic blocks")
    if self.input_norm == "imagenet":
      if x.shape[-1] != 3:
        raise ValueError(f"model.input_norm='imagenet' needs RGB inputs (data.channels=3); got {x.shape[-1]} channels")
      x = (x.astype(jnp.float32) - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=1e-5, dtype=self.dtype, axis_name=self.bn_axis_name)
    base = max(1, int(round(64 * self.width)))
    x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = conv(base, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
      stages = [x]
      x = nn.max_pool(x, (3, 3), strides=(2, 2),
                      padding="SAME" if self.downsample_padding in ("same", "tf_fixed") else ((1, 1), (1, 1)))
    elif self.stem == "small":
      x = conv(base, (3, 3), name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
      stages = [x]
    else:
      raise ValueError(f"model.stem={self.stem!r}: expected 'imagenet' or 'small'")
    for stage, num_blocks in enumerate(blocks):
      for b in range(num_blocks):
        strides = 2 if stage > 0 and b == 0 else 1
        x = block_cls(base * 2**stage, conv=conv, norm=norm, strides=strides, **block_kw)(x)
      stages.append(x)
    if self.return_stages:
      return stages
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


def feature_dim(depth: int, width: float) -> int:
  """Width of the pooled features of `ResNet(depth, width)`."""
  base = max(1, int(round(64 * width)))
  return base * 8 * (4 if STAGES[depth][0] == "bottleneck" else 1)

