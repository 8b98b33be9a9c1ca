"""Encoder sizes against the published ones; every depth/width initialises and runs a step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax import methods
from medssl_jax.models import ProjectionHead, ResNet, feature_dim
from medssl_jax.training.sharding import make_mesh, to_global
from tests.helpers import tiny_config


def _count(module, size=224):
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  return sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes["params"]))


@pytest.mark.parametrize("depth,width,published", [
    (50, 1, 23.5e6),     # ResNet-50 without the classifier (He et al. 2016: 25.6M with it)
    (152, 2, 233e6),     # ResNet-152 (2x), Azizi et al. 2021 Sec. 5.3
    (50, 4, 375e6),      # ResNet-50 (4x), SimCLR (Chen et al. 2020) Table 13 (with classifier: 375M)
    (18, 1, 11.2e6),     # ResNet-18 without the classifier (11.7M with it)
])
def test_parameter_counts_match_published(depth, width, published):
  n = _count(ResNet(depth=depth, width=width))
  tolerance = 0.01 if (depth, width) != (50, 4) else 0.03  # 375M includes the 8192x1000 classifier
  assert abs(n - published) / published < tolerance, f"ResNet-{depth} ({width}x): {n / 1e6:.2f}M"


def test_exact_resnet50_count():
  # 23,508,032 = torchvision's resnet50 (25,557,032) minus its 2048x1000 fc layer and bias.
  assert _count(ResNet(depth=50, width=1)) == 23_508_032


def test_feature_dim_and_head_shapes():
  assert feature_dim(50, 1) == 2048 and feature_dim(50, 4) == 8192 and feature_dim(18, 1) == 512
  x = jnp.zeros((4, 32, 32, 3))
  head = ProjectionHead(num_layers=3, out_dim=128)
  variables = head.init(jax.random.key(0), jnp.zeros((4, 2048)), train=False)
  assert variables["params"]["dense_0"]["kernel"].shape == (2048, 2048)
  assert variables["params"]["dense_2"]["kernel"].shape == (2048, 128)
  assert "bias" not in variables["params"]["bn_2"]   # last layer: BN without bias, no ReLU
  out = ResNet(depth=18, width=0.25, stem="small").init_with_output(jax.random.key(0), x, train=False)[0]
  assert out.shape == (4, feature_dim(18, 0.25))


def test_last_bn_of_each_block_starts_at_zero():
  variables = ResNet(depth=50, width=0.125).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  block = variables["params"]["BottleneckBlock_0"]
  assert np.all(block["BatchNorm_2"]["scale"] == 0)
  assert np.all(block["BatchNorm_0"]["scale"] == 1)


@pytest.mark.parametrize("depth,width", [(34, 0.125), (101, 0.0625)])
def test_deep_and_narrow_variants_run_a_step(depth, width):
  config = tiny_config(batch_size=8, image_size=32, depth=depth, width=width)
  mesh = make_mesh(jax.devices()[:1])
  state = methods.create_state(config, mesh, jax.random.key(0))
  batch = methods.synthetic_batch(config, np.random.default_rng(0))
  _, metrics = methods.jit_train_step(config)(state, to_global(batch, mesh))
  assert np.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize("depth,width", [(50, 4), (152, 2)])
def test_big_variants_trace_a_whole_step(depth, width):
  """The papers' big encoders (375M and 233M parameters) through initialisation and a SimCLR step,
  traced abstractly (jax.eval_shape: every shape and dtype, no compilation or arithmetic, which on
  2 CPU cores took minutes). The arithmetic is the same code the narrow variants above execute."""
  config = tiny_config(batch_size=2, image_size=32, depth=depth, width=width)
  config.model.stem = "imagenet"  # the papers' encoder: its count is checked against theirs above
  mesh = make_mesh(jax.devices()[:1])
  state = jax.eval_shape(lambda: methods.create_state(config, mesh, jax.random.key(0)))
  batch = methods.synthetic_batch(config, np.random.default_rng(0))
  new_state, metrics = jax.eval_shape(methods.jit_train_step(config), state, batch)
  same = lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype)  # noqa: E731
  assert jax.tree.all(jax.tree.map(same, new_state.params, state.params))
  assert jax.tree.all(jax.tree.map(same, new_state.opt_state, state.opt_state))
  n = sum(np.prod(x.shape) for x in jax.tree.leaves(state.params["encoder"]))
  assert n == _count(ResNet(depth=depth, width=width))
  assert metrics["loss"].shape == () and metrics["loss"].dtype == jnp.float32


def test_unknown_depth_is_an_error():
  with pytest.raises(ValueError, match="model.depth=42"):
    ResNet(depth=42).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
