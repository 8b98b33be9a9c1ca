"""Dynamic Visual Meta-Embedding (DVME) head: frozen features of several encoders fused by attention.

Truong et al. 2021 (papers/truong2021_ssl_transfer_dvme.txt, Sec. 5.6, App. C, E, F; numbers in
PROTOCOLS.md section 2). Each source embedding (N, d_i) gets its own Dense to `proj_dim` = 512;
the projected components go through a self-attention module "the same as in the Vision
Transformer" (Sec. 5.6, "implemented based on the timm library", App. C); the result is flattened
to (N, S * 512), layer-normalised over all S * 512 features (Listing 1: `LayerNorm(proj_dim*3)`
applied after `view(N, -1)`), projected to 512 + ReLU, dropout 0.2, and a Dense to the classes.
`attention=False` is the paper's ablation "DVME w/o self-attention" (App. C): the same network
without the attention module.

What the paper leaves open, and the readings taken here (fields, so the other readings can be run):

* Tokens. Listing 1 reshapes the 1536-d concatenation to (N, 1536, 1), i.e. every scalar feature
  is a token of width 1; the text says attention is "across different components of the
  meta-embedding", and App. F reports weights per source. The default `tokens="source"` makes one
  512-wide token per source, (N, S, 512). `tokens="scalar"` is Listing 1's literal layout,
  (N, S * 512, 1). Appendix G's 3.6 M trainable parameters fit the scalar layout (3.68 M for
  three sources and two classes; a 512-wide ViT block alone adds 3.15 M, 6.83 M in all), so the
  paper's runs most likely used it (tests/models/test_dvme.py counts both).
* Block. `block="vit"` (default): timm's pre-norm ViT block, x + MHSA(LN(x)) then
  x + MLP(LN(x)), MLP ratio 4 with exact GELU, LayerNorm eps 1e-6 as in ViT, no dropout inside
  (timm's defaults). `block="attention"`: timm's `Attention` alone (fused qkv, softmax, output
  projection; no norm, MLP or residual). With width-1 tokens a pre-norm block is degenerate
  (LayerNorm of one number is its bias, so every attention row is uniform), hence
  `tokens="scalar"` requires `block="attention"`.
* Heads: not stated; 8 (timm's default, head width 64 at 512) for `tokens="source"`; the scalar
  layout needs 1 (width-1 tokens). qkv bias on (ViT's setting).
* Initialisation: Flax defaults (LeCun normal kernels, zero biases); the paper does not say.

Attention weights: the module sows the softmax probabilities, (N, heads, T, T) with T tokens, as
`intermediates/attention` (apply with `mutable=["intermediates"]`), and the 512-d embedding after
the ReLU (for t-SNE) as `intermediates/embedding`. `source_attention` turns probabilities into one
weight per source (the attention mass each source's tokens receive, averaged over heads and
query tokens, so the weights of a sample sum to 1), `source_attention_matrix` into the S x S
query-source -> key-source matrix, and `attention_by_class` averages either per class (App. F
averages over the test set).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class SelfAttention(nn.Module):
  """Multi-head scaled dot-product self-attention over (N, T, D); returns (output, probs)."""
  num_heads: int = 8
  qkv_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, t, d = x.shape
    if d % self.num_heads:
      raise ValueError(f"token width {d} is not divisible by num_heads={self.num_heads}")
    hd = d // self.num_heads
    qkv = nn.Dense(3 * d, use_bias=self.qkv_bias, dtype=self.dtype, name="qkv")(x)
    qkv = qkv.reshape(n, t, 3, self.num_heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]            # (N, T, H, hd) each
    logits = jnp.einsum("nqhc,nkhc->nhqk", q, k) / jnp.sqrt(jnp.asarray(hd, jnp.float32))
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)   # (N, H, T, T), rows sum to 1
    out = jnp.einsum("nhqk,nkhc->nqhc", probs.astype(v.dtype), v).reshape(n, t, d)
    return nn.Dense(d, dtype=self.dtype, name="proj")(out), probs


class AttentionBlock(nn.Module):
  """The attention module: a pre-norm ViT block (`kind="vit"`) or the attention alone."""
  num_heads: int = 8
  kind: str = "vit"
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    attn = SelfAttention(self.num_heads, self.qkv_bias, self.dtype, name="attn")
    if self.kind == "attention":
      return attn(x)
    if self.kind != "vit":
      raise ValueError(f"block={self.kind!r}: expected 'vit' or 'attention'")
    d = x.shape[-1]
    y, probs = attn(nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm1")(x))
    x = x + y
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm2")(x)
    y = nn.Dense(int(d * self.mlp_ratio), dtype=self.dtype, name="mlp_fc1")(y)
    y = nn.gelu(y, approximate=False)
    y = nn.Dense(d, dtype=self.dtype, name="mlp_fc2")(y)
    return x + y, probs


class DVME(nn.Module):
  """DVME head on a list/tuple of source embeddings [(N, d_1), ..., (N, d_S)] -> (N, num_classes).

  Parameters are named `source_{i}` (per-source projections, in input order), `attention_block`
  (absent when `attention=False`), `norm`, `proj` and `classifier`.
  """
  num_classes: int
  proj_dim: int = 512
  hidden_dim: int = 512
  dropout_rate: float = 0.2
  attention: bool = True
  tokens: str = "source"
  block: str = "vit"
  num_heads: int = 8
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, sources: Sequence[jax.Array], deterministic: bool = True):
    if not isinstance(sources, (list, tuple)) or not sources:
      raise ValueError("DVME takes a non-empty list or tuple of (N, d_i) source embeddings")
    n = sources[0].shape[0]
    for i, s in enumerate(sources):
      if s.ndim != 2 or s.shape[0] != n:
        raise ValueError(f"source {i} has shape {s.shape}; expected ({n}, d_{i})")
    if self.tokens not in ("source", "scalar"):
      raise ValueError(f"tokens={self.tokens!r}: expected 'source' or 'scalar'")
    if self.attention and self.tokens == "scalar" and self.block != "attention":
      raise ValueError("tokens='scalar' (width-1 tokens) needs block='attention': a pre-norm block "
                       "layer-normalises each single number to a constant")
    comps = [nn.Dense(self.proj_dim, dtype=self.dtype, name=f"source_{i}")(s)
             for i, s in enumerate(sources)]
    x = jnp.stack(comps, axis=1)                                 # (N, S, P)
    if self.tokens == "scalar":
      x = x.reshape(n, -1, 1)                                    # (N, S * P, 1): Listing 1
    if self.attention:
      x, probs = AttentionBlock(self.num_heads, self.block, self.mlp_ratio, self.qkv_bias,
                                self.dtype, name="attention_block")(x)
      self.sow("intermediates", "attention", probs)
    x = x.reshape(n, -1)                                         # (N, S * P)
    x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x)
    x = nn.relu(nn.Dense(self.hidden_dim, dtype=self.dtype, name="proj")(x))
    self.sow("intermediates", "embedding", x)
    x = nn.Dropout(self.dropout_rate, deterministic=deterministic)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
    return x.astype(jnp.float32)


def attention_probs(intermediates) -> jax.Array:
  """The sown attention probabilities (N, heads, T, T) from `apply(..., mutable=["intermediates"])`."""
  return intermediates["attention"][0]


def _grouped(probs, tokens_per_source):
  n, h, t, t2 = probs.shape
  if t != t2 or t % tokens_per_source:
    raise ValueError(f"probs {probs.shape}: expected (N, heads, T, T) with T a multiple of "
                     f"tokens_per_source={tokens_per_source}")
  s = t // tokens_per_source
  return probs.reshape(n, h, s, tokens_per_source, s, tokens_per_source)


def source_attention_matrix(probs, tokens_per_source: int = 1) -> jax.Array:
  """(N, heads, T, T) -> (N, S, S): row a, column b = attention mass that source a's query tokens
  put on source b's key tokens (summed over b's tokens), averaged over a's tokens and heads.

  Each row sums to 1. `tokens_per_source` is 1 for `tokens="source"` and `proj_dim` for
  `tokens="scalar"`.
  """
  g = _grouped(jnp.asarray(probs), tokens_per_source)          # (N, H, Sq, Pq, Sk, Pk)
  return g.sum(axis=5).mean(axis=(1, 3))


def source_attention(probs, tokens_per_source: int = 1) -> jax.Array:
  """(N, heads, T, T) -> (N, S): the attention each source receives, i.e. the attention mass on
  its key tokens, averaged over heads and all query tokens. Each sample's weights sum to 1."""
  return source_attention_matrix(probs, tokens_per_source).mean(axis=1)


def attention_by_class(weights, labels, num_classes: int) -> jax.Array:
  """Average per-sample weights (N, ...) over the samples of each class -> (num_classes, ...).

  `labels` are integer classes (N,) or multi-hot (N, num_classes) (a sample counts for every
  positive class). A class without samples gives NaN.
  """
  w = jnp.asarray(weights, jnp.float32)
  labels = jnp.asarray(labels)
  member = (jax.nn.one_hot(labels, num_classes) if labels.ndim == 1
            else labels.astype(jnp.float32))                      # (N, C)
  if member.shape != (w.shape[0], num_classes):
    raise ValueError(f"labels {labels.shape} do not fit weights {w.shape} and {num_classes} classes")
  sums = member.T @ w.reshape(w.shape[0], -1)                     # (C, prod(rest))
  counts = member.sum(axis=0)[:, None]
  means = jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), jnp.nan)
  return means.reshape((num_classes,) + w.shape[1:])
