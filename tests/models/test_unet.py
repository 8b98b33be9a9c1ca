"""U-Net over ResNet encoders: encoder stage maps, output shapes for every stem and for sizes that
are not multiples of the total stride, encoder parameters that load by name from a SimCLR model,
and a tiny U-Net that learns to segment a bright disc.

Compiling a Flax `init` (its random initialisers) costs far more CPU than the forward pass, so
the tests that only compare forward passes fill the variables from NumPy (random weights, no
zero-initialised BN scales, so every block contributes); only the training test initialises.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medssl_jax.evaluation.segmentation import dice_per_image
from medssl_jax.losses import dice_bce_loss
from medssl_jax.models import ContrastiveModel, ResNet
from medssl_jax.models.unet import SegmentationModel, pad_to_multiple


def _shapes(model, shape):
  """(variables, output) shapes from one trace, no compilation."""
  out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros(shape), train=False))
  return variables, out


def _paths(tree):
  return {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _numpy_variables(shapes, seed=0):
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path[-1:])
    if len(s.shape) > 1:   # kernels: fan-in scaling
      return jnp.asarray(rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape), jnp.float32)
    if "scale" in name or "var" in name:
      return jnp.asarray(rng.uniform(0.5, 1.5, s.shape), jnp.float32)
    return jnp.asarray(rng.normal(0, 0.1, s.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("stem,strides", [("imagenet", (2, 4, 8, 16, 32)), ("small", (1, 1, 2, 4, 8))])
@pytest.mark.parametrize("depth,expansion", [(18, 1), (50, 4)])
def test_encoder_stage_shapes(stem, strides, depth, expansion):
  variables, out = _shapes(ResNet(depth=depth, width=0.25, stem=stem, return_stages=True), (2, 64, 64, 3))
  widths = (16, 16 * expansion, 32 * expansion, 64 * expansion, 128 * expansion)
  assert [o.shape for o in out] == [(2, 64 // s, 64 // s, w) for s, w in zip(strides, widths)]


@pytest.mark.parametrize("depth,stem,hw", [
    (18, "imagenet", (64, 64)), (18, "imagenet", (37, 45)), (18, "small", (37, 45)),
    (50, "imagenet", (37, 45)), (50, "small", (64, 64)), (50, "small", (20, 33)),
])
def test_output_shape(depth, stem, hw):
  # 37 x 45 and 20 x 33 are multiples of neither 32 ('imagenet' stem) nor 8 ('small')
  model = SegmentationModel(num_classes=3, depth=depth, width=0.25, stem=stem, decoder_widths=(32, 16, 16, 8, 8))
  variables, out = _shapes(model, (2, *hw, 1))
  assert out.shape == (2, *hw, 3) and out.dtype == jnp.float32
  dec = variables["params"]["decoder"]
  assert sorted(dec) == sorted(f"level{l}_{k}{i}" for l in range(5) for k in ("conv", "bn") for i in range(2))
  assert variables["params"]["seg_head"]["kernel"].shape == (1, 1, 8, 3)


@pytest.mark.parametrize("depth,width,stem", [(18, 0.25, "small"), (50, 1.0, "imagenet")])
def test_encoder_subtree_matches_contrastive_model(depth, width, stem):
  seg, _ = _shapes(SegmentationModel(num_classes=1, depth=depth, width=width, stem=stem), (1, 64, 64, 3))
  con, _ = _shapes(ContrastiveModel(depth=depth, width=width, stem=stem), (1, 64, 64, 3))
  assert sorted(seg["params"]) == ["decoder", "encoder", "seg_head"]
  for col in ("params", "batch_stats"):
    assert _paths(seg[col]["encoder"]) == _paths(con[col]["encoder"])
    assert len(_paths(seg[col]["encoder"])) >= 40  # ResNet-18: 20 batch norms, 20 convs


def test_pretrained_encoder_loads_by_name():
  # The SimCLR model's encoder weights, put under the segmentation model's 'encoder', give stage
  # maps whose last one, pooled, is the SimCLR model's feature vector.
  x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
  con = ContrastiveModel(depth=18, width=0.125, stem="imagenet")
  cv = _numpy_variables(_shapes(con, x.shape)[0], seed=1)
  seg = SegmentationModel(num_classes=1, depth=18, width=0.125, stem="imagenet", decoder_widths=(8,) * 5)
  sv = _numpy_variables(_shapes(seg, x.shape)[0], seed=2)
  loaded = {col: dict(sv[col], encoder=cv[col]["encoder"]) for col in sv}
  stages = jax.jit(lambda v, x: seg.apply(v, x, False, method=lambda m, x, train: m.encoder(x, train=train)))(loaded, x)
  features = jax.jit(lambda v, x: con.apply(v, x, method=con.features))(cv, x)
  assert float(jnp.std(features)) > 1e-3
  np.testing.assert_allclose(jnp.mean(stages[-1], axis=(1, 2)), features, rtol=1e-5, atol=1e-6)


def test_odd_sizes_are_edge_padded_and_cropped():
  model = SegmentationModel(num_classes=2, depth=18, width=0.125, stem="imagenet", decoder_widths=(8,) * 5)
  x = jax.random.normal(jax.random.key(3), (1, 37, 45, 1))
  padded = pad_to_multiple(x, 32)
  assert padded.shape == (1, 64, 64, 1)
  np.testing.assert_array_equal(padded[0, 40:, 50:, 0], jnp.full((24, 14), x[0, -1, -1, 0]))
  np.testing.assert_array_equal(padded[0, :37, :45], x[0])
  variables = _numpy_variables(_shapes(model, x.shape)[0])
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  out, full = apply(variables, x), apply(variables, padded)
  assert out.shape == (1, 37, 45, 2)
  np.testing.assert_allclose(out, full[:, :37, :45], rtol=1e-5, atol=1e-5)


def test_bad_arguments():
  x = jnp.zeros((1, 32, 32, 1))
  with pytest.raises(ValueError, match="5 widths"):
    _shapes(SegmentationModel(num_classes=1, depth=18, width=0.125, decoder_widths=(8, 8)), x.shape)
  with pytest.raises(ValueError, match="stem"):
    _shapes(SegmentationModel(num_classes=1, depth=18, width=0.125, stem="tiny"), x.shape)


def _discs(seed, n, size=32):
  """Images of a bright disc (random centre and radius 4-8 px) in Gaussian noise, and its mask."""
  rng = np.random.default_rng(seed)
  centre = rng.uniform(8, size - 8, (n, 2))
  radius = rng.uniform(4, 8, (n, 1, 1))
  yy, xx = np.mgrid[:size, :size]
  masks = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2 < radius**2
  images = 0.8 * masks + 0.3 * rng.normal(size=(n, size, size))
  return images[..., None].astype(np.float32), masks


def test_tiny_unet_learns_a_bright_disc():
  model = SegmentationModel(num_classes=1, depth=18, width=0.125, stem="small", decoder_widths=(16, 16, 8, 8, 8))
  steps, batch = 100, 8
  images, masks = _discs(0, steps * batch)
  test_images, test_masks = _discs(1, 32)
  # the RBG generator compiles much faster on CPU than the default threefry
  variables = jax.jit(lambda x: model.init(jax.random.key(2, impl="rbg"), x, train=False))(images[:2])
  params, batch_stats = variables["params"], variables["batch_stats"]
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state, x, y):
    def loss_fn(p):
      logits, new = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
      return dice_bce_loss(logits, y), new["batch_stats"]
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  predict = jax.jit(lambda v, x: model.apply(v, x, train=False))

  def test_dice():
    logits = predict({"params": params, "batch_stats": batch_stats}, test_images)
    return float(np.mean(dice_per_image(test_masks, np.asarray(logits[..., 0]) >= 0)))

  before = test_dice()
  for i in range(steps):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state,
                                                images[batch * i:batch * (i + 1)], masks[batch * i:batch * (i + 1)])
  after = test_dice()
  assert before < 0.5 and after > 0.8, (before, after, float(loss))


def test_decoder_widths_scale_with_seg_decoder_width():
  from medssl_jax.errors import UserError
  from medssl_jax.models.unet import DECODER_WIDTHS, decoder_widths
  assert decoder_widths() == DECODER_WIDTHS == (256, 128, 64, 32, 16)
  assert decoder_widths(0.25) == (64, 32, 16, 8, 4)
  assert decoder_widths(0.01) == (3, 1, 1, 1, 1)  # rounded, never 0 channels
  with pytest.raises(UserError, match="seg.decoder_width"):
    decoder_widths(0.0)
