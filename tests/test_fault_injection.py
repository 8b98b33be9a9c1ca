"""Fault injection, end to end through `medssl-jax train` in real processes (issue 32 item 8).

One tiny pretraining run (12 steps, a checkpoint every 2) is the reference, run once uninterrupted;
every fault below must end with the same state at step 12, bit for bit, or with a one-line refusal
that loses no checkpoint:
- SIGKILL at seeded random points (any line of the console, plus a random delay: some land inside a
  checkpoint write), three times, then the same command again: each restart takes over the dead
  process's lock and skips what the kill tore;
- two writers on one workdir: the second is refused in one line naming the first, which goes on;
- damaged checkpoints of several kinds at once: the resume skips them, saying why; all damaged: one
  line, nothing deleted;
- a full disk (a small tmpfs, where this machine lets the tests mount one): the run stops in one
  line before a save the disk has no room for, keeps its checkpoints, and resumes once there is room.

The unit-level cases (each kind of damage alone, the lock's stale and gs:// paths, SIGINT/SIGTERM)
are in tests/training/test_checkpoint_fallback.py, test_lock.py and tests/commands/test_exit_status.py.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid

import jax
import numpy as np
import pytest

from medssl_jax.errors import USER_ERROR_EXIT
from tests.helpers import pretrain_run_config, restore_full_state, scalar_values

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 12
TIMEOUT = 300

CONFIG = f"""
from tests.helpers import pretrain_run_config
def get_config():
  c = pretrain_run_config(steps={STEPS})
  c.train.log_every = 1
  c.train.keep_checkpoints = 20  # the full-disk case fills the disk with checkpoints
  return c
"""

# The command's own entry; SLOW_STEP=<seconds> makes each train step sleep first (a run that
# lasts long enough for a second writer to meet it).
ENTRY = """
import os, time
from medssl_jax import cli, methods
slow = float(os.environ.get("SLOW_STEP", "0"))
if slow:
  real = methods.jit_train_step
  def jit_train_step(config, method=None):
    step = real(config, method)
    def slowed(state, batch):
      time.sleep(slow)
      return step(state, batch)
    return slowed
  methods.jit_train_step = jit_train_step
