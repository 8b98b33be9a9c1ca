"""Issue 17's non-local workdir test: pretrain -> preempted -> resumed -> linear evaluation, with
every workdir on gs:// (an offline GCS emulator, tests/gcs_emulator.py), nothing on local disk.

Each run is a real `python -m medssl_jax train` process (its clients read the emulator's address
from the environment at import). Orbax's array data reaches the emulator through tensorstore's
gcs driver, Orbax's directory handling and our JSON files through etils.epath -> gcsfs, and the
TensorBoard events through tensorboard's own event writer -> fsspec -> gcsfs.

The runs have no TensorFlow (`sys.modules["tensorflow"] = None`, data.pipeline='numpy'): with
TensorFlow, clu's SummaryWriter writes through TensorFlow's GCS filesystem, whose endpoint
(storage.googleapis.com) cannot be redirected to an emulator, so that path is not tested offline.

"Nothing on local disk" is checked twice: the runs' current directory, HOME and TMPDIR are empty
folders that must stay empty (and no folder named `gs:` appears), and a Python audit hook in each
run reports every file or folder it opens for writing, creates, renames or removes outside the
XLA compilation cache, /dev and /proc (thread names) (writes from C++ that bypass Python, e.g. tensorstore's, are not seen by
the hook; the folder checks cover the usual places).
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from medssl_jax import errors
from tests import gcs_emulator

pytest.importorskip("gcp_storage_emulator", reason="the `test` extra: pip install -e .[test]")
pytest.importorskip("gcsfs", reason="the `test` extra: pip install -e .[test]")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300

CONFIG = """
from configs.base import finalize
from tests.helpers import tiny_config


def get_config(mode):
  c = tiny_config(batch_size=16, image_size=16, steps=6)
  c.mode = mode
  c.data.source, c.data.pipeline = "synthetic", "numpy"
  c.data.synthetic.num_cases, c.data.synthetic.image_size = 48, 16
  c.aug.blur_prob = 0.0
  c.train.log_every, c.train.checkpoint_every, c.train.prefetch = 1, 2, 1
  if mode == "linear_eval":
    c.train.num_steps, c.optim.warmup_steps = 2, 1
    c.eval.num_replicates = 10
  return finalize(c)
"""

# The entry point without TensorFlow, with an audit hook that reports local writes, and (when
# SIGTERM_AT is set) a real SIGTERM at that train step, as a preempted TPU VM receives.
RUN = r"""
import os, sys
sys.modules["tensorflow"] = None
ALLOWED = tuple(p for p in (os.environ.get("JAX_COMPILATION_CACHE_DIR"), "/dev/", "/proc/") if p)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def report(event, path):
  if isinstance(path, int) or path is None:
    return
  path = os.path.abspath(os.fsdecode(path))
  if not path.startswith(ALLOWED):
    sys.stderr.write(f"LOCAL WRITE {event} {path}\n")


def hook(event, args):
  if event == "open" and args[0] is not None:
    mode, flags = args[1] or "", args[2] or 0
    if any(c in mode for c in "wax+") or flags & WRITE_FLAGS:
      report(event, args[0])
  elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.symlink", "os.link"):
    report(event, args[0])
  elif event in ("os.rename", "shutil.move", "shutil.copyfile"):
    report(event, args[1])


sys.addaudithook(hook)
from medssl_jax import methods
at = int(os.environ.get("SIGTERM_AT", "0"))
if at:
  from tests.helpers import sigterm_at_call
  methods.jit_train_step = sigterm_at_call(methods.jit_train_step, at)
