"""ViT: parameter counts against timm's, timm-style names, output shapes, the forward pass of a
tiny ViT against a NumPy re-implementation, attention probabilities, sharded jit."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax.models.vit import PRESETS, ViT, feature_dim, scaled_dot_product_attention, vit
from medssl_jax.training.sharding import make_mesh, to_global


def _shapes(module, size):
  return jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))


def _count(module, size=224):
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(_shapes(module, size)["params"])))


def _hand_count(dim, depth, mlp, patch=16, size=224):
  """timm VisionTransformer without its head, from the layer sizes (weights + biases)."""
  tokens = (size // patch) ** 2 + 1
  embed = patch * patch * 3 * dim + dim + dim + tokens * dim   # patch_embed.proj, cls_token, pos_embed
  block = (2 * dim                        # norm1
           + dim * 3 * dim + 3 * dim      # attn.qkv
           + dim * dim + dim              # attn.proj
           + 2 * dim                      # norm2
           + dim * mlp + mlp              # mlp.fc1
           + mlp * dim + dim)             # mlp.fc2
  return embed + depth * block + 2 * dim  # + final norm


def test_parameter_counts_match_timm():
  # ViT-S/16 (timm vit_small_patch16_224 without head: 21,665,664). By hand:
  #   patch_embed 16*16*3*384 + 384 = 295,296; cls_token 384; pos_embed 197*384 = 75,648;
  #   block: norm1 768 + qkv 384*1152+1152 = 443,520 + proj 384*384+384 = 147,840 + norm2 768
  #          + fc1 384*1536+1536 = 591,360 + fc2 1536*384+384 = 590,208 = 1,774,464; x12 = 21,293,568;
  #   final norm 768. Total 295,296 + 384 + 75,648 + 21,293,568 + 768 = 21,665,664.
  # ViT-B/16 (timm vit_base_patch16_224 without head: 85,798,656). By hand:
  #   patch_embed 16*16*3*768 + 768 = 590,592; cls_token 768; pos_embed 197*768 = 151,296;
  #   block: norms 2*1,536 = 3,072 + qkv 768*2304+2304 = 1,771,776 + proj 768*768+768 = 590,592
  #          + fc1 768*3072+3072 = 2,362,368 + fc2 3072*768+768 = 2,360,064 = 7,087,872; x12 = 85,054,464;
  #   final norm 1,536. Total 590,592 + 768 + 151,296 + 85,054,464 + 1,536 = 85,798,656.
  assert _hand_count(384, 12, 1536) == 21_665_664
  assert _hand_count(768, 12, 3072) == 85_798_656
  assert _count(vit("S/16")) == 21_665_664
  assert _count(vit("B/16")) == 85_798_656


def test_timm_names_and_shapes():
  params = _shapes(vit("S/16"), 224)["params"]
  assert set(params) == {"patch_embed", "cls_token", "pos_embed", "norm"} | {f"blocks_{i}" for i in range(12)}
  assert params["patch_embed"]["proj"]["kernel"].shape == (16, 16, 3, 384)   # timm (384, 3, 16, 16)
  assert params["cls_token"].shape == (1, 1, 384) and params["pos_embed"].shape == (1, 197, 384)
  block = params["blocks_11"]
  assert set(block) == {"norm1", "attn", "norm2", "mlp"}
  assert block["attn"]["qkv"]["kernel"].shape == (384, 1152) and block["attn"]["qkv"]["bias"].shape == (1152,)
  assert block["attn"]["proj"]["kernel"].shape == (384, 384)
  assert block["mlp"]["fc1"]["kernel"].shape == (384, 1536) and block["mlp"]["fc2"]["kernel"].shape == (1536, 384)
  assert set(block["norm1"]) == {"scale", "bias"} and params["norm"]["scale"].shape == (384,)


@pytest.mark.parametrize("k,width", [(0, 384), (4, 1536)])
def test_output_shapes(k, width):
  assert feature_dim("S/16", k) == width
  out = jax.eval_shape(lambda: vit("S/16", return_last_k_cls=k).init_with_output(
      jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)[0])
  assert out.shape == (2, width) and out.dtype == jnp.float32


# ----- a tiny ViT (32 px, patch 16: 4 patches + class token) against NumPy -----

TINY = dict(patch_size=16, dim=32, depth=3, num_heads=4, mlp_dim=64)


def _tiny(**kw):
  return ViT(**{**TINY, **kw})


def _randomised(params, seed=0):
  """All parameters random (LayerNorm scale and bias too), so no term is trivially 0 or 1."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda a: (rng.normal(size=a.shape) * 0.3).astype(np.float32), params)


