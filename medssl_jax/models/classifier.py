"""Encoder + linear classifier for fine-tuning and linear evaluation.

The encoder sub-module is named 'encoder' exactly as in `ContrastiveModel`, so the encoder
weights of a pretraining checkpoint (or of another fine-tuning run) load by name.
With `frozen_encoder=True` (linear evaluation) the encoder runs with its stored batch-norm
statistics and no gradient flows into it.

`feature_norm='batchnorm'` puts a batch norm without scale or offset between the encoder and
the linear layer, so the head sees standardised features (per feature: zero mean, unit
variance; batch statistics while training, running averages at test time). A linear head
trained by SGD at a fixed learning rate otherwise depends on the scale of the features: the
features of a randomly initialised encoder in inference mode are tiny (ResNet-18 0.25x at 28 px
on PneumoniaMNIST: standard deviation across images about 0.004), and such a head stays at the
majority class. He et al. 2021 (MAE, Sec. A.2 'linear probing') use the same normalisation.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medssl_jax.models.contrastive import check_arch, make_encoder, resnet_settings, vit_kw

FEATURE_NORMS = ("none", "batchnorm")
# 'auto': zeros in linear evaluation, LeCun normal when fine-tuning. 'zeros' in fine-tuning starts
# from logits 0 whatever the scale of the pretrained features (the encoder gets no gradient on
# the first step, the head does).
HEAD_INITS = {"zeros": nn.initializers.zeros, "lecun_normal": nn.initializers.lecun_normal()}


class Classifier(nn.Module):
  num_outputs: int
  depth: int = 50
  width: float = 1.0
  stem: str = "imagenet"
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  frozen_encoder: bool = False
  feature_norm: str = "none"
  head_init: str = "auto"
  arch: str = "resnet"      # 'resnet' | 'densenet' | 'vit' | 'bit' (model.arch; see models/contrastive.py)
  resnet_kw: tuple = ()     # ((name, value), ...) of models/contrastive.py RESNET_DEFAULTS settings
  vit_kw: tuple = ()        # ((name, value), ...) of models/contrastive.py vit_settings

  def setup(self):
    if self.feature_norm not in FEATURE_NORMS:
      raise ValueError(f"finetune.feature_norm={self.feature_norm!r}: expected one of {FEATURE_NORMS}")
    self.encoder = make_encoder(self.arch, self.depth, self.width, self.stem, self.dtype, self.bn_momentum,
                                resnet_kw=self.resnet_kw, vit_kw=self.vit_kw)
    if self.feature_norm == "batchnorm":
      self.norm = nn.BatchNorm(momentum=self.bn_momentum, use_scale=False, use_bias=False, dtype=jnp.float32)
    head_init = self.head_init
    if head_init == "auto":
      head_init = "zeros" if self.frozen_encoder else "lecun_normal"
    if head_init not in HEAD_INITS:
      raise ValueError(f"finetune.head_init={self.head_init!r}: expected 'auto' or one of {sorted(HEAD_INITS)}")
    self.classifier = nn.Dense(self.num_outputs, dtype=jnp.float32, kernel_init=HEAD_INITS[head_init])

  def __call__(self, x, train: bool = True):
    if self.frozen_encoder:
      h = jax.lax.stop_gradient(self.encoder(x, train=False))
    else:
      h = self.encoder(x, train=train)
    if self.feature_norm == "batchnorm":  # learns its statistics in both modes
      h = self.norm(h.astype(jnp.float32), use_running_average=not train)
    return self.classifier(h)


def classifier_from_config(model_cfg, num_outputs: int, frozen_encoder: bool,
                           feature_norm: str = "none", head_init: str = "auto") -> Classifier:
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if model_cfg.dtype not in dtypes:
    raise ValueError(f"model.dtype={model_cfg.dtype!r}: expected one of {sorted(dtypes)}")
  check_arch(model_cfg)
  return Classifier(num_outputs=num_outputs, arch=getattr(model_cfg, "arch", "resnet"), depth=model_cfg.depth,
                    width=model_cfg.width, stem=model_cfg.stem, dtype=dtypes[model_cfg.dtype], bn_momentum=model_cfg.bn_momentum,
                    frozen_encoder=frozen_encoder, feature_norm=feature_norm, head_init=head_init,
                    resnet_kw=tuple(sorted(resnet_settings(model_cfg).items())), vit_kw=vit_kw(model_cfg))
