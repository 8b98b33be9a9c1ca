"""BiT import (medssl_jax/weights/bit.py, `import-weights --format bit`) against timm's BiT.

The reference is timm's `resnetv2_50x1_bit` loaded by timm's own reader of the released `.npz`
layout (`timm.models.resnetv2._load_weights`): a file of random arrays under BiT's names is read
by both; on the same images (timm's normalised to [-1, 1] in NumPy, ours by model.input_norm) the
pooled features and the logits must agree. Group Norm scales and offsets are random too, so every
array matters; a name read into the wrong place would show.
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from timm.models import resnetv2  # noqa: E402

from medssl_jax import weights  # noqa: E402
from medssl_jax.commands import export_weights as export_lib  # noqa: E402
from medssl_jax.commands import import_weights as import_lib  # noqa: E402
from medssl_jax.errors import UserError  # noqa: E402
from medssl_jax.models.classifier import classifier_from_config  # noqa: E402
from medssl_jax.settings import get_base_config  # noqa: E402
from medssl_jax.training import checkpoint as ckpt_lib  # noqa: E402
from medssl_jax.weights import bit as bit_fmt  # noqa: E402
from tests.weights.refs import rel_err  # noqa: E402

CLASSES = 10


def _random_npz(path, depth=50, width=1.0, seed=0, head=True):
  """Random arrays under BiT's names with the shapes of R<depth>x<width>."""
  rng = np.random.default_rng(seed)
  template = bit_fmt._template(depth, width)
  arrays = {}
  for name, where in bit_fmt.names(depth).items():
    shape = template
    for p in where:
      shape = shape[p]
    shape = tuple(shape.shape)
    if name.endswith("gamma"):
      arrays[name] = rng.normal(1.0, 0.2, shape).astype(np.float32)
    elif name.endswith("beta"):
      arrays[name] = rng.normal(0.0, 0.2, shape).astype(np.float32)
    else:
      arrays[name] = rng.normal(0.0, 0.05, shape).astype(np.float32)
  if head:
    features = template["gn_final"]["scale"].shape[0]
    arrays["resnet/head/conv2d/kernel"] = rng.normal(0.0, 0.05, (1, 1, features, CLASSES)).astype(np.float32)
    arrays["resnet/head/conv2d/bias"] = rng.normal(0.0, 0.1, (CLASSES,)).astype(np.float32)
  np.savez(path, **arrays)
  return arrays


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("bit") / "BiT-M-R50x1.npz")
  _random_npz(path)
  return path


def _timm_reference(path):
  model = timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=CLASSES)
  with torch.no_grad():
    resnetv2._load_weights(model, path)
  return model.eval()


def _images(n=2, size=64, seed=0):
  return np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)


def test_imported_bit_computes_what_timms_bit_does_from_the_same_file(npz, tmp_path):
  x = _images()
  ref = _timm_reference(npz)
  xt = torch.from_numpy(((x - 0.5) / 0.5).transpose(0, 3, 1, 2).copy())  # BiT's [-1, 1] inputs
  with torch.no_grad():
    ref_feats = ref.forward_head(ref.forward_features(xt), pre_logits=True).numpy()
    ref_logits = ref(xt).numpy()
  out = str(tmp_path / "imported")
  settings = import_lib.import_weights("bit", "BiT-M-R50x1", npz, out)
  assert settings == {"arch": "bit", "depth": 50, "width": 1.0, "input_norm": "inception"}
  cfg = get_base_config()
  for k, v in weights.stored_config(out)["model"].items():
    setattr(cfg.model, k, v)
  model = classifier_from_config(cfg.model, CLASSES, frozen_encoder=False)
  params, batch_stats, _ = ckpt_lib.restore_weights(out)
  variables = {"params": params, "batch_stats": batch_stats}
  feats, logits = jax.jit(lambda v, x: model.apply(v, x, method=lambda m, x: (m.encoder(x, train=False),
                                                                            m(x, train=False))))(variables, jnp.asarray(x))
  assert feats.shape == ref_feats.shape == (2, 2048) and logits.shape == ref_logits.shape == (2, CLASSES)
  assert rel_err(np.asarray(feats), ref_feats) <= 1e-4, rel_err(np.asarray(feats), ref_feats)
  assert rel_err(np.asarray(logits), ref_logits) <= 1e-4, rel_err(np.asarray(logits), ref_logits)
  with pytest.raises(UserError, match=r"is a BiT encoder \(model.arch='bit'\): export-weights writes"):
    export_lib.export_weights(out, "timm", str(tmp_path / "x.safetensors"))


def test_names_shapes_and_arch_refusals(npz, tmp_path):
  assert bit_fmt.parse_arch("BiT-M-R101x3") == (101, 3.0) and bit_fmt.parse_arch("R152x4") == (152, 4.0)
  with pytest.raises(UserError, match=r"^--arch='resnet50': expected a BiT model name such as BiT-M-R50x1"):
    bit_fmt.load(npz, "resnet50")
  with pytest.raises(UserError, match=r"is not a BiT R101x1 checkpoint: \d+ array\(s\) missing, e\.g\. \['resnet/block3/unit07/"):
    bit_fmt.load(npz, "BiT-M-R101x1")  # a depth-50 file read as depth 101
  with pytest.raises(UserError, match=r"array 'resnet/root_block/standardized_conv2d/kernel' has shape \(7, 7, 3, 64\), "
                                      r"BiT R50x3 needs \(7, 7, 3, 192\)"):
    bit_fmt.load(npz, "R50x3")
  no_head = str(tmp_path / "no_head.npz")
  _random_npz(no_head, head=False)
  params, batch_stats, _ = bit_fmt.load(no_head, "R50x1")
  assert "classifier" not in params and set(batch_stats["encoder"]) == {"placeholder"}
  pickled = str(tmp_path / "pickled.npz")
  np.savez(pickled, a=np.array([{"x": 1}], dtype=object))
  with pytest.raises(UserError, match="is not a readable .npz of arrays"):
    bit_fmt.load(pickled, "R50x1")  # no pickle is ever loaded
  with pytest.raises(UserError, match="no BiT checkpoint at"):
    bit_fmt.load(os.path.join(str(tmp_path), "absent.npz"), "R50x1")
