"""The official DINO backbone layouts (medssl_jax/weights/dino.py, import-weights --format dino).

No DINO file can be downloaded here: the state_dicts are written with the official names from
models built with the source libraries: a ViT-S/16 as DINO's `vit_small` (timm's VisionTransformer
with DINO's settings: qkv bias, LayerNorm eps 1e-6, num_classes=0, the same tensor names as
facebookresearch/dino vision_transformer.py) and DINO's ResNet-50 (torchvision's resnet50 with
fc = Identity). Outputs are compared on the same images (eval mode, float32)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from medssl_jax.commands import import_weights as import_lib  # noqa: E402
from medssl_jax import weights  # noqa: E402
from medssl_jax.errors import UserError  # noqa: E402
from medssl_jax.models.vit import ViT, PRESETS  # noqa: E402
from medssl_jax.models.resnet import ResNet  # noqa: E402
from medssl_jax.training import checkpoint as ckpt_lib  # noqa: E402
from medssl_jax.weights import dino  # noqa: E402
from tests.weights.refs import IMAGENET_MEAN as MEAN, IMAGENET_STD as STD  # noqa: E402
from tests.weights.refs import numpy_state_dict as _numpy_sd, rel_err as _close  # noqa: E402
from tests.weights.refs import torchvision_model as _torch_model  # noqa: E402
SIZE = 32


def _dino_vit_small(seed=0):
  """DINO's vit_small(patch_size=16) at 32 px: embed 384, depth 12, 6 heads, mlp ratio 4, qkv bias,
  LayerNorm eps 1e-6, head = Identity; LayerNorm and biases perturbed so every tensor matters."""
  from functools import partial
  from timm.models.vision_transformer import VisionTransformer
  torch.manual_seed(seed)
  m = VisionTransformer(img_size=SIZE, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4,
                        qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_classes=0).eval()
  with torch.no_grad():
    for mod in m.modules():
      if isinstance(mod, torch.nn.LayerNorm):
        mod.weight.uniform_(0.5, 1.5)
        mod.bias.uniform_(-0.2, 0.2)
      elif isinstance(mod, torch.nn.Linear):
        mod.bias.uniform_(-0.1, 0.1)
  return m


def _torch_in(x):
  return torch.from_numpy(((x - MEAN) / STD).transpose(0, 3, 1, 2).copy())


def test_dino_vit_small_imports_and_computes_dinos_class_token(tmp_path):
  ref = _dino_vit_small()
  sd = _numpy_sd(ref)
  # DINO's official names: no head, no other tensors
  assert not any(k.startswith("head") for k in sd) and "blocks.11.attn.qkv.bias" in sd
  x = np.random.RandomState(0).rand(2, SIZE, SIZE, 3).astype(np.float32)
  with torch.no_grad():
    want = ref(_torch_in(x)).numpy()  # = DINO's forward: norm(x)[:, 0]
    inter = ref.forward_intermediates(_torch_in(x), indices=4, norm=True, output_fmt="NLC",
                                      return_prefix_tokens=True)[1]
  want4 = np.concatenate([p[:, 0].numpy() for _, p in inter], axis=-1)  # get_intermediate_layers(x, 4)
  path = str(tmp_path / "dino_deitsmall16_pretrain.pth")
  weights.save_tensors(sd, path)
  out = str(tmp_path / "imported")
  settings = import_lib.import_weights("dino", "dino_vits16", path, out)
  assert settings == {"arch": "vit", "vit_variant": "S/16", "vit_tokens": 1, "input_norm": "imagenet"}
  assert weights.stored_config(out)["data"]["image_size"] == SIZE
  params, batch_stats, _ = ckpt_lib.restore_weights(out)
  assert set(params) == {"encoder"}
  for k, expected in ((1, want), (4, want4)):
    model = ViT(**PRESETS["S/16"], return_last_k_cls=k, input_norm="imagenet", batch_stats_placeholder=True)
    got = jax.jit(lambda p, b, x: model.apply({"params": p, "batch_stats": b}, x, train=False))(
        params["encoder"], batch_stats["encoder"], jnp.asarray(x))
    assert got.shape == (2, k * 384)
    assert _close(np.asarray(got), expected) <= 1e-4


def test_dino_resnet50_is_torchvisions_without_fc(tmp_path):
  ref = _torch_model("resnet50", seed=2)
  ref.fc = torch.nn.Identity()
  sd = _numpy_sd(ref)
  x = np.random.RandomState(1).rand(2, 64, 64, 3).astype(np.float32)
  with torch.no_grad():
    want = ref(_torch_in(x)).numpy()
  params, batch_stats = dino.from_state_dict(sd, "dino_resnet50")
  s = dino.model_settings("dino_resnet50")
  model = ResNet(depth=50, downsample_padding=s["downsample_padding"], input_norm=s["input_norm"])
  got = model.apply({"params": params["encoder"], "batch_stats": batch_stats["encoder"]}, jnp.asarray(x), train=False)
  assert _close(np.asarray(got), want) <= 1e-4


def test_files_that_are_not_the_dino_backbone_are_refused():
  vit = _numpy_sd(_dino_vit_small())
  with pytest.raises(UserError, match=r"not a DINO dino_vitb16 backbone state_dict: tensor 'pos_embed' has shape "
                                      r"\(1, 5, 384\) in the file but \(1, 1 \+ g\*g, 768\).*it fits --arch dino_vits16"):
    dino.from_state_dict(vit, "dino_vitb16")
  with pytest.raises(UserError, match="the file has tensor 'head.weight'"):
    dino.from_state_dict({**vit, "head.weight": np.zeros((10, 384), np.float32),
                          "head.bias": np.zeros(10, np.float32)}, "dino_vits16")
  with pytest.raises(UserError, match="the file has tensor 'fc.weight', which DINO's ResNet-50"):
    dino.from_state_dict(_numpy_sd(_torch_model("resnet50")), "dino_resnet50")
  with pytest.raises(UserError, match="--arch='dino_vits14' is not an official DINO backbone"):
    dino.model_settings("dino_vits14")
