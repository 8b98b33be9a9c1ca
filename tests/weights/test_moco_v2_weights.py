"""--format moco_v2 (medssl_jax/weights/moco_v2.py): the official MoCo checkpoint layout.

The reference is PyTorch: a randomly initialised torchvision resnet18 (random BN statistics)
whose `fc` is MoCo v2's MLP (`Sequential(Linear(512, 512), ReLU, Linear(512, 128))`, as
facebookresearch/moco's builder makes it), saved as `main_moco.py` saves it ({'epoch', 'arch',
'state_dict' with 'module.encoder_q.*', 'module.encoder_k.*', 'module.queue', 'module.queue_ptr',
'optimizer'}). Ours must give the same pooled features and projections (eval mode, float32).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402

from medssl_jax.commands import import_weights as import_lib  # noqa: E402
from medssl_jax import weights  # noqa: E402
from medssl_jax.errors import UserError  # noqa: E402
from medssl_jax.models.contrastive import ContrastiveModel  # noqa: E402
from medssl_jax.training import checkpoint as ckpt_lib  # noqa: E402
from medssl_jax.weights import moco_v2  # noqa: E402
from tests.weights.refs import PORT_KEYS, import_moco, rel_err as _close  # noqa: E402
# The query encoder is a torchvision ResNet whose fc is the MLP: (pooled features, projections).
from tests.weights.refs import moco_query_encoder as _moco_query_encoder, port_images as _images  # noqa: E402
from tests.weights.refs import torch_outputs as _torch_outputs, write_moco_file as _moco_file  # noqa: E402




def _ours(settings, params, batch_stats, x):
  model = ContrastiveModel(depth=settings["depth"], head_layers=settings["head_layers"], head_dim=settings["head_dim"],
                           head_batch_norm=False, resnet_kw=tuple((k, settings[k]) for k in PORT_KEYS))
  h, z = jax.jit(lambda v, x: model.apply(v, x, train=False))({"params": params, "batch_stats": batch_stats}, x)
  return np.asarray(h), np.asarray(z)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  return import_moco(tmp_path_factory.mktemp("moco"))


def test_imported_moco_computes_what_its_query_encoder_does(imported):
  ref, _, out, _ = imported
  params, batch_stats, step = ckpt_lib.restore_weights(out)
  assert step == 0 and set(params) == {"encoder", "head"} and set(batch_stats) == {"encoder"}
  settings = weights.stored_config(out)["model"]
  assert (settings["head_layers"], settings["head_dim"], settings["downsample_padding"], settings["input_norm"]) == \
      (2, 128, "symmetric", "imagenet")
  x = _images(size=32)
  ref_h, ref_z = _torch_outputs(ref, x)
  h, z = _ours(settings, params, batch_stats, x)
  assert h.shape == (2, 512) and z.shape == (2, 128)
  assert _close(h, ref_h) <= 1e-4
  assert _close(z, ref_z) <= 1e-4
  # The head is MoCo's fc, transposed: fc.0 -> dense_0, fc.2 -> dense_1, exactly.
  np.testing.assert_array_equal(params["head"]["dense_0"]["kernel"], ref.fc[0].weight.detach().numpy().T)
  np.testing.assert_array_equal(params["head"]["dense_1"]["bias"], ref.fc[2].bias.detach().numpy())


def test_moco_v1_head_and_key_encoder_is_not_taken(tmp_path):
  """MoCo v1 (no --mlp): fc is one Linear -> a 1-layer head; the key encoder's weights differ from
  the query encoder's and are ignored."""
  ref = _moco_query_encoder(seed=2, mlp=False)
  sd = _moco_file(tmp_path / "v1.pth.tar", ref)
  params, batch_stats, settings = moco_v2.load(str(tmp_path / "v1.pth.tar"), "resnet18")
  assert settings["head_layers"] == 1 and settings["head_dim"] == 128
  assert not np.array_equal(sd["module.encoder_k.conv1.weight"].numpy(), sd["module.encoder_q.conv1.weight"].numpy())
  np.testing.assert_array_equal(params["encoder"]["stem_conv"]["kernel"],
                                sd["module.encoder_q.conv1.weight"].numpy().transpose(2, 3, 1, 0))
  x = _images(size=32, seed=5)
  ref_h, ref_z = _torch_outputs(ref, x)
  h, z = _ours(settings, params, batch_stats, x)
  assert _close(h, ref_h) <= 1e-4 and _close(z, ref_z) <= 1e-4


def test_mismatching_moco_files_are_refused(imported, tmp_path):
  _, sd, _, _ = imported
  np_sd = {k: v.numpy() for k, v in sd.items()}
  with pytest.raises(UserError) as e:  # a resnet18 file read as resnet34
    moco_v2.from_state_dict(np_sd, "resnet34")
  assert "\n" not in str(e.value) and "module.encoder_q." in str(e.value) and "layer1.2.conv1.weight" in str(e.value)
  bad = dict(np_sd, **{"module.encoder_q.layer2.0.conv2.weight": np.zeros((128, 64, 3, 3), np.float32)})
  with pytest.raises(UserError, match=r"'layer2\.0\.conv2\.weight' has shape \(128, 64, 3, 3\) in the file but "
                                      r"\(128, 128, 3, 3\)"):
    moco_v2.from_state_dict(bad, "resnet18")
  bad = dict(np_sd, **{"module.encoder_q.fc.0.weight": np.zeros((512, 256), np.float32)})
  with pytest.raises(UserError, match=r"'module\.encoder_q\.fc\.0\.weight' has shape \(512, 256\)"):
    moco_v2.from_state_dict(bad, "resnet18")
  with pytest.raises(UserError, match="module.encoder_q"):  # a plain torchvision state_dict
    moco_v2.from_state_dict({k[len("module.encoder_q."):]: v for k, v in np_sd.items()
                             if k.startswith("module.encoder_q.")}, "resnet18")
  with pytest.raises(UserError, match="'module.extra'"):
    moco_v2.from_state_dict(dict(np_sd, **{"module.extra": np.zeros(3, np.float32)}), "resnet18")


def test_without_torch_moco_and_swav_name_the_extra(imported, monkeypatch, tmp_path):
  _, _, _, root = imported
  monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import torch -> ImportError
  for fmt in ("moco_v2", "swav"):
    arch = "resnet18" if fmt == "moco_v2" else "resnet50"
    with pytest.raises(UserError, match=r"pip install medssl-jax\[torch\]"):
      import_lib.import_weights(fmt, arch, str(root / "checkpoint_0199.pth.tar"), str(tmp_path / fmt))
