"""A MoCo run that continues pretraining from an imported official MoCo checkpoint
(--format moco_v2). Kept apart from test_moco_v2.py for its CPU time (the MoCo state's
compilation, about a minute on 2 cores)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402

from medssl_jax.training import checkpoint as ckpt_lib  # noqa: E402
from tests.weights.refs import import_moco, torchvision_run_config as _run_config  # noqa: E402


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  return import_moco(tmp_path_factory.mktemp("moco"))


def test_continued_moco_pretraining_starts_from_the_imported_encoder_and_head(imported):
  """pretrain._init_from on the imported dir: encoder and MoCo head come from the file; the key
  encoder starts as a copy of the query encoder (MoCo's own start) and the queue fresh."""
  from medssl_jax import methods
  from medssl_jax.runs import pretrain
  from medssl_jax.training.sharding import make_mesh
  _, _, out, _ = imported
  config = _run_config("pretrain", out)
  config.method = "moco_v2"
  config.model.head_layers, config.model.head_dim = 2, 128
  config.moco.queue_size = 32
  method = methods.get(config.method)
  fresh = methods.create_state(config, make_mesh(), jax.random.key(0), method)
  state = pretrain._init_from(fresh, out, method, config)
  saved_p, saved_bs, _ = ckpt_lib.restore_weights(out)
  for got, want in ((state.params, saved_p), (state.batch_stats, saved_bs)):
    got = jax.device_get(got)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state.extra["target_params"]), saved_p)
  assert state.extra["queue"].shape == (32, 128)
