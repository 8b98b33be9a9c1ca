"""A workdir on GCS (issue 17 item 2, the parts outside Orbax): JSON files, the settings check,
the wall time, predictions and the checkpoint lookup go through etils.epath, so a gs:// workdir
is written there and not into a local folder named `gs:`.

GCS is faked offline by fsspec's in-memory filesystem registered for the gs/gcs protocols, with
epath told to use its fsspec backend. (Orbax's array data goes through tensorstore, which cannot
be faked this way, so checkpoints themselves are not exercised here.)
"""
import json
import os

import numpy as np
import pytest
from configs.base import get_base_config
from medssl_jax.commands import common
from medssl_jax.commands import compare as compare_cmd
from medssl_jax.commands import select_best
from medssl_jax.errors import UserError
from medssl_jax.evaluation import compare
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training import loop
from medssl_jax.training import workdir as workdir_lib
from tests import fake_gcs as fake_gcs_lib


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
  """gs:// in memory; the current directory is an empty tmp folder that must stay empty."""
  fs = fake_gcs_lib.install(monkeypatch)
  monkeypatch.chdir(tmp_path)
  yield fs
  assert os.listdir(tmp_path) == []  # nothing written to the local disk


def test_json_settings_check_and_wall_time_on_gcs(fake_gcs):
  from etils import epath
  workdir = "gs://bucket/runs/r1"
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  config = get_base_config()
  workdir_lib.save_config(workdir, config)
  saved = json.loads(fake_gcs.cat_file(f"{workdir}/config.json"))
  assert saved["optim"]["base_lr"] == config.optim.base_lr
  assert not workdir_lib.has_checkpoint(workdir)

  # With a checkpoint in the workdir, other settings are refused (the check reads GCS).
  fake_gcs.makedirs(f"{workdir}/checkpoints/20", exist_ok=True)
  fake_gcs.pipe_file(f"{workdir}/checkpoints/20/marker", b"x")
  assert workdir_lib.has_checkpoint(workdir)
  other = get_base_config()
  other.optim.base_lr = config.optim.base_lr * 2
  with pytest.raises(UserError, match="optim.base_lr"):
    workdir_lib.save_config(workdir, other)
  workdir_lib.save_config(workdir, config)  # same settings: fine

  # The wall time of a resumed run adds the previous invocation's, read from GCS.
  loop.write_json(f"{workdir}/results.json", {"final_step": 20, "wall_time_sec": 30.0,
                                               "wall_time_complete": True})
  assert not fake_gcs.exists(f"{workdir}/results.json.tmp")
  out = workdir_lib.wall_time(workdir, 20, 5.0)
  assert out["wall_time_sec"] == 35.0 and out["wall_time_complete"]

  # A workdir on GCS is where its checkpoints are looked up (not "holds no checkpoint").
  assert ckpt_lib.checkpoint_dir(workdir) == f"{workdir}/checkpoints"
  with pytest.raises(Exception):
    ckpt_lib.checkpoint_dir("gs://bucket/runs/none")


def test_predictions_on_gcs(fake_gcs):
  path = "gs://bucket/runs/r2/predictions_test.npz"
  probs = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)
  compare.save_predictions(path, image_ids=["a", "b"], case_ids=["c", "c"], labels=np.array([1, 0]),
                           probs=probs, task="multiclass")
  with fake_gcs.open(path, "rb") as f:
    saved = np.load(f)
    np.testing.assert_array_equal(saved["probs"], probs)
    assert saved["image_ids"].tolist() == ["a", "b"] and str(saved["task"]) == "multiclass"


def test_select_best_and_compare_on_gcs(fake_gcs, capsys):
  """`medssl-jax select-best` reads a gs:// sweep and writes its selection there; `compare` reads
  gs:// prediction files and writes its JSON there (nothing on the local disk: the fixture)."""
  metric = lambda v: {"top1": {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1}}
  root = "gs://bucket/grid"
  trials = []
  for i, v in enumerate((0.6, 0.8)):
    wd = f"{root}/t{i}"
    with fake_gcs.open(f"{wd}/results.json", "w") as f:
      f.write(json.dumps({"val": metric(v), "test": metric(v - 0.05)}))
    trials.append({"index": i, "overrides": {"optim.base_lr": str(i)}, "workdir": wd})
  with fake_gcs.open(f"{root}/sweep.json", "w") as f:
    f.write(json.dumps({"config": "c.py", "trials": trials}))
  assert common.call(select_best.cli, ["medssl-jax select-best", "--sweep_dir", root, "--repeats", "1",
                                        "--mode", "print"]) == 0
  with fake_gcs.open(f"{root}/selection.json") as f:
    assert json.load(f)["chosen"]["index"] == 1
  probs = {"a": np.array([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32),
           "b": np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]], np.float32)}
  for name, p in probs.items():
    compare.save_predictions(f"gs://bucket/{name}/predictions_test.npz", image_ids=["x", "y", "z"],
                             case_ids=["x", "y", "z"], labels=np.array([1, 0, 1]), probs=p, task="multiclass")
  assert common.call(compare_cmd.cli, ["medssl-jax compare", "gs://bucket/a/predictions_test.npz",
                                        "gs://bucket/b/predictions_test.npz", "--num_replicates=20",
                                        "--out=gs://bucket/a_vs_b.json"]) == 0
  with fake_gcs.open("gs://bucket/a_vs_b.json") as f:
    assert json.load(f)["metrics"]["top1"]["a"] == 1.0
