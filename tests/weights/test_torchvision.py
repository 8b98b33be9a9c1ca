"""torchvision ResNet import/export (medssl_jax/weights/torchvision.py, import-weights, export-weights).

The reference is torchvision itself: randomly initialised models (random BN running statistics,
scales and offsets, so batch norm is really exercised) in eval mode, float32, on the same
images; ours gets [0, 1] images and normalises them itself (model.input_norm='imagenet'),
torchvision gets them normalised in NumPy.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402

from medssl_jax.commands import common  # noqa: E402
from medssl_jax.commands import export_weights as export_lib  # noqa: E402
from medssl_jax.commands import import_weights as import_lib  # noqa: E402
from medssl_jax import weights  # noqa: E402
from medssl_jax.errors import UserError  # noqa: E402
from medssl_jax.models.classifier import Classifier  # noqa: E402
from medssl_jax.training import checkpoint as ckpt_lib  # noqa: E402
from medssl_jax.weights import torchvision as tv  # noqa: E402
from tests.weights.refs import IMAGENET_MEAN as MEAN, IMAGENET_STD as STD  # noqa: E402
from tests.weights.refs import PORT_KEYS, numpy_state_dict as _numpy_sd, rel_err as _close  # noqa: E402
from tests.weights.refs import port_images as _images, torch_outputs as _torch_outputs  # noqa: E402
from tests.weights.refs import torchvision_model as _torch_model  # noqa: E402


def _ours(arch, params, batch_stats, x, **override):
  s = {**tv.model_settings(arch), **override}
  model = Classifier(num_outputs=params["classifier"]["bias"].shape[0], depth=s["depth"],
                     resnet_kw=tuple((k, s[k]) for k in PORT_KEYS))
  variables = {"params": params, "batch_stats": batch_stats}
  both = jax.jit(lambda v, x: model.apply(v, x, method=lambda m, x: (m.encoder(x, train=False), m(x, train=False))))
  feats, logits = both(variables, x)
  return np.asarray(feats), np.asarray(logits)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_imported_model_computes_what_torchvision_does(arch):
  ref = _torch_model(arch)
  x = _images()
  ref_feats, ref_logits = _torch_outputs(ref, x)
  params, batch_stats = tv.from_state_dict(_numpy_sd(ref), arch)
  feats, logits = _ours(arch, params, batch_stats, x)
  assert feats.shape == (2, tv.feature_dim(arch)) and logits.shape == (2, 10)
  assert _close(feats, ref_feats) <= 1e-4
  assert _close(logits, ref_logits) <= 1e-4
  if arch == "resnet18":  # the settings matter: our defaults (SAME padding, no normalisation) differ
    assert _close(_ours(arch, params, batch_stats, x, downsample_padding="same")[0], ref_feats) > 1e-2
    assert _close(_ours(arch, params, batch_stats, x, input_norm="none")[0], ref_feats) > 1e-2
  # The pure round trip is exact, every tensor (num_batches_tracked is written as 0).
  back = tv.to_state_dict(params, batch_stats, arch)
  sd = _numpy_sd(ref)
  assert list(back) == list(sd)  # torchvision's order
  for k, v in sd.items():
    if k.endswith("num_batches_tracked"):
      assert back[k].dtype == np.int64 and back[k] == 0
    else:
      assert back[k].dtype == v.dtype
      np.testing.assert_array_equal(back[k], v)


def test_wide_resnet_layout_matches_torchvision():
  """wide_resnet50_2 without running it: every tensor name and shape (bottleneck_width=2)."""
  with torch.device("meta"):
    ref = torchvision.models.wide_resnet50_2()
  sd = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.startswith("fc.")}
  assert tv.expected_shapes("wide_resnet50_2") == sd
  assert tv.model_settings("wide_resnet50_2")["bottleneck_width"] == 2.0


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """A torchvision resnet18 saved with torch.save and imported by the CLI."""
  root = tmp_path_factory.mktemp("tv")
  ref = _torch_model("resnet18", num_classes=10, seed=1)
  torch.save(ref.state_dict(), str(root / "resnet18.pth"))
  out = str(root / "imported")
  assert common.call(import_lib.cli, ["medssl-jax import-weights", "--format", "torchvision", "--arch", "resnet18",
                                      "--in", str(root / "resnet18.pth"), "--out", out]) == 0
  return ref, out, root


def test_import_writes_a_checkpoint_and_its_settings(imported):
  ref, out, _ = imported
  params, batch_stats, step = ckpt_lib.restore_weights(out)
  assert step == 0
  expect_p, expect_bs = tv.from_state_dict(_numpy_sd(ref), "resnet18")
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, expect_p)
  jax.tree_util.tree_map(np.testing.assert_array_equal, batch_stats, expect_bs)
  saved = weights.stored_config(out)
  assert {k: saved["model"][k] for k in tv.model_settings("resnet18")} == tv.model_settings("resnet18")
  assert saved["imported_weights"]["arch"] == "resnet18" and saved["data"]["channels"] == 3


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_export_loads_strictly_into_torchvision_and_reimports_bit_exactly(imported, suffix):
  ref, out, root = imported
  path = str(root / f"exported{suffix}")
  assert common.call(export_lib.cli, ["medssl-jax export-weights", "--checkpoint", out, "--format", "torchvision",
                                      "--out", path]) == 0
  if suffix == ".pth":
    sd = torch.load(path, weights_only=True)
  else:
    from safetensors.torch import load_file
    sd = load_file(path)
  fresh = torchvision.models.resnet18(num_classes=10).eval()
  fresh.load_state_dict(sd, strict=True)
  x = _images(seed=3)
  for a, b in zip(_torch_outputs(fresh, x), _torch_outputs(ref, x)):
    np.testing.assert_array_equal(a, b)
  again = str(root / f"reimported{suffix.replace('.', '_')}")
  import_lib.import_weights("torchvision", "resnet18", path, again)
  for a, b in zip(ckpt_lib.restore_weights(out)[:2], ckpt_lib.restore_weights(again)[:2]):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for u, v in zip(leaves_a, leaves_b):
      assert u.dtype == v.dtype and u.tobytes() == v.tobytes()


def test_export_of_a_trunk_without_classifier_and_of_other_padding(imported, tmp_path):
  """A checkpoint without 'classifier' (pretraining) exports no fc and loads strictly once fc is
  Identity; one trained under downsample_padding='same' is refused unless allowed."""
  ref, out, _ = imported
  params, batch_stats, _ = ckpt_lib.restore_weights(out)
  trunk = {"encoder": params["encoder"]}
  weights.write_checkpoint(str(tmp_path / "trunk"), trunk, batch_stats, tv.model_settings("resnet18"), {})
  path = str(tmp_path / "trunk.pth")
  export_lib.export_weights(str(tmp_path / "trunk"), "torchvision", path)
  fresh = torchvision.models.resnet18().eval()
  fresh.fc = torch.nn.Identity()
  fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
  x = _images(seed=4)
  xt = torch.from_numpy(((x - MEAN) / STD).transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    np.testing.assert_array_equal(fresh(xt).numpy(), _torch_outputs(ref, x)[0])
  same = dict(tv.model_settings("resnet18"), downsample_padding="same")
  weights.write_checkpoint(str(tmp_path / "same"), trunk, batch_stats, same, {})
  with pytest.raises(UserError, match="--allow_padding_change"):
    export_lib.export_weights(str(tmp_path / "same"), "torchvision", str(tmp_path / "same.pth"))
  export_lib.export_weights(str(tmp_path / "same"), "torchvision", str(tmp_path / "same.pth"), allow_padding_change=True)


def test_mismatched_state_dicts_are_refused_naming_the_tensor(tmp_path):
  sd = _numpy_sd(_torch_model("resnet18"))
  with pytest.raises(UserError) as e:
    tv.from_state_dict(sd, "resnet34")
  msg = str(e.value)
  assert "\n" not in msg and "layer1.2.conv1.weight" in msg and "--arch resnet18" in msg
  bad = dict(sd, **{"layer2.0.conv2.weight": np.zeros((128, 64, 3, 3), np.float32)})
  with pytest.raises(UserError, match=r"'layer2\.0\.conv2\.weight' has shape \(128, 64, 3, 3\) in the file but "
                                      r"\(128, 128, 3, 3\) in resnet18"):
    tv.from_state_dict(bad, "resnet18")
  with pytest.raises(UserError, match="'extra.weight'"):
    tv.from_state_dict(dict(sd, **{"extra.weight": np.zeros(3, np.float32)}), "resnet18")
  with pytest.raises(UserError, match="expected one of"):
    tv.model_settings("resnet19")


def test_without_torch_the_commands_name_the_extra(imported, monkeypatch, tmp_path):
  from medssl_jax import cli
  assert cli.COMMANDS["import-weights"][0] == "import_weights" and cli.COMMANDS["export-weights"][0] == "export_weights"
  _, out, root = imported
  monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import torch -> ImportError
  with pytest.raises(UserError, match=r"pip install medssl-jax\[torch\]"):
    import_lib.import_weights("torchvision", "resnet18", str(root / "resnet18.pth"), str(tmp_path / "x"))
  with pytest.raises(UserError, match=r"pip install medssl-jax\[torch\]"):
    export_lib.export_weights(out, "torchvision", str(tmp_path / "x.pth"))


def test_densenet121_imports_computes_what_torchvision_does_and_exports_back(tmp_path):
  """torchvision's densenet121 (random weights, random BN statistics): features and logits of the
  import equal torchvision's; the export loads strictly back into torchvision and re-imports
  bit for bit; the import-weights command stores model.arch='densenet' and input_norm."""
  arch = "densenet121"
  ref = _torch_model(arch, num_classes=5)
  x = _images(size=32)
  ref_feats, ref_logits = _torch_outputs(ref, x, head="classifier")
  sd = _numpy_sd(ref)
  params, batch_stats = tv.from_state_dict(sd, arch)
  s = tv.model_settings(arch)
  model = Classifier(num_outputs=5, depth=121, arch="densenet", resnet_kw=(("input_norm", s["input_norm"]),))
  variables = {"params": params, "batch_stats": batch_stats}
  feats, logits = jax.jit(lambda v, x: model.apply(
      v, x, method=lambda m, x: (m.encoder(x, train=False), m(x, train=False))))(variables, x)
  assert ref_feats.shape == (2, 1024)
  assert _close(np.asarray(feats), ref_feats) < 1e-4 and _close(np.asarray(logits), ref_logits) < 1e-4
  back = tv.to_state_dict(params, batch_stats)  # the arch is inferred from the tree
  assert list(back) == list(sd)  # torchvision's names and order, 'classifier' included
  fresh = torchvision.models.densenet121(num_classes=5).eval()
  fresh.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in back.items()}, strict=True)
  np.testing.assert_array_equal(_torch_outputs(fresh, x, head="classifier")[1], ref_logits)
  p2, b2 = tv.from_state_dict(back, arch)
  for a, b in zip(jax.tree_util.tree_leaves((params, batch_stats)), jax.tree_util.tree_leaves((p2, b2))):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(UserError, match="fits --arch densenet121"):
    tv.from_state_dict(sd, "densenet169")
  pth = str(tmp_path / "d121.pth")
  torch.save(ref.state_dict(), pth)
  settings = import_lib.import_weights("torchvision", arch, pth, str(tmp_path / "imported"))
  assert settings["arch"] == "densenet" and settings["input_norm"] == "imagenet"
  saved = weights.stored_config(str(tmp_path / "imported"))
  assert (saved["model"]["arch"], saved["model"]["depth"], saved["model"]["input_norm"]) == ("densenet", 121, "imagenet")
  r = export_lib.export_weights(str(tmp_path / "imported"), "torchvision", str(tmp_path / "out.pth"))
  assert r["arch"] == arch and r["fc"]
  again = torchvision.models.densenet121(num_classes=5).eval()
  again.load_state_dict(torch.load(str(tmp_path / "out.pth"), weights_only=True), strict=True)
  np.testing.assert_array_equal(_torch_outputs(again, x, head="classifier")[1], ref_logits)


def test_export_refuses_an_existing_file_in_one_line_unless_overwrite(imported, tmp_path, capsys):
  _, out, _ = imported
  path = tmp_path / "w.safetensors"
  path.write_bytes(b"an older file")
  argv = ["medssl-jax export-weights", "--checkpoint", out, "--format", "torchvision", "--out", str(path)]
  assert common.call(export_lib.cli, argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"error: --out={path} already exists; pass --overwrite to replace it, or choose another file name"]
  assert path.read_bytes() == b"an older file"  # untouched
  assert common.call(export_lib.cli, argv + ["--overwrite"]) == 0
  safetensors = pytest.importorskip("safetensors.numpy")
  assert "conv1.weight" in safetensors.load_file(str(path))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temporary file left
