"""SwAV's network (Caron et al. 2020, Sec. 4 and App. A.1): the encoder, a projection MLP of
`model.head_layers` layers (hidden `swav.projector_hidden` with BN and ReLU, output
`model.head_dim`, 2048 -> 128 in the paper; `siamese.MLP`), the output L2-normalised to z, then the
prototypes: a Linear without bias to K = `swav.num_prototypes` outputs, s = z C. The method keeps
each prototype (a column of C) at unit norm (`methods/swav.py normalize_prototypes`), so s holds
cosines.

`SwAVModel(x, train)` returns (features, (z, s)); sub-modules 'encoder' (as `ContrastiveModel`'s,
so its weights load by name into `Classifier`), 'head' and 'prototypes' (params['prototypes']['kernel'],
(D, K)).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medssl_jax.models.contrastive import check_arch, make_encoder, resnet_settings, vit_kw
from medssl_jax.models.siamese import DTYPES, MLP


class SwAVModel(nn.Module):
  depth: int = 50
  width: float = 1.0
  stem: str = "imagenet"
  head_layers: int = 2
  head_hidden: int = 2048
  head_dim: int = 128
  num_prototypes: int = 3000
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  arch: str = "resnet"
  resnet_kw: tuple = ()
  vit_kw: tuple = ()

  def setup(self):
    self.encoder = make_encoder(self.arch, self.depth, self.width, self.stem, self.dtype, self.bn_momentum,
                                None, self.resnet_kw, self.vit_kw)
    self.head = MLP(self.head_hidden, self.head_dim, self.head_layers, False, out_bias=True, dtype=self.dtype,
                    bn_momentum=self.bn_momentum)
    self.prototypes = nn.Dense(self.num_prototypes, use_bias=False, dtype=jnp.float32, name="prototypes")

  def __call__(self, x, train: bool = True):
    h = self.encoder(x, train=train)
    z = self.head(h, train=train).astype(jnp.float32)
    z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-12))
    return h, (z, self.prototypes(z))

  def features(self, x, train: bool = False):
    return self.encoder(x, train=train)


def swav_from_config(model_cfg, *, projector_hidden: int, num_prototypes: int) -> SwAVModel:
  """The network of `model_cfg` (encoder, `model.head_layers`, `model.head_dim`) with SwAV's widths."""
  if model_cfg.dtype not in DTYPES:
    raise ValueError(f"model.dtype={model_cfg.dtype!r}: expected one of {sorted(DTYPES)}")
  check_arch(model_cfg)
  return SwAVModel(arch=getattr(model_cfg, "arch", "resnet"), depth=model_cfg.depth, width=model_cfg.width,
                   stem=model_cfg.stem, head_layers=int(model_cfg.head_layers), head_hidden=int(projector_hidden),
                   head_dim=int(model_cfg.head_dim), num_prototypes=int(num_prototypes), dtype=DTYPES[model_cfg.dtype],
                   bn_momentum=model_cfg.bn_momentum, resnet_kw=tuple(sorted(resnet_settings(model_cfg).items())),
                   vit_kw=vit_kw(model_cfg))
