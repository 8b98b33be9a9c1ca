"""Runs that start from an imported torchvision ResNet-18 (import-weights): a fine-tuning run
(train.init_checkpoint) and continued pretraining (train.init_checkpoint); a run under other model
settings than the weights' is refused. Kept apart from test_torchvision.py for its CPU time."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402

from medssl_jax.commands import import_weights as import_lib  # noqa: E402
from medssl_jax.errors import UserError  # noqa: E402
from medssl_jax.training import checkpoint as ckpt_lib  # noqa: E402
from tests.weights.refs import torchvision_model as _torch_model, torchvision_run_config as _run_config  # noqa: E402
from tests.helpers import capture_loaded_encoder  # noqa: E402


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  root = tmp_path_factory.mktemp("tv_runs")
  torch.save(_torch_model("resnet18", num_classes=10, seed=1).state_dict(), str(root / "resnet18.pth"))
  out = str(root / "imported")
  import_lib.import_weights("torchvision", "resnet18", str(root / "resnet18.pth"), out)
  return None, out, root


def _assert_equal_trees(got, want):
  got = jax.device_get(got)
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)


def test_finetune_run_starts_from_the_imported_encoder(imported, tmp_path, monkeypatch):
  from medssl_jax import main as main_lib
  _, out, _ = imported
  # Under this project's default port settings the imported weights are refused, naming the setting.
  wrong = _run_config("finetune", out)
  wrong.model.downsample_padding = "same"
  with pytest.raises(UserError, match="model.downsample_padding='symmetric' there, 'same' here"):
    main_lib.run(wrong, str(tmp_path / "wrong"))
  at_start = capture_loaded_encoder(monkeypatch)
  results = main_lib.run(_run_config("finetune", out), str(tmp_path / "ft"))
  assert results["completed"] and at_start["step"] == 0
  saved_p, saved_bs, _ = ckpt_lib.restore_weights(out)
  _assert_equal_trees(at_start["params"], saved_p["encoder"])
  _assert_equal_trees(at_start["batch_stats"], saved_bs["encoder"])


def test_continued_pretraining_starts_from_the_imported_encoder(imported):
  """pretrain._init_from (train.init_checkpoint) on an encoder-only checkpoint: the encoder comes
  from the file, the projection head keeps its initialisation; other port settings are refused."""
  from medssl_jax import methods
  from medssl_jax.runs import pretrain
  from medssl_jax.training.sharding import make_mesh
  _, out, _ = imported
  config = _run_config("pretrain", out)
  method = methods.get(config.method)
  fresh = methods.create_state(config, make_mesh(), jax.random.key(0), method)
  head = jax.device_get(fresh.params["head"])
  state = pretrain._init_from(fresh, out, method, config)
  assert int(state.step) == 0
  saved_p, saved_bs, _ = ckpt_lib.restore_weights(out)
  _assert_equal_trees(state.params["encoder"], saved_p["encoder"])
  _assert_equal_trees(state.batch_stats["encoder"], saved_bs["encoder"])
  _assert_equal_trees(state.params["head"], head)
  assert set(state.params) == {"encoder", "head"}  # the file's classifier (fc) is not taken
  config.model.input_norm = "none"
  with pytest.raises(UserError, match="model.input_norm='imagenet' there, 'none' here"):
    pretrain._init_from(fresh, out, method, config)
