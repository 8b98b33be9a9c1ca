"""Pretraining methods, one file each, registered by name (`registry.py`, interface in `base.py`).

  simclr.py    SimCLR (NT-Xent over the global batch); with pairing='case' it is MICLe
  moco_v2.py   MoCo v2 (momentum key encoder, queue of negatives, InfoNCE)
  byol.py      BYOL (predictor, EMA target with the cosine momentum schedule, normalised MSE)
  simsiam.py   SimSiam (predictor, stop-gradient on the other view's projection, no EMA)
  barlow_twins.py  Barlow Twins (cross-correlation of batch-normalised embeddings over the global batch)
  vicreg.py    VICReg (variance, invariance and covariance terms over the global batch)
  dino.py      DINO (self-distillation: EMA teacher, centered and sharpened softmax targets), multi-crop
  swav.py      SwAV (swapped prediction of Sinkhorn-Knopp cluster codes over prototypes), multi-crop, queue

`get(config.method)` returns the method object. Adding a method: one file here with a class
decorated by `@register`, its loss in `medssl_jax/losses/`, a config and a test.
"""
from medssl_jax.methods.base import Method, create_state, interleave_views, jit_train_step, synthetic_batch
from medssl_jax.methods.registry import get, names, register, unregister
from medssl_jax.methods import barlow_twins  # noqa: F401  (registers 'barlow_twins')
from medssl_jax.methods import byol  # noqa: F401  (registers 'byol')
from medssl_jax.methods import dino  # noqa: F401  (registers 'dino')
from medssl_jax.methods import moco_v2  # noqa: F401  (registers 'moco_v2')
from medssl_jax.methods import simclr  # noqa: F401  (registers 'simclr')
from medssl_jax.methods import simsiam  # noqa: F401  (registers 'simsiam')
from medssl_jax.methods import swav  # noqa: F401  (registers 'swav')
from medssl_jax.methods import vicreg  # noqa: F401  (registers 'vicreg')
