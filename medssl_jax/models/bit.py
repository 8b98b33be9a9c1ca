"""BiT ResNet (Kolesnikov et al. 2020, "Big Transfer"): pre-activation ResNet v2 with Group Norm and
Weight Standardisation, the supervised ImageNet-21k model Azizi et al. 2021 compare against
(Sec. 5.3: BiT-M ResNet-101x3 is their strongest supervised baseline).

Architecture, as the released BiT models compute it (and timm's `resnetv2_<depth>x<k>_bit`):
- every convolution is weight-standardised: the kernel of each output channel has its mean taken
  away and is divided by its standard deviation (over input channels and space; biased variance
  plus `WS_EPS`), no bias;
- the root: a 7x7 stride-2 convolution (padding 3) to 64k channels, zero padding by 1, a 3x3
  stride-2 max pool with no further padding (no norm, no activation: the blocks pre-activate);
- four stages of bottleneck units (3, 4, 6, 3 for depth 50; 3, 4, 23, 3 for 101; 3, 8, 36, 3 for
  152) with 256k, 512k, 1024k, 2048k output channels, a quarter of that inside; a unit computes
  p = ReLU(GN(x)), then 1x1 conv, GN, ReLU, 3x3 conv (the stage's stride 2 here, padding 1), GN,
  ReLU, 1x1 conv, plus the shortcut: x itself, or (in a stage's first unit) a strided 1x1 conv of p;
- a final GN and ReLU, then the global average pool (features: 2048k wide).
Group Norm has 32 groups and epsilon 1e-5 throughout. k is `width` (the released widths: 1, 2, 3,
4; any multiple of 0.5 builds, so that every layer's channels divide into 32 groups).

Inputs: the released weights were trained on [-1, 1] images: `input_norm='inception'` maps [0, 1]
inputs there ((x - 0.5) / 0.5). The model has no batch statistics; like the ViT it keeps a
placeholder in `batch_stats`, so the project's checkpoints carry that collection as for every encoder.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
INPUT_NORMS = {"none": None, "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}
GROUPS = 32
GN_EPS = 1e-5
WS_EPS = 1e-8  # timm's for its BiT models; the released weights standardise with a negligibly different epsilon


class StdConv(nn.Module):
  """A weight-standardised convolution without bias; `kernel` (kh, kw, in, out) as Flax lays it out."""
  features: int
  kernel_size: tuple
  strides: int = 1
  padding: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                        (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
    mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
    var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
    kernel = (kernel - mean) / jnp.sqrt(var + WS_EPS)
    return jax.lax.conv_general_dilated(x.astype(self.dtype), kernel.astype(self.dtype), (self.strides, self.strides),
                                        [(self.padding, self.padding)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _gn(name: str, dtype):
  return nn.GroupNorm(num_groups=GROUPS, epsilon=GN_EPS, dtype=dtype, name=name)


class Unit(nn.Module):
  """A pre-activation bottleneck unit (module docstring)."""
  out_features: int
  strides: int
  projection: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    mid = self.out_features // 4
    p = nn.relu(_gn("gn_a", self.dtype)(x))
    shortcut = StdConv(self.out_features, (1, 1), self.strides, dtype=self.dtype, name="proj")(p) if self.projection else x
    y = StdConv(mid, (1, 1), dtype=self.dtype, name="conv_a")(p)
    y = nn.relu(_gn("gn_b", self.dtype)(y))
    y = StdConv(mid, (3, 3), self.strides, padding=1, dtype=self.dtype, name="conv_b")(y)
    y = nn.relu(_gn("gn_c", self.dtype)(y))
    y = StdConv(self.out_features, (1, 1), dtype=self.dtype, name="conv_c")(y)
    return y + shortcut


class BiT(nn.Module):
  """BiT ResNet-<depth>x<width>; returns the pooled features (no classifier)."""
  depth: int = 50
  width: float = 1.0
  dtype: Any = jnp.float32
  input_norm: str = "none"

  @nn.compact
  def __call__(self, x, train: bool = True):
    del train  # no batch statistics, no dropout: the same in both modes
    self.variable("batch_stats", "placeholder", lambda: jnp.zeros((), jnp.float32))
    if self.depth not in DEPTHS:
      raise ValueError(f"model.depth={self.depth} is not a BiT depth; expected one of {sorted(DEPTHS)}")
    if self.input_norm not in INPUT_NORMS:
      raise ValueError(f"model.input_norm={self.input_norm!r}: expected one of {sorted(INPUT_NORMS)} for BiT")
    if INPUT_NORMS[self.input_norm] is not None:
      mean, std = INPUT_NORMS[self.input_norm]
      x = (x.astype(jnp.float32) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    x = x.astype(self.dtype)
    base = root_features(self.width)
    x = StdConv(base, (7, 7), 2, padding=3, dtype=self.dtype, name="root_conv")(x)
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    for stage, units in enumerate(DEPTHS[self.depth]):
      for unit in range(units):
        x = Unit(base * 4 * 2**stage, strides=2 if stage > 0 and unit == 0 else 1, projection=unit == 0,
                 dtype=self.dtype, name=f"block{stage + 1}_unit{unit + 1:02d}")(x)
    x = nn.relu(_gn("gn_final", self.dtype)(x))
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


def root_features(width: float) -> int:
  """The root convolution's channels, 64 x width (every later width is a multiple of it)."""
  return int(round(64 * width))


def valid_width(width: float) -> bool:
  """Whether every layer's channel count divides into the 32 groups of Group Norm (a multiple of 0.5)."""
  base = 64 * float(width)
  return base > 0 and base == round(base) and int(round(base)) % GROUPS == 0


def feature_dim(width: float) -> int:
  return root_features(width) * 32
