"""Checkpoint restore that verifies and falls back, and retention that deletes only what it wrote
(medssl_jax/training/checkpoint.py; issue 32 item 3).

Tiny states (a few arrays) through the real `Checkpointer`; one tiny pretraining run end to end
(a damaged latest checkpoint, then a resume that is bit-exact with the run that wrote it).

The retention rule tested here: a `Checkpointer` deletes only steps it saved itself; once one of its
saves has finished, its own finished steps beyond the newest `keep` are deleted (so `keep` finished
ones plus the one being written exist). Steps already in the folder when it was opened (an earlier
invocation's, the one resumed from, damaged steps moved aside) are never deleted.
"""
import logging
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax import errors
from medssl_jax import main as main_lib
from medssl_jax.errors import UserError
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training.state import TrainState
from tests import gcs_emulator
from tests.helpers import pretrain_run_config, restore_full_state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _state(value: float, width: int = 3) -> TrainState:
  return TrainState(step=jnp.int32(0), params={"w": jnp.full((width,), value), "b": jnp.full((2, 2), value)},
                    batch_stats={"mean": jnp.full((2,), value)}, opt_state={"mu": jnp.full((width,), value)})


def _write(directory, steps, keep=5) -> None:
  ck = ckpt_lib.Checkpointer(str(directory), keep=keep)
  for s in steps:
    ck.save(s, _state(float(s)))
  ck.close()


def _steps(directory) -> list:
  return sorted(os.listdir(directory), key=lambda n: (len(n), n))


def _data_files(step_dir):
  """The array data files of a step's params (not its metadata)."""
  out = []
  for root, _, files in os.walk(os.path.join(step_dir, "params")):
    for f in files:
      if f not in ("_METADATA", "_sharding", "commit_success.txt", "manifest.ocdbt") and "array_metadatas" not in root:
        out.append(os.path.join(root, f))
  assert out, f"no data files under {step_dir}/params"
  return out


def _delete_a_data_file(step_dir):
  for p in _data_files(step_dir):
    os.remove(p)


