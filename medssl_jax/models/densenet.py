"""DenseNet-BC encoders (Huang et al. 2017, "Densely Connected Convolutional Networks").

DenseNet-121 is the second MoCo-CXR backbone (Sowrirajan et al. 2021, Sec. 3; ~7.0M parameters
without the classifier). The layout is torchvision's `densenet121` (Huang et al. 2017, Table 1,
DenseNet-BC with compression 0.5):
  stem: 7x7/2 conv (64, pad 3) + BN + ReLU + 3x3/2 max pool (pad 1, padded with -inf, as
        PyTorch's MaxPool2d; not "SAME", which pads even-sized inputs on one side only);
  dense blocks of (6, 12, 24, 16) layers, growth rate k = 32; a layer is
        BN-ReLU-1x1 conv (4k channels)-BN-ReLU-3x3 conv (k channels, pad 1), and its output is
        concatenated AFTER its input channels ([input, new], PyTorch's `torch.cat(features, 1)`);
  transitions between blocks: BN-ReLU-1x1 conv halving the channels + 2x2/2 average pool;
  final BN + ReLU, then global average pooling -> 1024-d features (no classifier).
Convolutions have no bias; BN epsilon is 1e-5 (PyTorch's default); no dropout (torchvision's
drop_rate is 0). Depths 169 and 201 use the same growth rate and stem with other block sizes.

Parameter names follow torchvision's `features.*` state_dict so that a weight port is a
mechanical rename: drop the `features.` prefix and replace '.' by '/':
  features.conv0.weight                           -> params conv0/kernel
  features.norm0.{weight,bias}                    -> params norm0/{scale,bias}
  features.norm0.{running_mean,running_var}       -> batch_stats norm0/{mean,var}
  features.denseblockB.denselayerL.{norm1,conv1,norm2,conv2}.*
                                                  -> denseblockB/denselayerL/{norm1,...}/*
  features.transitionT.{norm,conv}.*              -> transitionT/{norm,conv}/*
  features.norm5.*                                -> norm5/*
with B, L, T counted from 1 as in torchvision. Conv weights (out, in, kh, kw) become kernels
(kh, kw, in, out); BN weight -> scale. Because the concatenation order is the same, a 1x1
conv's input channels need no permutation. `num_batches_tracked` has no counterpart.

Batch norm is plain `flax.linen.BatchNorm`, global over a sharded batch under `jax.jit`; pass
`bn_axis_name` inside `shard_map` (see resnet.py). Convolution kernels start from He normal
initialisation with fan_in (torchvision's `kaiming_normal_`), BN scale 1 and bias 0.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from medssl_jax.models.resnet import IMAGENET_MEAN, IMAGENET_STD

ModuleDef = Any

# depth -> dense layers per block (growth rate 32, 64 stem channels; torchvision).
BLOCKS = {
    121: (6, 12, 24, 16),
    169: (6, 12, 32, 32),
    201: (6, 12, 48, 32),
}


class DenseLayer(nn.Module):
  """BN-ReLU-1x1 conv-BN-ReLU-3x3 conv; returns [input, k new channels] concatenated."""
  growth_rate: int
  bn_size: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm(name="norm1")(x))
    y = self.conv(self.bn_size * self.growth_rate, (1, 1), name="conv1")(y)
    y = nn.relu(self.norm(name="norm2")(y))
    y = self.conv(self.growth_rate, (3, 3), padding=[(1, 1), (1, 1)], name="conv2")(y)
    return jnp.concatenate([x, y], axis=-1)


class DenseBlock(nn.Module):
  num_layers: int
  growth_rate: int
  bn_size: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers):
      x = DenseLayer(self.growth_rate, self.bn_size, conv=self.conv, norm=self.norm,
                     name=f"denselayer{i + 1}")(x)
    return x


class Transition(nn.Module):
  """BN-ReLU-1x1 conv to `features` channels, then 2x2/2 average pooling (floor, as PyTorch)."""
  features: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    x = nn.relu(self.norm(name="norm")(x))
    x = self.conv(self.features, (1, 1), name="conv")(x)
    return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


class DenseNet(nn.Module):
  """DenseNet-BC trunk; returns the globally average-pooled features (no classifier).

  `block_config`, when given, replaces the block sizes that `depth` names (used for tiny test
  networks); `growth_rate`, `bn_size` and `num_init_features` default to DenseNet-121's.
  """
  depth: int = 121
  block_config: Sequence[int] | None = None
  growth_rate: int = 32
  bn_size: int = 4
  num_init_features: int = 64
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  input_norm: str = "none"   # 'none' | 'imagenet': [0, 1] RGB inputs -> (x - mean) / std (torchvision weights)

  @nn.compact
  def __call__(self, x, train: bool = True):
    blocks = _block_config(self.depth, self.block_config)
    if self.input_norm == "imagenet":
      if x.shape[-1] != 3:
        raise ValueError(f"model.input_norm='imagenet' needs RGB inputs (data.channels=3); got {x.shape[-1]} channels")
      x = (x.astype(jnp.float32) - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)
    elif self.input_norm != "none":
      raise ValueError(f"model.input_norm={self.input_norm!r}: expected 'none' or 'imagenet' for a DenseNet")
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, "fan_in", "normal"))
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=1e-5, dtype=self.dtype, axis_name=self.bn_axis_name)
    x = x.astype(self.dtype)
    x = conv(self.num_init_features, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv0")(x)
    x = nn.relu(norm(name="norm0")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
    channels = self.num_init_features
    for b, num_layers in enumerate(blocks):
      x = DenseBlock(num_layers, self.growth_rate, self.bn_size, conv=conv, norm=norm,
                     name=f"denseblock{b + 1}")(x)
      channels += num_layers * self.growth_rate
      if b != len(blocks) - 1:
        channels //= 2
        x = Transition(channels, conv=conv, norm=norm, name=f"transition{b + 1}")(x)
    x = nn.relu(norm(name="norm5")(x))
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


def _block_config(depth: int, block_config: Sequence[int] | None) -> tuple[int, ...]:
  if block_config is not None:
    return tuple(block_config)
  if depth not in BLOCKS:
    raise ValueError(f"model.depth={depth} is not a DenseNet depth; expected one of {sorted(BLOCKS)}")
  return BLOCKS[depth]


def feature_dim(depth: int = 121, block_config: Sequence[int] | None = None, growth_rate: int = 32,
                num_init_features: int = 64) -> int:
  """Width of the pooled features of `DenseNet(...)` (1024 for DenseNet-121)."""
  blocks = _block_config(depth, block_config)
  channels = num_init_features
  for b, num_layers in enumerate(blocks):
    channels += num_layers * growth_rate
    if b != len(blocks) - 1:
      channels //= 2
  return channels