from medssl_jax.commands import train
train.cli(sys.argv)
"""


@pytest.fixture
def gcs():
  with gcs_emulator.running("bucket") as url:
    yield url


def test_pretrain_resume_and_linear_eval_with_gs_workdirs(gcs, tmp_path):
  inputs, cwd, home, tmp = (tmp_path / d for d in ("inputs", "cwd", "home", "tmp"))
  for d in (inputs, cwd, home, tmp):
    d.mkdir()
  (inputs / "cfg.py").write_text(CONFIG)
  env = dict(os.environ, **gcs_emulator.env(gcs), HOME=str(home), TMPDIR=str(tmp), PYTHONPATH=REPO,
             PYTHONDONTWRITEBYTECODE="1", JAX_PLATFORMS="cpu")
  env.pop("MEDSSL_DEBUG", None)

  def run(mode, workdir, *flags, sigterm_at=0):
    # A preempted run exits with errors.RESUMABLE_EXIT (75: "run the same command again").
    args = [sys.executable, "-c", RUN, f"--config={inputs / 'cfg.py'}:{mode}", f"--workdir={workdir}", *flags]
    t = time.time()
    r = subprocess.run(args, cwd=cwd, env=dict(env, SIGTERM_AT=str(sigterm_at)), capture_output=True, text=True,
                       timeout=TIMEOUT)
    print(f"{mode} {workdir}: {time.time() - t:.1f} s")
    assert r.returncode == (errors.RESUMABLE_EXIT if sigterm_at else 0), r.stderr[-5000:]
    assert "LOCAL WRITE" not in r.stderr, [l for l in r.stderr.splitlines() if "LOCAL WRITE" in l]
    return r

  fs = gcs_emulator.gcsfs_filesystem(gcs)

  def read_json(path):
    return json.loads(fs.cat_file(path))

  # Pretraining, preempted by SIGTERM in its 3rd step: it checkpoints step 3 on gs:// and exits.
  run("pretrain", "gs://bucket/run", sigterm_at=3)
  first = read_json("bucket/run/results.json")
  assert first["preempted"] and first["final_step"] == 3
  assert sorted(p.rsplit("/", 1)[1] for p in fs.ls("bucket/run/checkpoints")) == ["2", "3"]

  # The same command again resumes from the gs:// checkpoint (the settings check reads
  # config.json there) and finishes; the wall time adds the first invocation's.
  run("pretrain", "gs://bucket/run")
  second = read_json("bucket/run/results.json")
  assert second["completed"] and second["final_step"] == 6 and second["resumed_from_step"] == 3
  assert second["wall_time_sec"] == pytest.approx(first["wall_time_sec"] + second["wall_time_this_invocation_sec"])
  assert read_json("bucket/run/config.json")["train"]["num_steps"] == 6

  # An uninterrupted run, also on gs://: the resumed run's losses of steps 4-6 are its losses.
  run("pretrain", "gs://bucket/straight")
  straight = read_json("bucket/straight/results.json")
  resumed_losses = dict(map(tuple, second["loss_history"]))
  straight_losses = dict(map(tuple, straight["loss_history"]))
  assert sorted(resumed_losses) == [1, 2, 3, 4, 5, 6]  # the history spans both invocations
  assert [resumed_losses[s] for s in (1, 2, 3)] == [dict(map(tuple, first["loss_history"]))[s] for s in (1, 2, 3)]
  np.testing.assert_allclose([resumed_losses[s] for s in (4, 5, 6)], [straight_losses[s] for s in (4, 5, 6)],
                             rtol=1e-5)

  # Linear evaluation of the gs:// run's encoder, into another gs:// workdir.
  run("linear_eval", "gs://bucket/ft", "--config.train.init_checkpoint=gs://bucket/run")
  ft = read_json("bucket/ft/results.json")
  assert ft["completed"] and ft["final_step"] == 2
  assert 0.0 <= ft["test"]["top1"]["value"] <= 1.0
  with fs.open("bucket/ft/predictions_test.npz", "rb") as f:
    saved = np.load(f)
    assert saved["probs"].shape[0] == len(saved["labels"]) > 0

  objects = fs.find("bucket")
  for wd in ("run", "straight", "ft"):
    names = [o[len(f"bucket/{wd}/"):] for o in objects if o.startswith(f"bucket/{wd}/")]
    assert {"config.json", "results.json"} <= set(names), names
    assert any(n.startswith("events.out.tfevents.") for n in names), names
    assert any(n.startswith("checkpoints/") and n.endswith("/_CHECKPOINT_METADATA") for n in names), names
  assert not any(o.endswith(".tmp") for o in objects), objects

  # Nothing reached the local disk.
  for d in (cwd, home, tmp):
    assert [str(p) for p in d.rglob("*")] == [], d
  assert not os.path.exists(os.path.join(REPO, "gs:"))
