"""timm import/export (medssl_jax/weights/timm.py, import-weights / export-weights --format timm).

The reference is timm itself (timm.create_model(name, pretrained=False)): randomly initialised
models in eval mode, float32, on the same [0, 1] images, which timm gets normalised in NumPy
with its pretrained_cfg mean/std and ours normalises itself (model.input_norm). ViTs are built at
img_size=32 (4 patches + class token) to stay fast; their random LayerNorm scales/offsets and
biases are perturbed so every tensor matters.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from medssl_jax.commands import export_weights as export_lib  # noqa: E402
from medssl_jax.commands import import_weights as import_lib  # noqa: E402
from medssl_jax import weights  # noqa: E402
from medssl_jax.errors import UserError  # noqa: E402
from medssl_jax.models.classifier import Classifier  # noqa: E402
from medssl_jax.models.contrastive import vit_kw  # noqa: E402
from medssl_jax.settings import get_base_config  # noqa: E402
from medssl_jax.training import checkpoint as ckpt_lib  # noqa: E402
from medssl_jax.weights import timm as timm_fmt  # noqa: E402
from tests.weights import refs  # noqa: E402
from tests.weights.refs import numpy_state_dict as _numpy_sd, rel_err as _close  # noqa: E402
from tests.weights.refs import timm_model as _timm_model  # noqa: E402

SIZE = refs.TIMM_SIZE


def _images(n=2, size=SIZE, seed=0):
  return refs.images(n, size, seed)


def _timm_outputs(model, x):
  """(features, logits) of a timm model on [0, 1] NHWC images: features = the head's input
  (pooled features of a ResNet, the final-normed class token of a ViT)."""
  mean = np.asarray(model.pretrained_cfg["mean"], np.float32)
  std = np.asarray(model.pretrained_cfg["std"], np.float32)
  xt = torch.from_numpy(((x - mean) / std).transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    feats = model.forward_head(model.forward_features(xt), pre_logits=True).numpy()
    logits = model(xt).numpy()
  return feats, logits


def _model_cfg(arch):
  c = get_base_config()
  for k, v in timm_fmt.model_settings(arch).items():
    setattr(c.model, k, v)
  return c.model


def _ours(arch, params, batch_stats, x, tokens=1):
  m = _model_cfg(arch)
  m.vit_tokens = tokens
  s = timm_fmt.model_settings(arch)
  kw = dict(arch=s["arch"], depth=s.get("depth", 50), vit_kw=vit_kw(m),
            resnet_kw=tuple((k, s[k]) for k in ("bottleneck_width", "downsample_padding", "input_norm")
                            if s["arch"] == "resnet"))
  model = Classifier(num_outputs=params["classifier"]["bias"].shape[0], **kw)
  both = jax.jit(lambda v, x: model.apply(v, x, method=lambda m, x: (
      m.encoder(x, train=False), m(x, train=False) if tokens == 1 else None)))  # timm's head: 1 token
  feats, logits = both({"params": params, "batch_stats": batch_stats}, jnp.asarray(x))
  return np.asarray(feats), None if logits is None else np.asarray(logits)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "vit_tiny_patch16_224"])
def test_imported_model_computes_what_timm_does(arch):
  ref = _timm_model(arch)
  size = SIZE if arch.startswith("vit") else 64
  x = _images(size=size)
  ref_feats, ref_logits = _timm_outputs(ref, x)
  params, batch_stats = timm_fmt.from_state_dict(_numpy_sd(ref), arch)
  feats, logits = _ours(arch, params, batch_stats, x)
  assert feats.shape == ref_feats.shape and logits.shape == ref_logits.shape == (2, 10)
  assert _close(feats, ref_feats) <= 1e-4, _close(feats, ref_feats)
  assert _close(logits, ref_logits) <= 1e-4, _close(logits, ref_logits)


def test_vit_last_k_class_tokens_are_timms_normed_intermediate_class_tokens():
  """vit_tokens=4: the class tokens of the last 4 blocks, each through the final norm (what DINO's
  get_intermediate_layers returns), against timm's forward_intermediates (norm=True)."""
  arch = "vit_tiny_patch16_224"
  ref = _timm_model(arch)
  x = _images()
  xt = torch.from_numpy(((x - 0.5) / 0.5).transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    _, inter = ref.forward_intermediates(xt, indices=4, norm=True, output_fmt="NLC", return_prefix_tokens=True)
  want = np.concatenate([prefix[:, 0].numpy() for _, prefix in inter], axis=-1)
  params, batch_stats = timm_fmt.from_state_dict(_numpy_sd(ref), arch)
  feats, _ = _ours(arch, params, batch_stats, x, tokens=4)
  assert feats.shape == (2, 4 * 192)
  assert _close(feats, want) <= 1e-4


def test_settings_are_those_of_timms_default_weights():
  for arch in timm_fmt.ARCHS:
    cfg = timm.models.get_pretrained_cfg(arch)
    norm = timm_fmt.model_settings(arch)["input_norm"]
    mean = {"imagenet": (0.485, 0.456, 0.406), "inception": (0.5, 0.5, 0.5)}[norm]
    std = {"imagenet": (0.229, 0.224, 0.225), "inception": (0.5, 0.5, 0.5)}[norm]
    np.testing.assert_allclose(cfg.mean, mean, err_msg=arch)
    np.testing.assert_allclose(cfg.std, std, err_msg=arch)


@pytest.mark.parametrize("arch,suffix", [("vit_tiny_patch16_224", ".pth"), ("resnet18", ".safetensors")])
def test_import_export_round_trip_loads_strictly_into_timm(arch, suffix, tmp_path):
  ref = _timm_model(arch, seed=3)
  sd = _numpy_sd(ref)
  src = str(tmp_path / f"src{suffix}")
  weights.save_tensors(sd, src)
  out = str(tmp_path / "imported")
  settings = import_lib.import_weights("timm", arch, src, out)
  assert settings == timm_fmt.model_settings(arch)
  stored = weights.stored_config(out)
  if arch.startswith("vit"):
    assert stored["data"]["image_size"] == SIZE and stored["model"]["vit_variant"] == "Ti/16"
  # export -> load into timm with strict=True -> the same outputs
  exported = str(tmp_path / f"exported{suffix}")
  r = export_lib.export_weights(out, "timm", exported)
  assert r["arch"] == arch and r["fc"]
  back = weights.load_tensors(exported)
  # timm's names (in timm's order in a .pth; safetensors stores them sorted)
  assert (list(back) if suffix == ".pth" else sorted(back)) == (list(sd) if suffix == ".pth" else sorted(sd))
  fresh = _timm_model(arch, seed=99)
  fresh.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in back.items()}, strict=True)
  x = _images(size=SIZE if arch.startswith("vit") else 64)
  np.testing.assert_array_equal(_timm_outputs(fresh, x)[1], _timm_outputs(ref, x)[1])
  # import(export(x)) == x bit for bit
  p0, bs0, _ = ckpt_lib.restore_weights(out)
  p1, bs1 = timm_fmt.from_state_dict(back, arch)
  assert jax.tree_util.tree_structure(p0) == jax.tree_util.tree_structure(p1)
  jax.tree_util.tree_map(np.testing.assert_array_equal, p0, p1)
  jax.tree_util.tree_map(np.testing.assert_array_equal, bs0, bs1)


