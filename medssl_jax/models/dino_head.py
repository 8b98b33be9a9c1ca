"""DINO's network (Caron et al. 2021, Sec. 3.1 and App.): the encoder, then the DINO head: an MLP
of `num_layers` Linear layers (hidden width `hidden_dim`, GELU between, no batch norm: the paper's
default) down to a `bottleneck_dim` output, L2-normalised, then a weight-normalised Linear without
bias to `out_dim` prototypes whose weight norm is fixed to 1 (`norm_last_layer`: each prototype's
column is divided by its own L2 norm). Linear layers start from a truncated normal of std 0.02
and zero biases, as the reference initialises them.

`DINOModel(x, train)` returns (features, logits); sub-modules 'encoder' (as `ContrastiveModel`'s,
so its weights load by name into `Classifier`) and 'head'.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medssl_jax.models.contrastive import check_arch, make_encoder, resnet_settings, vit_kw

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_INIT = nn.initializers.truncated_normal(0.02)


class DINOHead(nn.Module):
  out_dim: int
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  num_layers: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.num_layers < 1:
      raise ValueError(f"the DINO head needs at least 1 layer, got {self.num_layers}")
    for i in range(self.num_layers - 1):
      x = nn.gelu(nn.Dense(self.hidden_dim, dtype=self.dtype, kernel_init=_INIT, name=f"dense_{i}")(x),
                  approximate=False)
    x = nn.Dense(self.bottleneck_dim, dtype=self.dtype, kernel_init=_INIT, name=f"dense_{self.num_layers - 1}")(x)
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))
    v = self.param("last", _INIT, (self.bottleneck_dim, self.out_dim), jnp.float32)
    w = v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, axis=0, keepdims=True), 1e-12))  # unit-norm prototypes
    return x @ w


class DINOModel(nn.Module):
  depth: int = 50
  width: float = 1.0
  stem: str = "imagenet"
  out_dim: int = 65536
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  head_layers: int = 3
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  arch: str = "resnet"
  resnet_kw: tuple = ()
  vit_kw: tuple = ()

  def setup(self):
    self.encoder = make_encoder(self.arch, self.depth, self.width, self.stem, self.dtype, self.bn_momentum,
                                None, self.resnet_kw, self.vit_kw)
    self.head = DINOHead(self.out_dim, self.hidden_dim, self.bottleneck_dim, self.head_layers, self.dtype)

  def __call__(self, x, train: bool = True):
    h = self.encoder(x, train=train)
    return h, self.head(h)

  def features(self, x, train: bool = False):
    return self.encoder(x, train=train)


def dino_from_config(model_cfg, *, out_dim: int, hidden_dim: int) -> DINOModel:
  """`model_cfg`'s encoder with a DINO head of `model.head_layers` layers down to `model.head_dim`."""
  if model_cfg.dtype not in DTYPES:
    raise ValueError(f"model.dtype={model_cfg.dtype!r}: expected one of {sorted(DTYPES)}")
  check_arch(model_cfg)
  return DINOModel(arch=getattr(model_cfg, "arch", "resnet"), depth=model_cfg.depth, width=model_cfg.width,
                   stem=model_cfg.stem, out_dim=int(out_dim), hidden_dim=int(hidden_dim),
                   bottleneck_dim=int(model_cfg.head_dim), head_layers=int(model_cfg.head_layers),
                   dtype=DTYPES[model_cfg.dtype], bn_momentum=model_cfg.bn_momentum,
                   resnet_kw=tuple(sorted(resnet_settings(model_cfg).items())), vit_kw=vit_kw(model_cfg))
