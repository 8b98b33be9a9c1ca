"""Encoder + projector MLP (+ predictor MLP): the network of the non-contrastive methods (BYOL,
SimSiam, Barlow Twins, VICReg; `medssl_jax/methods/`).

Their projectors differ from SimCLR's head (`heads.ProjectionHead`, hidden width = the encoder's)
in width and in where batch norm sits, so the widths are settings here:
- `MLP`: (Linear without bias, BN, ReLU) x (num_layers - 1), then a last Linear to `out_dim`,
  with a bias if `out_bias`; with `out_batch_norm` it is followed by a BN without scale and shift
  (SimSiam's projector). The projector's last Linear has no bias in every method here: each loss
  is blind to a constant shift of z (BYOL / SimSiam: the predictor's first BN removes it; Barlow
  Twins: the loss batch-normalises z; VICReg: its three terms are shift-invariant), so such a
  bias would get no gradient and only move by rounding noise. The predictor's last Linear has one.
- `SiameseModel`: sub-modules 'encoder' (as `ContrastiveModel`'s, so encoder weights load by name
  into `Classifier`), 'head' (the projector) and, when `predictor_hidden` > 0, 'predictor' (a
  2-layer `MLP` from `head_dim` through `predictor_hidden` back to `head_dim`).
  `__call__(x, train)` returns (features, z) without a predictor and (features, (z, p)) with one;
  `project(x, train)` returns (features, z) and never touches the predictor, so a target network
  whose parameters hold no 'predictor' (BYOL's EMA of encoder + projector) runs through it with
  `apply(..., method='project')`.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from medssl_jax.models.contrastive import check_arch, make_encoder, resnet_settings, vit_kw

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class MLP(nn.Module):
  hidden_dim: int
  out_dim: int
  num_layers: int = 2
  out_batch_norm: bool = False
  out_bias: bool = True
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.num_layers < 1:
      raise ValueError(f"an MLP needs at least 1 layer, got {self.num_layers}")
    for i in range(self.num_layers - 1):
      x = nn.Dense(self.hidden_dim, use_bias=False, dtype=self.dtype, name=f"dense_{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype,
                       axis_name=self.bn_axis_name, name=f"bn_{i}")(x)
      x = nn.relu(x)
    last = self.num_layers - 1
    x = nn.Dense(self.out_dim, use_bias=self.out_bias and not self.out_batch_norm, dtype=self.dtype, name=f"dense_{last}")(x)
    if self.out_batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5, use_bias=False,
                       use_scale=False, dtype=self.dtype, axis_name=self.bn_axis_name, name=f"bn_{last}")(x)
    return x.astype(jnp.float32)


class SiameseModel(nn.Module):
  """Returns (features, z) or, with a predictor, (features, (z, p)); see the module docstring."""
  depth: int = 50
  width: float = 1.0
  stem: str = "imagenet"
  head_layers: int = 2
  head_hidden: int = 4096
  head_dim: int = 256
  head_out_batch_norm: bool = False
  predictor_hidden: int = 0      # 0: no predictor (Barlow Twins, VICReg)
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  arch: str = "resnet"
  resnet_kw: tuple = ()
  vit_kw: tuple = ()

  def setup(self):
    self.encoder = make_encoder(self.arch, self.depth, self.width, self.stem, self.dtype, self.bn_momentum,
                                self.bn_axis_name, self.resnet_kw, self.vit_kw)
    self.head = MLP(self.head_hidden, self.head_dim, self.head_layers, self.head_out_batch_norm, out_bias=False,
                    dtype=self.dtype, bn_momentum=self.bn_momentum, bn_axis_name=self.bn_axis_name)
    if self.predictor_hidden:
      self.predictor = MLP(self.predictor_hidden, self.head_dim, 2, False, out_bias=True, dtype=self.dtype,
                           bn_momentum=self.bn_momentum, bn_axis_name=self.bn_axis_name)

  def __call__(self, x, train: bool = True):
    h, z = self.project(x, train=train)
    if self.predictor_hidden:
      return h, (z, self.predictor(z, train=train))
    return h, z

  def project(self, x, train: bool = True):
    h = self.encoder(x, train=train)
    return h, self.head(h, train=train)

  def features(self, x, train: bool = False):
    return self.encoder(x, train=train)


def siamese_from_config(model_cfg, *, projector_hidden: int, predictor_hidden: int = 0,
                        projector_out_batch_norm: bool = False) -> SiameseModel:
  """The network of `model_cfg` (encoder, `model.head_layers`, `model.head_dim`) with the method's widths."""
  if model_cfg.dtype not in DTYPES:
    raise ValueError(f"model.dtype={model_cfg.dtype!r}: expected one of {sorted(DTYPES)}")
  check_arch(model_cfg)
  return SiameseModel(arch=getattr(model_cfg, "arch", "resnet"), depth=model_cfg.depth, width=model_cfg.width,
                      stem=model_cfg.stem, head_layers=int(model_cfg.head_layers), head_hidden=int(projector_hidden),
                      head_dim=int(model_cfg.head_dim), head_out_batch_norm=projector_out_batch_norm,
                      predictor_hidden=int(predictor_hidden), dtype=DTYPES[model_cfg.dtype],
                      bn_momentum=model_cfg.bn_momentum, resnet_kw=tuple(sorted(resnet_settings(model_cfg).items())),
                      vit_kw=vit_kw(model_cfg))