def _erf_gelu(x):
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _tanh_gelu(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _layer_norm(x, p):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _reference(p, images, heads, k, gelu=_erf_gelu):
  """timm's forward: returns the normalised class tokens of the last k blocks and the attention."""
  b, size, _, c = images.shape
  patch = p["patch_embed"]["proj"]["kernel"].shape[0]
  g = size // patch
  patches = images.reshape(b, g, patch, g, patch, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, -1)
  x = patches @ p["patch_embed"]["proj"]["kernel"].reshape(-1, p["cls_token"].shape[-1])
  x = x + p["patch_embed"]["proj"]["bias"]
  x = np.concatenate([np.broadcast_to(p["cls_token"], (b, 1, x.shape[-1])), x], axis=1) + p["pos_embed"]
  tokens, dim = x.shape[1:]
  hd = dim // heads
  cls, attention = [], []
  depth = sum(name.startswith("blocks_") for name in p)
  for i in range(depth):
    blk = p[f"blocks_{i}"]
    qkv = _layer_norm(x, blk["norm1"]) @ blk["attn"]["qkv"]["kernel"] + blk["attn"]["qkv"]["bias"]
    qkv = qkv.reshape(b, tokens, 3, heads, hd)
    q, kk, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))   # (b, heads, tokens, hd)
    logits = q @ kk.transpose(0, 1, 3, 2) / math.sqrt(hd)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    attention.append(probs)
    a = (probs @ v).transpose(0, 2, 1, 3).reshape(b, tokens, dim)
    x = x + a @ blk["attn"]["proj"]["kernel"] + blk["attn"]["proj"]["bias"]
    h = gelu(_layer_norm(x, blk["norm2"]) @ blk["mlp"]["fc1"]["kernel"] + blk["mlp"]["fc1"]["bias"])
    x = x + h @ blk["mlp"]["fc2"]["kernel"] + blk["mlp"]["fc2"]["bias"]
    cls.append(x[:, 0])
  feats = np.concatenate([_layer_norm(t, p["norm"]) for t in cls[depth - max(k, 1):]], axis=-1)
  return feats, attention


@pytest.fixture(scope="module")
def tiny_setup():
  images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
  init = jax.jit(lambda x: _tiny().init(jax.random.key(0), x, train=False)["params"])
  params = _randomised(init(jnp.asarray(images)))
  p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  return images, params, p64


@pytest.mark.parametrize("k", [0, 2])
def test_tiny_vit_matches_numpy_reference(tiny_setup, k):
  images, params, p64 = tiny_setup
  model = _tiny(return_last_k_cls=k)
  out, inter = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False, mutable=["intermediates"]))(
      params, jnp.asarray(images))
  expected, attention = _reference(p64, images.astype(np.float64), TINY["num_heads"], k)
  assert out.shape == (2, 32 * max(k, 1))
  tol = 1e-5 * np.abs(expected).max()   # float32 vs float64: ~2e-7 measured
  np.testing.assert_allclose(np.asarray(out), expected, rtol=0, atol=tol)
  # The tanh GELU (~1.4e-4 away) would be outside the tolerance: the test tells the two apart.
  tanh_expected, _ = _reference(p64, images.astype(np.float64), TINY["num_heads"], k, gelu=_tanh_gelu)
  assert np.abs(tanh_expected - expected).max() > 5 * tol
  for i, probs in enumerate(attention):
    got = np.asarray(inter["intermediates"][f"blocks_{i}"]["attn"]["attention"][0])
    np.testing.assert_allclose(got, probs, rtol=1e-4, atol=1e-5)


