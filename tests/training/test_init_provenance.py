"""Provenance of loaded start weights (issue 32 item 4): results.json's init_checkpoint {path, step,
fingerprint}, and a start from a run that still trains refused unless train.init_from_running."""
import hashlib
import json
import os

import numpy as np
import pytest

from medssl_jax import main as main_lib
from medssl_jax import weights
from medssl_jax.errors import UserError
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training import lock
from tests.helpers import pretrain_run_config


def _weights(seed=0):
  rng = np.random.default_rng(seed)
  params = {"encoder": {"conv": {"kernel": rng.normal(size=(3, 3, 1, 4)).astype(np.float32)},
                        "bn": {"scale": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)}}}
  batch_stats = {"encoder": {"bn": {"mean": rng.normal(size=4).astype(np.float32), "var": np.ones(4, np.float32)}}}
  return params, batch_stats


def test_fingerprint_is_the_sha256_of_the_arrays_in_key_order_and_follows_the_weights():
  params, batch_stats = _weights()
  enc, bs = params["encoder"], batch_stats["encoder"]
  # Sorted key paths: bn.bias, bn.scale, conv.kernel; then batch_stats' bn.mean, bn.var.
  arrays = [enc["bn"]["bias"], enc["bn"]["scale"], enc["conv"]["kernel"], bs["bn"]["mean"], bs["bn"]["var"]]
  expected = hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()[:16]
  assert ckpt_lib.fingerprint(params, batch_stats) == expected
  changed = {"encoder": dict(enc, conv={"kernel": enc["conv"]["kernel"] + np.float32(1e-3)})}
  assert ckpt_lib.fingerprint(changed, batch_stats) != expected
  assert ckpt_lib.fingerprint(params, {"encoder": {"bn": dict(bs["bn"], var=bs["bn"]["var"] * 2)}}) != expected


def _source(tmp_path):
  params, batch_stats = _weights()
  src = str(tmp_path / "source")
  weights.write_checkpoint(src, params, batch_stats, {"arch": "resnet"}, {})
  return src, params, batch_stats


def test_a_checkpoint_of_a_run_still_training_is_refused_naming_the_step_unless_asked_for(tmp_path):
  src, params, batch_stats = _source(tmp_path)
  # The parent of this process is alive: its lock is held by a live run.
  holder = dict(lock.holder_info(), pid=os.getppid(), process_start=None)
  (tmp_path / "source" / ".lock").write_text(json.dumps(holder))
  run = tmp_path / "run"
  run.mkdir()
  with pytest.raises(UserError) as e:
    ckpt_lib.restore_init_weights(src, workdir=str(run))
  assert str(e.value) == (
      f"train.init_checkpoint={src} belongs to a run that is still training (pid {os.getppid()} on host "
      f"{holder['host']}); it would take step 0, its latest so far; wait for that run to finish, or pass "
      f"--config.train.init_from_running=True to start from step 0 anyway")
  assert "\n" not in str(e.value)
  assert not (run / ckpt_lib.INIT_RECORD).exists()
  _, _, step, record = ckpt_lib.restore_init_weights(src, allow_running=True, workdir=str(run))
  assert step == 0
  assert record == {"path": os.path.abspath(src), "step": 0, "fingerprint": ckpt_lib.fingerprint(params, batch_stats),
                    "from_running": True}
  assert ckpt_lib.read_init_record(str(run)) == record
  # Its run gone (no lock), the same start is accepted without the flag.
  (tmp_path / "source" / ".lock").unlink()
  assert ckpt_lib.restore_init_weights(src)[3]["from_running"] is False


def test_results_json_records_the_loaded_checkpoint_also_after_a_resume(tmp_path):
  first = str(tmp_path / "first")
  main_lib.run(pretrain_run_config(steps=2), first)
  params, batch_stats, step = ckpt_lib.restore_weights(first)
  c = pretrain_run_config(steps=2)
  c.train.init_checkpoint = first
  second = str(tmp_path / "second")
  results = main_lib.run(c, second)
  want = {"path": os.path.abspath(first), "step": 2, "fingerprint": ckpt_lib.fingerprint(params, batch_stats),
          "from_running": False}
  assert step == 2 and results["init_checkpoint"] == want
  assert json.load(open(os.path.join(second, "results.json")))["init_checkpoint"] == want
  assert main_lib.run(c, second)["init_checkpoint"] == want  # a re-run (nothing to train) keeps it
