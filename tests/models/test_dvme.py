"""DVME head (Truong et al. 2021, Sec. 5.6, App. C, E, F): shapes, attention, ablation, learning."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from medssl_jax.models.dvme import (DVME, attention_by_class, attention_probs, source_attention,
                                    source_attention_matrix)

WIDTHS = (2048, 1536, 64)   # a ResNet-50 pool, DINO's 4 class tokens, a small encoder of ours


def _sources(widths, n, seed=0):
  keys = jax.random.split(jax.random.key(seed), len(widths))
  return [jax.random.normal(k, (n, w)) for k, w in zip(keys, widths)]


def _apply(m):
  """Jitted apply that also returns the sown intermediates (one compile instead of op-by-op)."""
  return jax.jit(functools.partial(m.apply, mutable=["intermediates"]))


def _paths(params):
  return set(traverse_util.flatten_dict(params, sep="/"))


def _count(model, widths):
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), [jnp.zeros((2, w)) for w in widths]))
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))


@pytest.fixture(scope="module")
def full():
  m = DVME(num_classes=3)
  xs = _sources(WIDTHS, 4)
  v = jax.jit(m.init)(jax.random.key(1), xs)
  logits, st = _apply(m)(v, xs)
  return m, xs, v, logits, st["intermediates"]


def test_forward_shapes_for_three_sources_of_different_widths(full):
  _, _, v, logits, inter = full
  assert logits.shape == (4, 3) and logits.dtype == jnp.float32
  assert attention_probs(inter).shape == (4, 8, 3, 3)            # (N, heads, S, S)
  assert inter["embedding"][0].shape == (4, 512)
  p = v["params"]
  for i, w in enumerate(WIDTHS):
    assert p[f"source_{i}"]["kernel"].shape == (w, 512)
  assert p["norm"]["scale"].shape == (3 * 512,)                  # LayerNorm over S * 512 (Listing 1)
  assert p["proj"]["kernel"].shape == (3 * 512, 512)
  assert p["classifier"]["kernel"].shape == (512, 3)


def _ln(x, scale, bias, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * scale + bias


def test_attention_rows_sum_to_one_and_match_a_numpy_reimplementation(full):
  _, xs, v, _, inter = full
  probs = np.asarray(attention_probs(inter), np.float64)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
  assert (probs > 0).all()
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), v["params"])
  comps = np.stack([np.asarray(x, np.float64) @ p[f"source_{i}"]["kernel"] + p[f"source_{i}"]["bias"]
                    for i, x in enumerate(xs)], axis=1)          # (N, S, 512)
  blk = p["attention_block"]
  h = _ln(comps, blk["norm1"]["scale"], blk["norm1"]["bias"], 1e-6)
  qkv = h @ blk["attn"]["qkv"]["kernel"] + blk["attn"]["qkv"]["bias"]     # (N, S, 1536)
  q, k = qkv[..., :512], qkv[..., 512:1024]
  q = q.reshape(4, 3, 8, 64)
  k = k.reshape(4, 3, 8, 64)
  logits = np.einsum("nqhc,nkhc->nhqk", q, k) / 8.0
  ref = np.exp(logits - logits.max(-1, keepdims=True))
  ref /= ref.sum(-1, keepdims=True)
  np.testing.assert_allclose(probs, ref, atol=2e-5)


def test_no_attention_ablation_is_the_full_network_minus_the_block(full):
  _, xs, v, _, _ = full
  ab = DVME(num_classes=3, attention=False)
  va = jax.jit(ab.init)(jax.random.key(1), xs)
  full_paths, ab_paths = _paths(v["params"]), _paths(va["params"])
  block = {q for q in full_paths if q.startswith("attention_block/")}
  assert block and full_paths - block == ab_paths
  for q, a in traverse_util.flatten_dict(va["params"], sep="/").items():
    assert a.shape == traverse_util.flatten_dict(v["params"], sep="/")[q].shape
  # With the full model's remaining weights the ablation is concat -> LayerNorm -> Dense+ReLU -> Dense.
  pa = {k: a for k, a in v["params"].items() if k != "attention_block"}
  out, st = _apply(ab)({"params": pa}, xs)
  assert "attention" not in st["intermediates"]
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), pa)
  z = np.concatenate([np.asarray(x, np.float64) @ p[f"source_{i}"]["kernel"] + p[f"source_{i}"]["bias"]
                      for i, x in enumerate(xs)], axis=1)
  z = _ln(z, p["norm"]["scale"], p["norm"]["bias"], 1e-5)
  z = np.maximum(z @ p["proj"]["kernel"] + p["proj"]["bias"], 0)
  np.testing.assert_allclose(out, z @ p["classifier"]["kernel"] + p["classifier"]["bias"], rtol=1e-4, atol=1e-4)


def test_parameter_counts_by_hand_and_appendix_g():
  w = (2048, 2048, 1536)                                     # SimCLR, SwAV, DINO (Sec. 5.6)
  sources = sum(d * 512 + 512 for d in w)                    # 2,885,120
  tail = 2 * 1536 + (1536 * 512 + 512) + (512 * 2 + 2)       # LayerNorm(1536), proj, 2 classes
  vit = 2 * 1024 + (512 * 1536 + 1536) + (512 * 512 + 512) + (512 * 2048 + 2048) + (2048 * 512 + 512)
  assert _count(DVME(2, attention=False), w) == sources + tail == 3_676_162
  assert _count(DVME(2), w) == sources + tail + vit == 6_828_546
  # Listing 1's literal layout: 1536 width-1 tokens, timm Attention(dim=1, heads=1, qkv_bias=False):
  # qkv 1x3 kernel + proj 1x1 kernel and bias. Appendix G reports 3.6 M trainable parameters for DVME.
  literal = DVME(2, tokens="scalar", block="attention", num_heads=1, qkv_bias=False)
  n = _count(literal, w)
  assert n == sources + tail + 3 + 2 and 3.6e6 <= n < 3.7e6


def test_scalar_tokens_layout_and_its_per_source_weights():
  m = DVME(2, proj_dim=8, hidden_dim=16, tokens="scalar", block="attention", num_heads=1)
  xs = _sources((5, 7, 3), 2)
  v = jax.jit(m.init)(jax.random.key(0), xs)
  _, st = _apply(m)(v, xs)
  probs = attention_probs(st["intermediates"])
  assert probs.shape == (2, 1, 24, 24)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  w = source_attention(probs, tokens_per_source=8)
  assert w.shape == (2, 3)
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(w, np.asarray(probs).mean(axis=(1, 2)).reshape(2, 3, 8).sum(-1), atol=1e-6)
  with pytest.raises(ValueError, match="block='attention'"):
    DVME(2, proj_dim=8, tokens="scalar").init(jax.random.key(0), xs)


def test_dropout_only_when_not_deterministic():
  m = DVME(3, proj_dim=16, hidden_dim=64, dropout_rate=0.5, attention=False)   # dropout follows the block
  xs = _sources((10, 6), 8)
  v = jax.jit(m.init)(jax.random.key(0), xs)
  run = jax.jit(m.apply, static_argnames=("deterministic",))
  a = run(v, xs, deterministic=True)
  np.testing.assert_array_equal(a, run(v, xs))
  b = run(v, xs, deterministic=False, rngs={"dropout": jax.random.key(1)})
  c = run(v, xs, deterministic=False, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(b, a) and not np.allclose(b, c)


def test_inputs_are_checked():
  m = DVME(2, proj_dim=8)
  with pytest.raises(ValueError, match="source 1"):
    m.init(jax.random.key(0), [jnp.zeros((4, 3)), jnp.zeros((5, 3))])
  with pytest.raises(ValueError, match="list or tuple"):
    m.init(jax.random.key(0), jnp.zeros((4, 3)))


@pytest.mark.parametrize("attention", [True, False])
def test_head_learns_classes_carried_by_one_source(attention):
  # Three classes; source 1 (16-d) carries class-dependent means, sources 0 and 2 are pure noise.
  n, widths = 96, (64, 16, 48)
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(3), n // 3)
  xs = [rng.normal(size=(n, w)).astype(np.float32) for w in widths]
  centres = rng.normal(size=(3, 16)).astype(np.float32) * 1.5
  xs[1] = xs[1] + centres[y]
  xs = [jnp.asarray(x) for x in xs]
  m = DVME(3, proj_dim=32, hidden_dim=32, num_heads=4, attention=attention)
  params = jax.jit(m.init)(jax.random.key(0), xs)["params"]
  tx = optax.adam(1e-3)                                       # Truong's optimiser and lr
  opt = tx.init(params)

  logits_of = jax.jit(lambda p: m.apply({"params": p}, xs))

  def acc(p):
    return float((logits_of(p).argmax(-1) == y).mean())

  @jax.jit
  def step(p, o, key):
    def loss(p):
      logits = m.apply({"params": p}, xs, deterministic=False, rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    g = jax.grad(loss)(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o

  before = acc(params)
  for i in range(100):
    params, opt = step(params, opt, jax.random.key(100 + i))
  assert before < 0.6 and acc(params) > 0.9


def test_source_attention_on_hand_made_probabilities():
  # One sample, two heads, three source tokens; each row sums to 1.
  h0 = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
  h1 = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
  probs = np.stack([h0, h1])[None]
  # Mean over heads and queries of each key column: h0 columns (0.9, 0.6, 1.5)/3, h1 (1.5, 0.5, 1.0)/3.
  np.testing.assert_allclose(source_attention(probs), [[0.4, 1.1 / 6, 2.5 / 6]], atol=1e-6)
  np.testing.assert_allclose(source_attention_matrix(probs)[0], (h0 + h1) / 2, atol=1e-6)
  # Two tokens per source: keys {0,1} -> source 0, {2,3} -> source 1; queries likewise.
  p4 = np.array([[0.1, 0.2, 0.3, 0.4],
                 [0.5, 0.5, 0.0, 0.0],
                 [0.0, 0.0, 0.0, 1.0],
                 [0.25, 0.25, 0.25, 0.25]])[None, None]
  np.testing.assert_allclose(source_attention_matrix(p4, 2)[0], [[0.65, 0.35], [0.25, 0.75]], atol=1e-6)
  np.testing.assert_allclose(source_attention(p4, 2)[0], [0.45, 0.55], atol=1e-6)
  with pytest.raises(ValueError):
    source_attention(p4, 3)


def test_attention_by_class_on_hand_made_inputs():
  w = np.array([[0.2, 0.3, 0.5],
                [0.6, 0.2, 0.2],
                [0.4, 0.5, 0.1],
                [0.1, 0.1, 0.8],
                [0.0, 0.4, 0.6]])
  out = np.asarray(attention_by_class(w, np.array([0, 1, 0, 2, 1]), 4))
  np.testing.assert_allclose(out[:3], [[0.3, 0.4, 0.3], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]], atol=1e-6)
  assert np.isnan(out[3]).all()                              # no sample of class 3
  # Multi-hot labels (NIH-style): sample 0 in classes 0 and 1, sample 1 in class 1 only.
  mh = np.array([[1, 1], [0, 1]])
  np.testing.assert_allclose(attention_by_class(w[:2], mh, 2), [[0.2, 0.3, 0.5], [0.4, 0.25, 0.35]], atol=1e-6)
  # Works on (N, S, S) matrices too.
  m = np.arange(2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2)
  np.testing.assert_allclose(attention_by_class(m, np.array([1, 1]), 2)[1], m.mean(0))
