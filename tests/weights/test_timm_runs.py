"""Runs that start from an imported timm ViT (vit_tiny_patch16_224 built at 32 px): a fine-tuning
run (train.init_checkpoint) and continued SimCLR pretraining (train.init_checkpoint); a run at another
image size or input normalisation than the weights' is refused in one line."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

import jax  # noqa: E402

from medssl_jax.commands import import_weights as import_lib  # noqa: E402
from medssl_jax import weights  # noqa: E402
from medssl_jax.errors import UserError  # noqa: E402
from medssl_jax.training import checkpoint as ckpt_lib  # noqa: E402
from medssl_jax.weights import timm as timm_fmt  # noqa: E402
from tests.weights.refs import numpy_state_dict as _numpy_sd  # noqa: E402
from tests.weights.refs import timm_model as _timm_model  # noqa: E402
from tests.helpers import capture_loaded_encoder  # noqa: E402

ARCH, SIZE = "vit_tiny_patch16_224", 32


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  root = tmp_path_factory.mktemp("timm_runs")
  weights.save_tensors(_numpy_sd(_timm_model(ARCH, num_classes=10, seed=1)), str(root / "vit.safetensors"))
  out = str(root / "imported")
  import_lib.import_weights("timm", ARCH, str(root / "vit.safetensors"), out)
  return out


def _run_config(mode, out):
  from tests.helpers import tiny_config
  c = tiny_config(batch_size=8, image_size=SIZE, steps=1)
  c.mode = mode
  for k, v in timm_fmt.model_settings(ARCH).items():
    setattr(c.model, k, v)
  c.data.source = "synthetic"
  c.data.synthetic.num_cases, c.data.synthetic.image_size = 16, SIZE
  c.aug.blur_prob = 0.0
  c.train.log_every = c.train.checkpoint_every = 1
  c.train.prefetch = 1
  c.optim.name, c.optim.lr_scaling, c.optim.base_lr, c.optim.warmup_steps = "sgd", "none", 0.01, 0
  c.finetune.init, c.train.init_checkpoint, c.finetune.val_split, c.eval.num_replicates = "pretrained", out, "", 20
  return c


def test_finetune_run_starts_from_the_imported_vit(imported, tmp_path, monkeypatch):
  from medssl_jax import main as main_lib
  wrong = _run_config("finetune", imported)
  wrong.data.image_size = wrong.data.synthetic.image_size = 48
  with pytest.raises(UserError, match=r"data.image_size=32 there, 48 here.*--config.data.image_size=32"):
    main_lib.run(wrong, str(tmp_path / "wrong"))
  at_start = capture_loaded_encoder(monkeypatch)
  results = main_lib.run(_run_config("finetune", imported), str(tmp_path / "ft"))
  assert results["completed"]
  saved, _, _ = ckpt_lib.restore_weights(imported)
  jax.tree_util.tree_map(np.testing.assert_array_equal, at_start["params"], saved["encoder"])


def test_continued_pretraining_starts_from_the_imported_vit(imported):
  from medssl_jax import methods
  from medssl_jax.runs import pretrain
  from medssl_jax.training.sharding import make_mesh
  config = _run_config("pretrain", imported)
  method = methods.get(config.method)
  fresh = methods.create_state(config, make_mesh(), jax.random.key(0), method)
  head = jax.device_get(fresh.params["head"])
  state = pretrain._init_from(fresh, imported, method, config)
  saved, saved_bs, _ = ckpt_lib.restore_weights(imported)
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state.params["encoder"]), saved["encoder"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state.params["head"]), head)
  assert set(state.params) == {"encoder", "head"}  # timm's head (classifier) is not taken
  config.model.input_norm = "imagenet"
  with pytest.raises(UserError, match="model.input_norm='inception' there, 'imagenet' here"):
    pretrain._init_from(fresh, imported, method, config)
