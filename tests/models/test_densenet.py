"""DenseNet: parameter counts against torchvision's published ones, torchvision-style names,
and the eval-mode forward pass of a tiny DenseNet against a NumPy re-implementation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax.models import densenet
from medssl_jax.models.densenet import DenseNet, feature_dim
from medssl_jax.training.sharding import make_mesh, to_global


def _shapes(module, size=32):
  return jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))


def _count(module):
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(_shapes(module)["params"])))


def _hand_count(blocks, growth=32, bn_size=4, init=64):
  """Parameters from the layer sizes: conv kernels (no bias) + BN scale and bias."""
  n = 7 * 7 * 3 * init + 2 * init                      # conv0 + norm0
  c = init
  for b, layers in enumerate(blocks):
    for _ in range(layers):                             # norm1, conv1 1x1, norm2, conv2 3x3
      n += 2 * c + c * bn_size * growth + 2 * bn_size * growth + 9 * bn_size * growth * growth
      c += growth
    if b != len(blocks) - 1:                            # transition: norm + 1x1 conv to c // 2
      n += 2 * c + c * (c // 2)
      c //= 2
  return n + 2 * c                                      # norm5


def test_densenet121_parameter_count_is_torchvisions():
  # torchvision densenet121: 7,978,856 parameters, of which the 1024x1000 classifier + bias is
  # 1,025,000 -> 6,953,856 without it (MoCo-CXR: ~7.0M). By hand (_hand_count's terms):
  # stem 9,536; block1 335,040; trans1 33,280; block2 919,680; trans2 132,096;
  # block3 2,837,760; trans3 526,336; block4 2,158,080; norm5 2,048 -> 6,953,856.
  assert _hand_count((6, 12, 24, 16)) == 6_953_856
  assert _count(DenseNet(depth=121)) == 6_953_856 == 7_978_856 - (1024 * 1000 + 1000)


@pytest.mark.parametrize("depth,with_classifier,classifier_in", [
    (169, 14_149_480, 1664),   # torchvision densenet169
    (201, 20_013_928, 1920),   # torchvision densenet201
])
def test_deeper_densenet_counts(depth, with_classifier, classifier_in):
  n = _count(DenseNet(depth=depth))
  assert n == with_classifier - (classifier_in * 1000 + 1000) == _hand_count(densenet.BLOCKS[depth])
  assert feature_dim(depth) == classifier_in


def test_torchvision_names_and_shapes():
  shapes = _shapes(DenseNet(depth=121))
  params, stats = shapes["params"], shapes["batch_stats"]
  assert params["conv0"]["kernel"].shape == (7, 7, 3, 64)
  assert set(params["norm0"]) == {"scale", "bias"} and set(stats["norm0"]) == {"mean", "var"}
  for b, layers in enumerate((6, 12, 24, 16)):
    assert sorted(params[f"denseblock{b + 1}"]) == sorted(f"denselayer{i + 1}" for i in range(layers))
  layer6 = params["denseblock1"]["denselayer6"]
  assert set(layer6) == {"norm1", "conv1", "norm2", "conv2"}
  assert layer6["conv1"]["kernel"].shape == (1, 1, 64 + 5 * 32, 128)   # torchvision conv1: (128, 224, 1, 1)
  assert layer6["conv2"]["kernel"].shape == (3, 3, 128, 32)
  assert params["transition1"]["conv"]["kernel"].shape == (1, 1, 256, 128)
  assert params["transition3"]["norm"]["scale"].shape == (1024,)
  assert "transition4" not in params
  assert params["denseblock4"]["denselayer16"]["norm1"]["scale"].shape == (512 + 15 * 32,)
  assert params["norm5"]["scale"].shape == (1024,) and stats["norm5"]["var"].shape == (1024,)
  convs = [m for name, m in _leaf_modules(params) if name.startswith("conv")]
  assert len(convs) == 1 + 2 * 58 + 3 and all(set(m) == {"kernel"} for m in convs)   # no conv bias


def _leaf_modules(tree):
  for name, sub in tree.items():
    if any(isinstance(v, dict) for v in sub.values()):
      yield from _leaf_modules(sub)
    else:
      yield name, sub


def test_densenet121_features_are_1024d():
  assert feature_dim(121) == 1024
  out = jax.eval_shape(lambda: DenseNet(depth=121).init_with_output(
      jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)[0])
  assert out.shape == (2, 1024) and out.dtype == jnp.float32


# ----- NumPy reference of the torchvision layout (eval mode) -----

def _conv(x, k, stride=1, pad=0):
  kh, kw = k.shape[:2]
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, k.shape[3]))
  for i in range(kh):
    for j in range(kw):
      out += x[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :] @ k[i, j]
  return out


def _max_pool_3x3_s2_p1(x):   # PyTorch MaxPool2d(3, 2, padding=1): padding never wins
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  ho, wo = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  return np.max([x[:, i:i + 2 * ho:2, j:j + 2 * wo:2] for i in range(3) for j in range(3)], axis=0)


def _avg_pool_2x2(x):        # PyTorch AvgPool2d(2, 2): odd trailing rows/columns dropped
  h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  x = x[:, :h, :w]
  return x.reshape(x.shape[0], h // 2, 2, w // 2, 2, -1).mean(axis=(2, 4))


def _bn_relu(x, p, s):
  return np.maximum((x - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"], 0)


def _reference(params, stats, x, blocks):
  x = _conv(x, params["conv0"]["kernel"], stride=2, pad=3)
  x = _max_pool_3x3_s2_p1(_bn_relu(x, params["norm0"], stats["norm0"]))
  for b, layers in enumerate(blocks):
    block, block_stats = params[f"denseblock{b + 1}"], stats[f"denseblock{b + 1}"]
    for i in range(layers):
      p, s = block[f"denselayer{i + 1}"], block_stats[f"denselayer{i + 1}"]
      y = _conv(_bn_relu(x, p["norm1"], s["norm1"]), p["conv1"]["kernel"])
      y = _conv(_bn_relu(y, p["norm2"], s["norm2"]), p["conv2"]["kernel"], pad=1)
      x = np.concatenate([x, y], axis=-1)   # torchvision: torch.cat([previous..., new], 1)
    if b != len(blocks) - 1:
      t, ts = params[f"transition{b + 1}"], stats[f"transition{b + 1}"]
      x = _avg_pool_2x2(_conv(_bn_relu(x, t["norm"], ts["norm"]), t["conv"]["kernel"]))
  return _bn_relu(x, params["norm5"], stats["norm5"]).mean(axis=(1, 2))


def _randomised(variables, seed=0):
  """Every parameter and statistic random (variances positive), so BN is not the identity."""
  rng = np.random.default_rng(seed)
  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']"):
      return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    scale = 0.3 if "kernel" in name else 0.5
    return (rng.normal(size=leaf.shape) * scale).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, variables)


def test_tiny_densenet_matches_numpy_reference():
  # 20 px: conv0 -> 10 (even, where "SAME" max pooling would pad only one side), max pool -> 5,
  # average pool -> 2 (odd input: floor). Two blocks of 2 layers, growth 4, bottleneck 2 x 4.
  blocks = (2, 2)
  model = DenseNet(block_config=blocks, growth_rate=4, bn_size=2, num_init_features=8)
  x = np.random.default_rng(1).normal(size=(2, 20, 20, 3)).astype(np.float32)
  variables = _randomised(model.init(jax.random.key(0), jnp.asarray(x), train=False))
  out = np.asarray(jax.jit(lambda v, images: model.apply(v, images, train=False))(variables, jnp.asarray(x)))
  params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["params"])
  stats = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["batch_stats"])
  expected = _reference(params, stats, x.astype(np.float64), blocks)
  assert out.shape == (2, feature_dim(block_config=blocks, growth_rate=4, num_init_features=8)) == (2, 16)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_train_mode_updates_batch_stats_and_8_devices_equal_1():
  model = DenseNet(block_config=(2, 2), growth_rate=4, bn_size=2, num_init_features=8)
  x = np.random.default_rng(2).normal(size=(8, 16, 16, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), jnp.asarray(x), train=False)
  step = jax.jit(lambda v, images: model.apply(v, images, train=True, mutable=["batch_stats"]))
  out1, new1 = step(variables, jnp.asarray(x))
  mesh = make_mesh(jax.devices()[:8])
  out8, new8 = step(variables, to_global({"x": x}, mesh)["x"])
  assert not np.allclose(new1["batch_stats"]["norm5"]["mean"], variables["batch_stats"]["norm5"]["mean"])
  np.testing.assert_allclose(np.asarray(out8), np.asarray(out1), rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(new8), jax.tree_util.tree_leaves(new1)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_unknown_depth_is_an_error():
  with pytest.raises(ValueError, match="model.depth=50"):
    DenseNet(depth=50).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
