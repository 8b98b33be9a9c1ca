"""Vision Transformer encoders (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

Sizes (Dosovitskiy et al. 2021, Table 1; ViT-S from Touvron et al. 2021, DeiT, as used by DINO,
Caron et al. 2021): ViT-S: width 384, depth 12, 6 heads, MLP 1536; ViT-B: 768, 12, 12, 3072.
`vit("S/16")`, `vit("B/16")` (and the DINO patch-8 variants "S/8", "B/8"; Truong et al. 2021,
Sec. 4, use DINO's patch-8 ViT-S) build them.

Layout (the one timm's `VisionTransformer` and DINO's `vision_transformer.py` share):
  patch embedding: conv p x p / p with bias -> tokens in row-major order of the patch grid;
  a learned class token is prepended and learned position embeddings (class token + patches)
  are added;
  pre-norm blocks: x + Attn(LN(x)), then x + MLP(LN(x)); LayerNorm epsilon 1e-6; multi-head
  self-attention with one qkv projection (with bias) whose 3*dim outputs are ordered
  [q | k | v], each split into heads of dim/heads contiguous channels; logits scaled by
  head_dim**-0.5; softmax in float32;
  MLP dim -> mlp_dim -> dim with the exact (erf) GELU, not the tanh approximation: PyTorch's
  nn.GELU default, which timm and DINO use, so ported weights give the same activations;
  a final LayerNorm.

Output: the class token after the final LayerNorm (dim features). With `return_last_k_cls=k`
it is instead the concatenation of the class tokens output by the last k blocks, in block
order, EACH passed through the final LayerNorm (the same parameters), as DINO's linear
evaluation does (`get_intermediate_layers` applies `self.norm` to every returned block
output); for ViT-S and k = 4 this is Truong's 4 x 384 = 1536-d DINO embedding. The last
`dim` features of the k > 0 output equal the k = 0 output.

Position embeddings are fixed to the image size seen at initialisation (num_patches + 1
tokens); they are not interpolated, and applying the model to another size is an error
(DINO/timm interpolate bicubically; a port of weights trained at 224 px needs 224 px inputs
here). There is no dropout by default (`dropout_rate` = 0, as DINO's and timm's ViT-S/B);
with a rate > 0 it is applied after the attention projection and after the MLP, in training.

Attention probabilities of every block are stored with `sow` in the "intermediates"
collection as `blocks_N/attn/attention` (shape batch x heads x tokens x tokens); apply with
`mutable=["intermediates"]` to read them.

Parameter names follow timm's state_dict so a weight port is a mechanical rename ('.' -> '/',
`blocks.N.` -> `blocks_N/`, Linear/Conv `weight` -> `kernel` transposed to (in, out) or
(kh, kw, in, out), LayerNorm `weight` -> `scale`):
  patch_embed.proj.{weight,bias}   -> patch_embed/proj/{kernel,bias}
  cls_token, pos_embed             -> cls_token (1, 1, dim), pos_embed (1, 1 + patches, dim)
  blocks.N.norm1.*, blocks.N.attn.qkv.*, blocks.N.attn.proj.*, blocks.N.norm2.*,
  blocks.N.mlp.fc1.*, blocks.N.mlp.fc2.*
                                   -> blocks_N/{norm1, attn/qkv, attn/proj, norm2, mlp/fc1, mlp/fc2}/*
  norm.*                           -> norm/*
(DINO's official checkpoints use the same names.) timm's `head` has no counterpart.

Initialisation (DINO's): linear kernels N(0, 0.02), zero biases; class token and position
embeddings N(0, 0.02); LayerNorm scale 1, bias 0; the patch-embedding kernel LeCun normal.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medssl_jax.errors import UserError

PRESETS = {
    "S/16": dict(patch_size=16, dim=384, depth=12, num_heads=6, mlp_dim=1536),
    "B/16": dict(patch_size=16, dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "S/8": dict(patch_size=8, dim=384, depth=12, num_heads=6, mlp_dim=1536),
    "B/8": dict(patch_size=8, dim=768, depth=12, num_heads=12, mlp_dim=3072),
    # ViT-Ti/16 (Touvron et al. 2021, DeiT; timm's vit_tiny_patch16_224, DINO's vit_tiny).
    "Ti/16": dict(patch_size=16, dim=192, depth=12, num_heads=3, mlp_dim=768),
    # Not a published model: a 2-block, 48-wide ViT for tests and CPU demos (patch 8, so a 32 px
    # image has 16 patches).
    "test": dict(patch_size=8, dim=48, depth=2, num_heads=3, mlp_dim=192),
}

# `input_norm`: what the weights expect of [0, 1] images. 'imagenet': (x - ImageNet mean) / std
# (DINO; timm's ResNets); 'inception': (x - 0.5) / 0.5, i.e. [-1, 1] (timm's default ViT-S/16 and
# ViT-B/16 weights, augreg: their pretrained_cfg mean = std = 0.5); 'none': as they are.
INPUT_NORMS = {"none": None, "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
               "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}

LN_EPSILON = 1e-6


def scaled_dot_product_attention(q, k, v):
  """Softmax(q k^T / sqrt(d)) v for (batch, heads, tokens, head_dim) arrays.

  Returns (output, probabilities); the probabilities are float32, (batch, heads, tokens, tokens),
  and each row sums to 1 over the last axis.
  """
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32) * scale
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), v)
  return out, probs


def _dense(features, dtype, name):
  return nn.Dense(features, dtype=dtype, kernel_init=nn.initializers.normal(0.02),
                  bias_init=nn.initializers.zeros, name=name)


class Attention(nn.Module):
  num_heads: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = True):
    batch, tokens, dim = x.shape
    head_dim = dim // self.num_heads
    qkv = _dense(3 * dim, self.dtype, "qkv")(x)
    qkv = qkv.reshape(batch, tokens, 3, self.num_heads, head_dim).transpose(2, 0, 3, 1, 4)
    out, probs = scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
    self.sow("intermediates", "attention", probs)
    out = out.transpose(0, 2, 1, 3).reshape(batch, tokens, dim)
    out = _dense(dim, self.dtype, "proj")(out)
    return nn.Dropout(self.dropout_rate, deterministic=not train or self.dropout_rate == 0)(out)


class Mlp(nn.Module):
  hidden_dim: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = True):
    dim = x.shape[-1]
    x = nn.gelu(_dense(self.hidden_dim, self.dtype, "fc1")(x), approximate=False)
    x = _dense(dim, self.dtype, "fc2")(x)
    return nn.Dropout(self.dropout_rate, deterministic=not train or self.dropout_rate == 0)(x)


class Block(nn.Module):
  """Pre-norm transformer block: x + Attn(LN(x)); x + MLP(LN(x))."""
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = True):
    norm = lambda name: nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype, name=name)
    x = x + Attention(self.num_heads, self.dtype, self.dropout_rate, name="attn")(norm("norm1")(x), train)
    return x + Mlp(self.mlp_dim, self.dtype, self.dropout_rate, name="mlp")(norm("norm2")(x), train)


class PatchEmbed(nn.Module):
  patch_size: int
  dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    p = self.patch_size
    x = nn.Conv(self.dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                kernel_init=nn.initializers.lecun_normal(), name="proj")(x)
    return x.reshape(x.shape[0], -1, self.dim)   # (batch, rows * cols, dim), row-major


class ViT(nn.Module):
  """ViT encoder; returns the normalised class token(s) as float32 features (no classifier)."""
  patch_size: int = 16
  dim: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_dim: int = 1536
  return_last_k_cls: int = 0
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  input_norm: str = "none"        # a key of INPUT_NORMS, applied to the [0, 1] input first
  # True (the `model.arch='vit'` encoder, models/contrastive.py): one constant float32 scalar
  # `batch_stats/placeholder` = 0, never read. A ViT has no batch statistics, but every run state,
  # checkpoint and weight-loading path of this project carries an encoder `batch_stats` tree
  # (Orbax does not save an empty one); this keeps that tree non-empty.
  batch_stats_placeholder: bool = False

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.batch_stats_placeholder:
      self.variable("batch_stats", "placeholder", lambda: jnp.zeros((), jnp.float32))
    if self.input_norm not in INPUT_NORMS:
      raise ValueError(f"model.input_norm={self.input_norm!r}: expected one of {sorted(INPUT_NORMS)}")
    if INPUT_NORMS[self.input_norm] is not None:
      if x.shape[-1] != 3:
        raise ValueError(f"model.input_norm={self.input_norm!r} needs RGB inputs (data.channels=3); "
                         f"got {x.shape[-1]} channels")
      mean, std = INPUT_NORMS[self.input_norm]
      x = (x.astype(jnp.float32) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    if self.dim % self.num_heads:
      raise ValueError(f"ViT dim={self.dim} is not divisible by num_heads={self.num_heads}")
    if not 0 <= self.return_last_k_cls <= self.depth:
      raise ValueError(f"return_last_k_cls={self.return_last_k_cls} must be in [0, depth={self.depth}]")
    _, height, width, _ = x.shape
    p = self.patch_size
    if height % p or width % p:
      raise UserError(f"image size {height}x{width} (data.image_size) is not a multiple of the patch size {p} of the ViT; "
                      f"choose a data.image_size divisible by {p}")
    num_tokens = (height // p) * (width // p) + 1
    if self.has_variable("params", "pos_embed"):
      fixed = self.get_variable("params", "pos_embed").shape[1]
      if fixed != num_tokens:
        raise ValueError(f"{height}x{width} images give {num_tokens} tokens, but the position embeddings "
                         f"were initialised for {fixed}; they are not interpolated")
    x = PatchEmbed(p, self.dim, self.dtype, name="patch_embed")(x.astype(self.dtype))
    cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, self.dim))
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, num_tokens, self.dim))
    cls = jnp.broadcast_to(cls.astype(self.dtype), (x.shape[0], 1, self.dim))
    x = jnp.concatenate([cls, x], axis=1) + pos.astype(self.dtype)
    norm = nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype, name="norm")
    class_tokens = []
    for i in range(self.depth):
      x = Block(self.num_heads, self.mlp_dim, self.dtype, self.dropout_rate, name=f"blocks_{i}")(x, train)
      if i >= self.depth - self.return_last_k_cls:
        class_tokens.append(x[:, 0])
    if not class_tokens:
      class_tokens = [x[:, 0]]   # LayerNorm is per token: norm(x)[:, 0] == norm(x[:, 0])
    return jnp.concatenate([norm(t) for t in class_tokens], axis=-1).astype(jnp.float32)


def vit(variant: str, **kw) -> ViT:
  """`ViT` with the sizes of `variant` (a key of PRESETS); `kw` sets other fields."""
  if variant not in PRESETS:
    raise ValueError(f"ViT variant {variant!r} is not one of {sorted(PRESETS)}")
  return ViT(**{**PRESETS[variant], **kw})


def feature_dim(variant_or_dim: str | int, return_last_k_cls: int = 0) -> int:
  """Width of the features `ViT` returns: dim, or k * dim with `return_last_k_cls=k`."""
  dim = PRESETS[variant_or_dim]["dim"] if isinstance(variant_or_dim, str) else int(variant_or_dim)
  return dim * max(1, return_last_k_cls)
