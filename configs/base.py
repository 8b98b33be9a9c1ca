"""The base config: every key with its default (defined in medssl_jax/settings.py, listed there).

Other configs start from `get_base_config()` and set only what differs, then `finalize`. Run as
is (`--config=configs/base.py`), it is the library default: SimCLR on the embedded synthetic data.
"""
from medssl_jax.settings import finalize, get_base_config

__all__ = ["finalize", "get_base_config", "get_config"]


def get_config(arg=None):
  del arg
  return finalize(get_base_config())
