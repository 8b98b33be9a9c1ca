"""Encoder + projection head, the network trained by SimCLR and MICLe."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from medssl_jax.models.heads import ProjectionHead
from medssl_jax.models.resnet import ResNet


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

  def setup(self):
    self.encoder = ResNet(depth=self.depth, width=self.width, stem=self.stem, dtype=self.dtype,
                          bn_momentum=self.bn_momentum, bn_axis_name=self.bn_axis_name)
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
  return ContrastiveModel(depth=model_cfg.depth, width=model_cfg.width, stem=model_cfg.stem,
                          head_layers=model_cfg.head_layers, head_dim=model_cfg.head_dim,
                          dtype=dtypes[model_cfg.dtype], bn_momentum=model_cfg.bn_momentum,
                          bn_axis_name=bn_axis_name, head_batch_norm=head_batch_norm)
