"""Projection heads: SimCLR's MLP with batch norm after every layer, or MoCo v2's plain MLP.

SimCLR (`batch_norm=True`): the hidden layers keep the encoder's width and use ReLU; the last
layer maps to `out_dim` with batch norm but no bias and no ReLU (Chen et al. 2020, SimCLR v2
reference). MoCo v2 (`batch_norm=False`): Linear (with bias) + ReLU per hidden layer, a last
Linear (with bias) to `out_dim`, no batch norm (Chen et al. 2020, "Improved baselines").
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class ProjectionHead(nn.Module):
  num_layers: int = 2
  out_dim: int = 128
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.num_layers < 1:
      raise ValueError(f"model.head_layers={self.num_layers}: need at least 1 layer")
    hidden = x.shape[-1]
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      if not self.batch_norm:
        x = nn.Dense(self.out_dim if last else hidden, dtype=self.dtype, name=f"dense_{i}")(x)
        x = x if last else nn.relu(x)
        continue
      x = nn.Dense(self.out_dim if last else hidden, use_bias=False, dtype=self.dtype,
                   name=f"dense_{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                       use_bias=not last, dtype=self.dtype, axis_name=self.bn_axis_name,
                       name=f"bn_{i}")(x)
      if not last:
        x = nn.relu(x)
    return x.astype(jnp.float32)