def _truncate_a_data_file(step_dir):
  for p in _data_files(step_dir):
    with open(p, "r+b") as f:
      f.truncate(os.path.getsize(p) // 2)


DAMAGE = {
    "a deleted array file": _delete_a_data_file,
    "a truncated array file": _truncate_a_data_file,
    "no step metadata (a save that never finished)": lambda d: os.remove(os.path.join(d, "_CHECKPOINT_METADATA")),
    "an item without its metadata": lambda d: os.remove(os.path.join(d, "params", "_METADATA")),
    "a truncated item metadata": lambda d: open(os.path.join(d, "params", "_METADATA"), "r+b").truncate(7),
    "a missing item": lambda d: shutil.rmtree(os.path.join(d, "params")),
}
REASON = {
    "a deleted array file": r"ValueError: NOT_FOUND: .*",
    "a truncated array file": r"ValueError: .*",
    "no step metadata (a save that never finished)": r"no _CHECKPOINT_METADATA: the save never finished",
    "an item without its metadata": r"no params/_METADATA",
    "a truncated item metadata": r"params/_METADATA unreadable \(JSONDecodeError: .*\)",
    "a missing item": r"no 'params' folder",
}


@pytest.fixture
def warnings_logged():
  records = []

  class Collect(logging.Handler):
    def emit(self, record):
      records.append(record.getMessage())
  handler = Collect(level=logging.WARNING)
  logger = logging.getLogger("absl")
  logger.addHandler(handler)
  yield records
  logger.removeHandler(handler)


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_latest_checkpoint_is_skipped_and_the_previous_restored(tmp_path, kind, warnings_logged):
  d = tmp_path / "checkpoints"
  _write(d, (2, 4, 6))
  DAMAGE[kind](str(d / "6"))
  ck = ckpt_lib.Checkpointer(str(d), keep=3)
  assert ck.latest_step() == 6  # Orbax lists it; restore verifies
  state = ck.restore(_state(0.0))
  assert int(state.step) == 4
  for tree in (state.params, state.batch_stats, state.opt_state):
    for leaf in jax.tree_util.tree_leaves(tree):
      np.testing.assert_array_equal(np.asarray(leaf), 4.0)
  skipped = [m for m in warnings_logged if "is damaged" in m]
  assert len(skipped) == 1 and re.fullmatch(rf"checkpoint step 6 in {re.escape(str(d))} is damaged \({REASON[kind]}\): "
                                             rf"skipping it", skipped[0]), skipped
  # The damaged step is moved aside, not deleted, and the run can write step 6 again.
  assert _steps(d) == ["2", "4", "6.damaged"] and os.listdir(d / "6.damaged")
  ck.save(6, _state(66.0))
  ck.close()
  again = ckpt_lib.Checkpointer(str(d), keep=3)
  assert int(again.restore(_state(0.0)).step) == 6
  again.close()
  assert _steps(d) == ["2", "4", "6", "6.damaged"]


def test_every_checkpoint_damaged_is_one_line_naming_the_folder_and_the_steps(tmp_path):
  d = tmp_path / "checkpoints"
  _write(d, (2, 4, 6))
  _truncate_a_data_file(str(d / "6"))
  os.remove(d / "4" / "_CHECKPOINT_METADATA")
  os.remove(d / "2" / "params" / "_METADATA")
  ck = ckpt_lib.Checkpointer(str(d), keep=3)
  with pytest.raises(UserError) as e:
    ck.restore(_state(0.0))
  ck.close()
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith(f"no complete checkpoint in {d}: steps 6, 4, 2 are damaged (step 6: ValueError: ")
  assert message.endswith("; step 4: no _CHECKPOINT_METADATA: the save never finished; step 2: no params/_METADATA); "
                          "move them out of the folder to start afresh, or use another --workdir")
  assert _steps(d) == ["2", "4", "6"]  # nothing moved nor deleted


def test_restore_weights_falls_back_without_touching_the_other_runs_folder(tmp_path, warnings_logged):
  workdir = tmp_path / "run"
  _write(workdir / "checkpoints", (2, 4))
  _delete_a_data_file(str(workdir / "checkpoints" / "4"))
  params, batch_stats, step = ckpt_lib.restore_weights(str(workdir))
  assert step == 2
  np.testing.assert_array_equal(params["w"], 2.0)
  np.testing.assert_array_equal(batch_stats["mean"], 2.0)
  assert any(m.startswith(f"checkpoint step 4 in {workdir}/checkpoints is damaged (ValueError: NOT_FOUND")
             for m in warnings_logged)
  assert _steps(workdir / "checkpoints") == ["2", "4"]  # a reader moves nothing


def test_an_explicit_damaged_step_is_refused_and_a_mismatch_is_not_taken_for_damage(tmp_path):
  d = tmp_path / "checkpoints"
  _write(d, (2, 4))
  os.remove(d / "2" / "_CHECKPOINT_METADATA")
  ck = ckpt_lib.Checkpointer(str(d), keep=3)
  with pytest.raises(UserError, match=rf"^no complete checkpoint in {d}: step 2 is damaged \(step 2: no "
                                      rf"_CHECKPOINT_METADATA: the save never finished\); move it out"):
    ck.restore(_state(0.0), step=2)
  # Another architecture: the mismatch is reported at once, older steps are not tried, nothing moved.
  with pytest.raises(UserError, match=r"step 4, params\) does not match the configured architecture"):
    ck.restore(_state(0.0, width=5))
  ck.close()
  assert _steps(d) == ["2", "4"]


@pytest.mark.parametrize("keep", [0, -1])
def test_keep_checkpoints_below_one_is_refused_and_nothing_is_deleted(tmp_path, keep):
  d = tmp_path / "checkpoints"
  _write(d, (2, 4))
  with pytest.raises(UserError) as e:
    ckpt_lib.Checkpointer(str(d), keep=keep)
  assert str(e.value) == (f"train.keep_checkpoints={keep} must be >= 1 (how many of its newest checkpoints a run "
                          f"keeps; a run never deletes checkpoints it did not write)")
  assert _steps(d) == ["2", "4"]


def test_a_fresh_folder_keeps_its_newest_keep_checkpoints(tmp_path):
  d = tmp_path / "checkpoints"
  ck = ckpt_lib.Checkpointer(str(d), keep=2)
  for s in (1, 2, 3, 4, 5):
    ck.save(s, _state(float(s)))
    ck.wait()
    assert _steps(d) == [str(x) for x in range(max(1, s - 1), s + 1)]
  ck.close()
  assert _steps(d) == ["4", "5"]


def test_a_resume_with_keep_1_never_deletes_the_checkpoints_it_did_not_write(tmp_path):
  d = tmp_path / "checkpoints"
  _write(d, (2, 4), keep=3)  # an earlier invocation
  ck = ckpt_lib.Checkpointer(str(d), keep=1)
  assert int(ck.restore(_state(0.0)).step) == 4
  ck.save(6, _state(6.0))
  assert {"2", "4"} <= set(_steps(d))  # while 6 is written
  ck.save(8, _state(8.0))  # 6 finished: kept while 8 is being written
  assert {"2", "4", "6"} <= set(_steps(d))
  ck.close()  # 8 finished: 6, its own, goes
  assert _steps(d) == ["2", "4", "8"]
  again = ckpt_lib.Checkpointer(str(d), keep=1)  # the next invocation: 8 is not its own either
  again.save(10, _state(10.0))
  again.close()
  assert _steps(d) == ["2", "4", "8", "10"]


def test_a_save_the_disk_has_no_room_for_is_refused_before_writing_and_keeps_the_others(tmp_path, monkeypatch):
  directory = tmp_path / "ck"
  ck = ckpt_lib.Checkpointer(str(directory), keep=5)
  ck.save(2, _state(2.0))
  ck.wait()
  need = (3 + 4 + 2 + 3) * 4 + ckpt_lib.CHECKPOINT_OVERHEAD_BYTES  # the state's float32 bytes + metadata room
  real = os.statvfs

  def statvfs(path, free):
    disk = real(path)
    return os.statvfs_result((disk.f_bsize, 1, disk.f_blocks, free, free) + tuple(disk)[5:])
  monkeypatch.setattr(ckpt_lib.os, "statvfs", lambda p: statvfs(p, need - 1))
  with pytest.raises(errors.DiskFullError) as e:
    ck.save(4, _state(4.0))
  assert str(e.value) == (f"the disk of {directory} has {(need - 1) / 2**20:.1f} MiB free and the checkpoint of step 4 "
                          f"needs about {need / 2**20:.1f} MiB: free space there (or use a --workdir on a disk with room) "
                          f"and run the same command again; it resumes from step 2, the newest checkpoint kept")
  assert _steps(directory) == ["2"]  # nothing of step 4 written, step 2 kept
  monkeypatch.setattr(ckpt_lib.os, "statvfs", lambda p: statvfs(p, need))  # just enough room
  ck.save(4, _state(4.0))
  ck.close()
  assert _steps(directory) == ["2", "4"]


def test_a_pretraining_run_resumes_through_a_damaged_latest_checkpoint(tmp_path, warnings_logged):
  config = pretrain_run_config(steps=4)
  workdir = str(tmp_path / "run")
  assert main_lib.run(config, workdir)["completed"]
  want = restore_full_state(config, workdir)  # step 4 as the uninterrupted run wrote it
  _truncate_a_data_file(os.path.join(workdir, "checkpoints", "4"))
  os.remove(os.path.join(workdir, "results.json"))
  results = main_lib.run(config, workdir)
  assert results["completed"] and results["resumed_from_step"] == 2 and results["final_step"] == 4
  assert any(m.startswith(f"checkpoint step 4 in {workdir}/checkpoints is damaged (ValueError: ") for m in warnings_logged)
  assert _steps(os.path.join(workdir, "checkpoints")) == ["2", "4", "4.damaged"]
  got = restore_full_state(config, workdir)
  assert int(got.step) == 4
  for name in ("params", "batch_stats", "opt_state", "extra"):
    for a, b in zip(jax.tree_util.tree_leaves(getattr(got, name)), jax.tree_util.tree_leaves(getattr(want, name))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


# A tiny state saved to / restored from a gs:// folder in a process of its own (the emulator's
# address reaches tensorstore and gcsfs through the environment at import).
GS_SCRIPT = r"""
import sys
sys.modules["tensorflow"] = None
import jax.numpy as jnp
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training.state import TrainState

directory, action = sys.argv[1], sys.argv[2]


def state(v):
  return TrainState(step=jnp.int32(0), params={"w": jnp.full((3,), v)}, batch_stats={"m": jnp.full((2,), v)},
                    opt_state={"mu": jnp.full((3,), v)})


ck = ckpt_lib.Checkpointer(directory, keep=3)
if action == "write":
  for s in (2, 4):
    ck.save(s, state(float(s)))
else:
  restored = ck.restore(state(0.0))
  print("restored", int(restored.step), float(restored.params["w"][0]), flush=True)
  ck.save(6, state(6.0))
ck.close()
"""


def test_gs_a_damaged_latest_checkpoint_is_skipped_and_moved_aside(tmp_path):
  pytest.importorskip("gcp_storage_emulator", reason="the `test` extra: pip install -e .[test]")
  pytest.importorskip("gcsfs", reason="the `test` extra: pip install -e .[test]")
  with gcs_emulator.running() as url:
    env = dict(os.environ, **gcs_emulator.env(url), PYTHONPATH=REPO)

    def run(action):
      r = subprocess.run([sys.executable, "-c", GS_SCRIPT, "gs://bucket/ck", action], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
      assert r.returncode == 0, r.stderr[-3000:]
      return r
    run("write")
    fs = gcs_emulator.gcsfs_filesystem(url)
    data = fs.find("bucket/ck/4/params/d")
    assert data
    for p in data:
      fs.rm_file(p)
    r = run("restore")
    assert r.stdout.split() == ["restored", "2", "2.0"]
    assert "checkpoint step 4 in gs://bucket/ck is damaged (ValueError: NOT_FOUND" in r.stderr
    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls("bucket/ck")) == ["2", "4.damaged", "6"]
    assert fs.find("bucket/ck/4.damaged/params")  # moved, not deleted