def test_a_file_of_another_architecture_is_refused_naming_the_tensor(tmp_path):
  small = _numpy_sd(_timm_model("vit_tiny_patch16_224"))
  with pytest.raises(UserError, match=r"not a timm vit_small_patch16_224 state_dict: tensor 'pos_embed' has "
                                      r"shape \(1, 5, 192\) in the file but \(1, 1 \+ g\*g, 384\).*"
                                      r"it fits --arch vit_tiny_patch16_224"):
    timm_fmt.from_state_dict(small, "vit_small_patch16_224")
  bad = dict(small)
  bad["blocks.3.mlp.fc1.weight"] = bad["blocks.3.mlp.fc1.weight"][:100]
  with pytest.raises(UserError, match=r"tensor 'blocks.3.mlp.fc1.weight' has shape \(100, 192\) in the file but "
                                      r"\(768, 192\)"):
    timm_fmt.from_state_dict(bad, "vit_tiny_patch16_224")
  with pytest.raises(UserError, match="'blocks.0.ls1.gamma'"):  # layer scale: another ViT
    timm_fmt.from_state_dict({**small, "blocks.0.ls1.gamma": np.ones(192, np.float32)}, "vit_tiny_patch16_224")
  with pytest.raises(UserError, match="tensor 'pos_embed' has shape \\(1, 6, 192\\)"):
    timm_fmt.from_state_dict({**small, "pos_embed": np.zeros((1, 6, 192), np.float32)}, "vit_tiny_patch16_224")
  with pytest.raises(UserError, match="--arch='resnet50d' is not a timm model"):
    timm_fmt.model_settings("resnet50d")
  with pytest.raises(UserError, match="it fits --arch resnet18"):
    timm_fmt.from_state_dict(_numpy_sd(_timm_model("resnet18")), "resnet34")