import sys
cli.main(["medssl-jax", "train"] + sys.argv[1:])
"""


def _config():
  c = pretrain_run_config(steps=STEPS)
  c.train.log_every, c.train.keep_checkpoints = 1, 20
  return c


def _env(**extra):
  env = dict(os.environ, PYTHONPATH=REPO, **extra)
  env.pop("MEDSSL_DEBUG", None)
  return env


def _args(config_file, workdir):
  return [sys.executable, "-c", ENTRY, f"--config={config_file}", f"--workdir={workdir}"]


def _train(config_file, workdir, **env):
  return subprocess.run(_args(config_file, workdir), cwd=REPO, env=_env(**env), capture_output=True, text=True,
                        timeout=TIMEOUT)


def _steps(workdir):
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=lambda n: (len(n), n))


def _assert_same_state(config, workdir, want):
  got = restore_full_state(config, str(workdir))
  assert int(got.step) == STEPS
  for name in ("params", "batch_stats", "opt_state", "extra"):
    a, b = jax.tree_util.tree_leaves(getattr(got, name)), jax.tree_util.tree_leaves(getattr(want, name))
    assert len(a) == len(b), name
    for x, y in zip(a, b):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("fault_config") / "tiny.py"
  path.write_text(CONFIG)
  return path


@pytest.fixture(scope="module")
def straight(config_file, tmp_path_factory):
  """The uninterrupted run: (its workdir, its state at step 12)."""
  workdir = tmp_path_factory.mktemp("fault_straight") / "run"
  r = _train(config_file, workdir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads((workdir / "results.json").read_text())["completed"]
  return workdir, restore_full_state(_config(), str(workdir))


def _kill_at_a_random_point(config_file, workdir, rng):
  """Starts the command, SIGKILLs it at a random console line after its first step (plus a random
  delay up to 0.5 s); returns the line it was killed at (None: it finished first)."""
  proc = subprocess.Popen(_args(config_file, workdir), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  target, seen = rng.randint(2, 9), 0
  try:
    for line in proc.stderr:
      if " step " in line or line.startswith("step ") or "Wrote" in line:
        seen += 1
        if seen == target:
          time.sleep(rng.uniform(0.0, 0.5))
          proc.kill()
          proc.wait(timeout=60)
          return line.strip()
    proc.wait(timeout=TIMEOUT)
    return None
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.stderr.close()


def test_killed_at_random_points_three_times_then_resumed_is_bit_exact(config_file, straight, tmp_path):
  seed = int(os.environ.get("FAULT_SEED", uuid.uuid4().int % 10_000))  # FAULT_SEED=<n> replays a failure
  rng = random.Random(seed)
  workdir = tmp_path / "run"
  killed_at = [_kill_at_a_random_point(config_file, workdir, rng) for _ in range(3)]
  print(f"seed {seed}; killed at: {killed_at}")
  done = _train(config_file, workdir)
  assert done.returncode == 0, (seed, killed_at, done.stderr[-3000:])
  results = json.loads((workdir / "results.json").read_text())
  assert results["completed"] and results["final_step"] == STEPS, (seed, killed_at)
  _assert_same_state(_config(), workdir, straight[1])
  # A killed invocation writes no results.json: the history holds the steps of the invocations that
  # did (this last one's at least) and says that it has a gap; each loss is the straight run's.
  straight_losses = dict(map(tuple, json.loads((straight[0] / "results.json").read_text())["loss_history"]))
  losses = dict(map(tuple, results["loss_history"]))
  assert list(losses)[-1] == STEPS and {s: straight_losses[s] for s in losses} == losses, (seed, killed_at)
  assert results["loss_history_complete"] is (results["resumed_from_step"] == 0), (seed, killed_at)
  # The event files hold every step: each invocation flushed them at each checkpoint it wrote.
  logged = dict(scalar_values(str(workdir), "train/loss"))
  assert sorted(logged) == list(range(1, STEPS + 1)), (seed, killed_at)
  np.testing.assert_allclose([logged[s] for s in sorted(logged)], [straight_losses[s] for s in sorted(logged)],
                             rtol=1e-6, err_msg=str((seed, killed_at)))
  assert not (workdir / ".lock").exists()


def test_a_second_writer_is_refused_in_one_line_and_the_first_finishes(config_file, straight, tmp_path):
  workdir = tmp_path / "run"
  first = subprocess.Popen(_args(config_file, workdir), cwd=REPO, env=_env(SLOW_STEP="0.5"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + TIMEOUT
    while not (workdir / ".lock").exists() and time.time() < deadline and first.poll() is None:
      time.sleep(0.1)
    holder = json.loads((workdir / ".lock").read_text())
    assert holder["pid"] == first.pid
    second = _train(config_file, workdir)
    assert second.returncode == USER_ERROR_EXIT, second.stderr[-3000:]
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: workdir {workdir} is in use by pid {first.pid} on host "), last
    assert "Traceback" not in second.stderr
    out, err = first.communicate(timeout=TIMEOUT)
  finally:
    if first.poll() is None:
      first.kill()
  assert first.returncode == 0, err[-3000:]
  assert f"Done: step {STEPS}/{STEPS}" in out
  _assert_same_state(_config(), workdir, straight[1])


def _truncate_array_files(step_dir):
  for root, _, files in os.walk(os.path.join(step_dir, "opt_state")):
    if "array_metadatas" in root:
      continue
    for f in files:
      if f not in ("_METADATA", "_sharding", "commit_success.txt", "manifest.ocdbt"):
        p = os.path.join(root, f)
        with open(p, "r+b") as fh:
          fh.truncate(os.path.getsize(p) // 2)


def test_damaged_checkpoints_of_several_kinds_are_skipped_and_all_damaged_is_one_line(config_file, straight,
                                                                                      tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(straight[0], workdir)
  os.remove(workdir / "results.json")
  ck = workdir / "checkpoints"
  _truncate_array_files(ck / "12")                     # torn array data
  os.remove(ck / "10" / "_CHECKPOINT_METADATA")        # a save that never finished
  (ck / "8" / "params" / "_METADATA").write_text("{")  # a torn metadata file
  shutil.rmtree(ck / "6" / "batch_stats")              # an item gone
  resumed = _train(config_file, workdir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  for step, why in ((12, "ValueError"), (10, "no _CHECKPOINT_METADATA"), (8, "params/_METADATA unreadable"),
                    (6, "no 'batch_stats' folder")):
    assert f"checkpoint step {step} in {ck} is damaged ({why}" in resumed.stderr, (step, resumed.stderr[-3000:])
  results = json.loads((workdir / "results.json").read_text())
  assert results["resumed_from_step"] == 4 and results["final_step"] == STEPS
  _assert_same_state(_config(), workdir, straight[1])
  # Damaged steps are moved aside, never deleted.
  assert {"6.damaged", "8.damaged", "10.damaged", "12.damaged"} <= set(_steps(workdir))

  # Every checkpoint damaged: one line naming them; nothing deleted, nothing written.
  workdir2 = tmp_path / "all_damaged"
  shutil.copytree(straight[0], workdir2)
  os.remove(workdir2 / "results.json")
  for step in _steps(workdir2):
    os.remove(workdir2 / "checkpoints" / step / "_CHECKPOINT_METADATA")
  before = sorted(str(p.relative_to(workdir2)) for p in (workdir2 / "checkpoints").rglob("*"))
  refused = _train(config_file, workdir2)
  assert refused.returncode == USER_ERROR_EXIT, refused.stderr[-3000:]
  last = refused.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: no complete checkpoint in {workdir2}/checkpoints: steps "), last
  assert "Traceback" not in refused.stderr
  assert sorted(str(p.relative_to(workdir2)) for p in (workdir2 / "checkpoints").rglob("*")) == before


@pytest.fixture
def small_disk(tmp_path):
  """A 12 MiB tmpfs (skips where this machine does not let the tests mount one)."""
  mount = tmp_path / "disk"
  mount.mkdir()
  r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True,
                     text=True)
  if r.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): the full-disk case needs one")
  try:
    yield mount
  finally:
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_stops_in_one_line_keeps_the_checkpoints_and_resumes(config_file, straight, small_disk):
  workdir = small_disk / "run"
  full = _train(config_file, workdir)
  assert full.returncode == USER_ERROR_EXIT, full.stderr[-3000:]
  last = full.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: the disk of {workdir}/checkpoints has "), last
  assert "free space there" in last and "run the same command again; it resumes from step " in last
  assert "Traceback" not in full.stderr
  kept = _steps(workdir)
  assert kept and all(s.isdigit() for s in kept), kept  # complete checkpoints only: no torn tmp folder
  stopped_before = int(last.split("the checkpoint of step ")[1].split()[0])
  assert int(kept[-1]) == stopped_before - 2 and f"resumes from step {kept[-1]}," in last

  subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
  resumed = _train(config_file, workdir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  results = json.loads((workdir / "results.json").read_text())
  assert results["resumed_from_step"] == int(kept[-1]) and results["final_step"] == STEPS
  _assert_same_state(_config(), workdir, straight[1])
