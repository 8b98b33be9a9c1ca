"""Losses: small pure functions, one per file."""
from medssl_jax.losses.nt_xent import nt_xent, nt_xent_with_accuracy
