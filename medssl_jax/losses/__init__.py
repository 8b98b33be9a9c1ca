"""Losses: small pure functions, one per file."""
from medssl_jax.losses.barlow_twins import barlow_twins_loss, barlow_twins_terms, batch_normalize, cross_correlation
from medssl_jax.losses.byol import byol_loss, normalized_mse
from medssl_jax.losses.classification import masked_sigmoid_cross_entropy, softmax_cross_entropy
from medssl_jax.losses.dice import dice_bce_loss, soft_dice_loss
from medssl_jax.losses.dino import dino_loss, dino_multicrop_loss, update_center
from medssl_jax.losses.info_nce import info_nce, info_nce_with_accuracy
from medssl_jax.losses.nt_xent import nt_xent, nt_xent_with_accuracy
from medssl_jax.losses.simsiam import negative_cosine, simsiam_loss
from medssl_jax.losses.swav import sinkhorn_codes, swapped_cross_entropy, swav_loss
from medssl_jax.losses.vicreg import covariance_term, variance_term, vicreg_loss, vicreg_terms
