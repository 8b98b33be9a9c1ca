"""--format swav (medssl_jax/weights/swav.py): the official SwAV ResNet-50 layout.

The reference is a randomly initialised torchvision resnet50 (random BN statistics): SwAV's trunk
is torchvision's (facebookresearch/swav src/resnet50.py: the same modules and names; its stem
padding, a ConstantPad2d(1) then conv1 with padding 2, is torchvision's 3). The file is what SwAV
saves: every name under 'module.', no fc, plus `projection_head.{0,1,3}.*` and `prototypes.weight`.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402

from medssl_jax.commands import common, import_weights as import_lib  # noqa: E402
from medssl_jax.errors import UserError  # noqa: E402
from medssl_jax.models.resnet import ResNet  # noqa: E402
from medssl_jax.training import checkpoint as ckpt_lib  # noqa: E402
from medssl_jax.weights import swav  # noqa: E402
from tests.weights.refs import IMAGENET_MEAN as MEAN, IMAGENET_STD as STD, PORT_KEYS, port_images as _images  # noqa: E402
from tests.weights.refs import rel_err as _close, torchvision_model as _torch_model  # noqa: E402


def _swav_state_dict(trunk):
  torch.manual_seed(3)
  head = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.BatchNorm1d(2048), torch.nn.ReLU(),
                             torch.nn.Linear(2048, 128))
  prototypes = torch.nn.Linear(128, 3000, bias=False)
  sd = {f"module.{k}": v for k, v in trunk.state_dict().items() if not k.startswith("fc.")}
  sd.update({f"module.projection_head.{k}": v for k, v in head.state_dict().items()})
  sd.update({f"module.prototypes.{k}": v for k, v in prototypes.state_dict().items()})
  return sd


@pytest.fixture(scope="module")
def reference():
  return _torch_model("resnet50", seed=4)


@pytest.mark.parametrize("wrapped", [False, True], ids=["released_file", "training_checkpoint"])
def test_imported_swav_trunk_computes_what_torchvision_does(reference, tmp_path, wrapped):
  sd = _swav_state_dict(reference)
  path = str(tmp_path / "swav_800ep_pretrain.pth.tar")
  torch.save({"epoch": 800, "state_dict": sd, "optimizer": {}} if wrapped else sd, path)
  out = str(tmp_path / "imported")
  assert common.call(import_lib.cli, ["medssl-jax import-weights", "--format", "swav", "--arch", "resnet50",
                                      "--in", path, "--out", out]) == 0
  params, batch_stats, _ = ckpt_lib.restore_weights(out)
  assert set(params) == {"encoder"} and set(batch_stats) == {"encoder"}  # no head: it does not map
  if wrapped:
    return  # the same tensors: one forward pass is enough
  s = swav.model_settings("resnet50")
  model = ResNet(depth=50, **{k: s[k] for k in PORT_KEYS})
  x = _images(size=32)
  ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(
      {"params": params["encoder"], "batch_stats": batch_stats["encoder"]}, x))
  reference.fc = torch.nn.Identity()
  with torch.no_grad():
    ref = reference(torch.from_numpy(((x - MEAN) / STD).transpose(0, 3, 1, 2).copy())).numpy()
  assert ours.shape == (2, 2048)
  assert _close(ours, ref) <= 1e-4


def test_mismatching_swav_files_are_refused(reference):
  sd = {k: v.numpy() for k, v in _swav_state_dict(reference).items()}
  bad = dict(sd, **{"module.layer3.1.conv2.weight": np.zeros((256, 128, 3, 3), np.float32)})
  with pytest.raises(UserError) as e:
    swav.from_state_dict(bad, "resnet50")
  msg = str(e.value)
  assert "\n" not in msg and "'module.'" in msg and "'layer3.1.conv2.weight' has shape (256, 128, 3, 3) in the file but " \
      "(256, 256, 3, 3)" in msg
  with pytest.raises(UserError, match="fc"):
    swav.from_state_dict(dict(sd, **{"module.fc.weight": np.zeros((10, 2048), np.float32),
                                     "module.fc.bias": np.zeros(10, np.float32)}), "resnet50")
  with pytest.raises(UserError, match="resnet50w2"):
    swav.model_settings("resnet50w2")
