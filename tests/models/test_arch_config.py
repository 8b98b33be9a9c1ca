"""`model.arch`: the contrastive model and the classifier build DenseNet-121 (MoCo-CXR's second
backbone) from the config, keep ResNet's parameter paths, and refuse settings DenseNet lacks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.base import get_base_config
from medssl_jax.errors import UserError
from medssl_jax.models import ResNet, classifier_from_config, from_config

# torchvision densenet121: 7,978,856 parameters, minus its classifier Linear(1024, 1000):
# 1024 x 1000 + 1000 = 1,025,000 -> 6,953,856 (Sowrirajan et al. 2021 quote ~7.0M).
DENSENET121_ENCODER_PARAMS = 7_978_856 - (1024 * 1000 + 1000)


def _model_cfg(**kw):
  c = get_base_config().model
  for k, v in kw.items():
    c[k] = v
  return c


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _shapes(model, size, channels=3):
  x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype), train=True))


def test_densenet121_contrastive_model_and_classifier_from_config():
  assert DENSENET121_ENCODER_PARAMS == 6_953_856
  cfg = _model_cfg(arch="densenet", depth=121, width=1.0, stem="imagenet", head_dim=128)
  v = _shapes(from_config(cfg, head_batch_norm=False), 224)
  assert set(v["params"]) == {"encoder", "head"}
  assert _count(v["params"]["encoder"]) == DENSENET121_ENCODER_PARAMS
  assert "conv0" in v["params"]["encoder"] and "denseblock4" in v["params"]["encoder"]
  # MoCo v2 head on 1024-d features: Linear(1024, 1024) + Linear(1024, 128), with biases.
  assert _count(v["params"]["head"]) == 1024 * 1024 + 1024 + 1024 * 128 + 128
  c = _shapes(classifier_from_config(cfg, num_outputs=1, frozen_encoder=False), 224)
  assert set(c["params"]) == {"encoder", "classifier"}
  assert _count(c["params"]["encoder"]) == DENSENET121_ENCODER_PARAMS
  assert c["params"]["classifier"]["kernel"].shape == (1024, 1)
  # The encoder loads by name: same tree, same shapes in both networks.
  shape = lambda t: jax.tree_util.tree_map(lambda a: a.shape, t)  # noqa: E731
  assert shape(c["params"]["encoder"]) == shape(v["params"]["encoder"])
  assert shape(c["batch_stats"]["encoder"]) == shape(v["batch_stats"]["encoder"])


def test_resnet_parameter_paths_are_unchanged():
  """The default arch builds exactly the ResNet it built before (SimCLR checkpoints still load)."""
  cfg = _model_cfg(depth=18, width=0.125, stem="small")
  assert cfg.arch == "resnet"
  v = _shapes(from_config(cfg), 16)
  ref = _shapes(ResNet(depth=18, width=0.125, stem="small"), 16)
  shape = lambda t: jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), t)  # noqa: E731
  assert shape(v["params"]["encoder"]) == shape(ref["params"])
  assert shape(v["batch_stats"]["encoder"]) == shape(ref["batch_stats"])
  assert "stem_conv" in v["params"]["encoder"] and "BasicBlock_0" in v["params"]["encoder"]
  c = _shapes(classifier_from_config(cfg, num_outputs=3, frozen_encoder=True), 16)
  assert shape(c["params"]["encoder"]) == shape(ref["params"])


@pytest.mark.parametrize("kw,match", [
    (dict(arch="densenet", depth=121, width=0.5), "model.width must be 1"),
    (dict(arch="densenet", depth=121, stem="small"), "model.stem 'imagenet'"),
    (dict(arch="densenet", depth=50), "not a DenseNet depth"),
    (dict(arch="vgg"), "model.arch='vgg'"),
])
def test_settings_densenet_lacks_are_one_line_user_errors(kw, match):
  cfg = _model_cfg(**kw)
  for build in (lambda: from_config(cfg), lambda: classifier_from_config(cfg, 2, frozen_encoder=False)):
    with pytest.raises(UserError, match=match) as e:
      build()
    assert "\n" not in str(e.value)


def test_densenet_fine_tune_step_through_the_config_path(monkeypatch):
  """A tiny fine-tune-style step through `classifier_from_config` with model.arch='densenet': the
  block sizes of depth 121 are shrunk to one layer each for the test (a full DenseNet-121 step
  takes minutes of CPU here; its size is checked above without running it). 2 images of 32 px
  (the smallest side the stem's and three transitions' 2x reductions leave >= 1 pixel for);
  the gradient reaches the stem and the stem's BN running mean moves."""
  import optax
  from medssl_jax.models import densenet
  monkeypatch.setitem(densenet.BLOCKS, 121, (1, 1, 1, 1))
  cfg = _model_cfg(arch="densenet", depth=121)
  model = classifier_from_config(cfg, num_outputs=2, frozen_encoder=False)
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  y = jnp.array([0, 1])
  v = model.init(jax.random.key(0), x, train=True)
  # 64 + 32 -> 48 -> 80 -> 40 -> 72 -> 36 -> 68 features into the classifier
  assert v["params"]["classifier"]["kernel"].shape == (densenet.feature_dim(121), 2) == (68, 2)

  def loss_fn(params):
    logits, upd = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                              mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, upd)

  (loss, (logits, upd)), g = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(v["params"])
  assert logits.shape == (2, 2) and np.isfinite(float(loss))
  assert float(jnp.abs(g["encoder"]["conv0"]["kernel"]).sum()) > 0
  assert float(jnp.abs(upd["batch_stats"]["encoder"]["norm0"]["mean"]).sum()) > 0
  inf = model.apply({"params": v["params"], "batch_stats": upd["batch_stats"]}, x, train=False)
  assert inf.shape == (2, 2) and bool(jnp.all(jnp.isfinite(inf)))
