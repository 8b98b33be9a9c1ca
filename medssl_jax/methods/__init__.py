"""Pretraining methods, one file each, registered by name (`registry.py`, interface in `base.py`).

  simclr.py    SimCLR (NT-Xent over the global batch); with pairing='case' it is MICLe
  moco_v2.py   MoCo v2 (momentum key encoder, queue of negatives, InfoNCE)

`get(config.method)` returns the method object. Adding a method: one file here with a class
decorated by `@register`, its loss in `medssl_jax/losses/`, a config and a test.
"""
from medssl_jax.methods.base import Method, create_state, interleave_views, jit_train_step, synthetic_batch
from medssl_jax.methods.registry import default_configs, get, names, register, unregister
from medssl_jax.methods import moco_v2  # noqa: F401  (registers 'moco_v2')
from medssl_jax.methods import simclr  # noqa: F401  (registers 'simclr')