def test_attention_probabilities_sum_to_one(tiny_setup):
  images, params, _ = tiny_setup
  _, inter = _tiny().apply({"params": params}, jnp.asarray(images), train=False, mutable=["intermediates"])
  for i in range(TINY["depth"]):
    (probs,) = inter["intermediates"][f"blocks_{i}"]["attn"]["attention"]
    probs = np.asarray(probs)
    assert probs.shape == (2, 4, 5, 5) and probs.dtype == np.float32
    assert probs.min() >= 0 and probs.std() > 0.01   # not uniform
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
  # The pure function, against a hand-computed 1-head case: q = (1, 0), keys (1, 0) and (0, 1),
  # scale 1/sqrt(2): probabilities softmax(1/sqrt(2), 0); output mixes v rows with them.
  q = jnp.array([[[[1.0, 0.0]]]])
  kk = jnp.array([[[[1.0, 0.0], [0.0, 1.0]]]])
  v = jnp.array([[[[2.0, 0.0], [0.0, 4.0]]]])
  out, probs = scaled_dot_product_attention(q, kk, v)
  p0 = 1 / (1 + math.exp(-1 / math.sqrt(2)))
  np.testing.assert_allclose(np.asarray(probs)[0, 0, 0], [p0, 1 - p0], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(out)[0, 0, 0], [2 * p0, 4 * (1 - p0)], rtol=1e-6)


def test_last_k_ends_with_the_default_output_and_train_flag_is_deterministic(tiny_setup):
  images, params, _ = tiny_setup
  x = jnp.asarray(images)
  k0 = _tiny().apply({"params": params}, x, train=False)
  k3 = _tiny(return_last_k_cls=3).apply({"params": params}, x, train=True)   # no dropout by default
  np.testing.assert_array_equal(np.asarray(k3[:, -32:]), np.asarray(k0))
  assert not np.allclose(k3[:, :32], k3[:, -32:])


def test_jit_on_8_sharded_devices(tiny_setup):
  _, params, _ = tiny_setup
  images = np.random.default_rng(3).normal(size=(8, 32, 32, 3)).astype(np.float32)
  model = _tiny(return_last_k_cls=2)
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x, train=True))
  single = np.asarray(apply(params, jnp.asarray(images)))
  mesh = make_mesh(jax.devices()[:8])
  sharded_images = to_global({"x": images}, mesh)["x"]
  out = apply(params, sharded_images)
  assert len(mesh.devices.flat) == 8 and len(out.sharding.device_set) == 8
  assert out.shape == (8, 64)
  np.testing.assert_allclose(np.asarray(out), single, rtol=1e-5, atol=1e-5)


def test_errors():
  variables = _tiny().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  with pytest.raises(ValueError, match="not interpolated"):
    _tiny().apply(variables, jnp.zeros((1, 48, 48, 3)), train=False)
  with pytest.raises(ValueError, match="multiple of the patch size"):
    _tiny().init(jax.random.key(0), jnp.zeros((1, 40, 40, 3)))
  with pytest.raises(ValueError, match="return_last_k_cls=4"):
    _tiny(return_last_k_cls=4).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="variant 'L/16'"):
    vit("L/16")
  assert set(PRESETS) == {"S/16", "B/16", "S/8", "B/8", "Ti/16", "test"}


@pytest.mark.parametrize("norm,mean,std", [("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                           ("inception", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
def test_input_norm_standardises_the_input_first(norm, mean, std):
  x = np.random.RandomState(0).rand(2, 32, 32, 3).astype(np.float32)
  variables = _tiny().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  want = _tiny().apply(variables, (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32), train=False)
  got = _tiny(input_norm=norm).apply(variables, x, train=False)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="needs RGB inputs"):
    _tiny(input_norm=norm).apply(variables, x[..., :1], train=False)


def test_batch_stats_placeholder_is_one_constant_scalar():
  v = _tiny(batch_stats_placeholder=True).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=True)
  assert jax.tree_util.tree_map(np.shape, v["batch_stats"]) == {"placeholder": ()}
  _, updates = _tiny(batch_stats_placeholder=True).apply(v, jnp.ones((1, 32, 32, 3)), train=True,
                                                         mutable=["batch_stats"])
  np.testing.assert_array_equal(updates["batch_stats"]["placeholder"], 0.0)
  assert "batch_stats" not in _tiny().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
