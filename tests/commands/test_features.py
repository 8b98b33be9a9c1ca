"""`medssl-jax features`: the frozen encoder's features of a split, checked against the encoder
applied directly (one device, one batch) to the same preprocessed images."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from input_pipeline import backends, sources
from medssl_jax.commands import features
from medssl_jax.runs import classify
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training.sharding import make_mesh
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config():
  c = tiny_config(batch_size=16, image_size=16)
  c.mode = "finetune"
  c.data.synthetic.num_cases, c.data.synthetic.image_size = 24, 16
  c.aug.eval_crop_fraction = 0.875
  return c


# _config() as a config file (the command must not import this test module: it defines the flags).
CONFIG_FILE = """
from configs.base import finalize
from tests.helpers import tiny_config


def get_config():
  c = tiny_config(batch_size=16, image_size=16)
  c.mode = "finetune"
  c.data.synthetic.num_cases, c.data.synthetic.image_size = 24, 16
  c.aug.eval_crop_fraction = 0.875
  return finalize(c)
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A checkpoint whose encoder has non-trivial batch-norm statistics (so inference mode matters)."""
  c = _config()
  state = classify.create_state(c, make_mesh(), num_outputs=4, rng=jax.random.key(3))
  bs = jax.tree_util.tree_map(lambda x: x + 0.1 * jax.random.uniform(jax.random.key(1), x.shape), state.batch_stats)
  state = state.replace(batch_stats=bs)
  workdir = tmp_path_factory.mktemp("ckpt")
  ck = ckpt_lib.Checkpointer(str(workdir / "checkpoints"))
  ck.save(7, state)
  ck.close()
  return str(workdir), jax.device_get(state.params), jax.device_get(bs)


def test_features_equal_the_encoder_applied_directly(checkpoint):
  workdir, params, batch_stats = checkpoint
  c = _config()
  # 13 images per pass: not a multiple of the 8 devices, and chunks of 20 cut the split unevenly.
  out = features.extract(c, workdir, "test", batch_size=13, chunk=20)
  src = sources.load_source(c.data, "test")
  assert out["step"] == 7 and out["features"].shape == (len(src), 64)  # ResNet-18 at 0.125x: 512/8
  np.testing.assert_array_equal(out["image_ids"], src.image_ids)
  np.testing.assert_array_equal(out["case_ids"], src.case_ids)
  np.testing.assert_array_equal(out["labels"], src.labels)
  images, _ = backends.get("auto").make_eval_arrays(src, 16, 3, crop_fraction=0.875)
  model = classify.create_state(c, make_mesh(jax.devices()[:1]), 4, jax.random.key(0)).apply_fn
  ref = model({"params": params, "batch_stats": batch_stats}, images, train=False,
              method=lambda m, x, train: m.encoder(x, train=train))
  np.testing.assert_allclose(out["features"], np.asarray(ref), rtol=1e-5, atol=1e-5)
  assert np.std(out["features"], axis=0).mean() > 0  # not a constant
  # Fingerprints: of exactly the encoder weights used (another draw differs), no data file here.
  enc = {"params": {"encoder": params["encoder"]}, "batch_stats": {"encoder": batch_stats["encoder"]}}
  assert out["encoder_sha256"] == features.tree_sha256(enc) != features.tree_sha256(
      jax.tree_util.tree_map(lambda x: x + 1, enc))
  assert out["data_sha256"] == ""


def test_another_architecture_is_refused(checkpoint):
  c = _config()
  c.model.width = 0.25
  with pytest.raises(Exception, match="encoder"):
    features.extract(c, checkpoint[0], "test")


def test_command_writes_the_file_and_refuses_a_missing_checkpoint(checkpoint, tmp_path):
  cfg = tmp_path / "cfg.py"
  cfg.write_text(CONFIG_FILE)
  env = dict(os.environ, PYTHONPATH=REPO)
  out = tmp_path / "f" / "val.npz"
  r = subprocess.run([sys.executable, "-m", "medssl_jax", "features", f"--config={cfg}",
                      f"--checkpoint={checkpoint[0]}", "--split=val", f"--out={out}"],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  with np.load(out) as f:
    assert f["features"].shape[1] == 64 and str(f["split"]) == "val" and int(f["step"]) == 7
    assert json.loads(str(f["config"]))["model"]["width"] == 0.125
  r = subprocess.run([sys.executable, "-m", "medssl_jax", "features", f"--config={cfg}",
                      f"--checkpoint={tmp_path / 'nothing'}", f"--out={out}"],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: "), r.stderr[-2000:]
  assert "Traceback" not in r.stderr
