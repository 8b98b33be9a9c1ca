"""A run that fails ends its process, promptly and non-zero, in every mode and host pipeline.

Each run is a real `python -m medssl_jax train` process under a timeout, with a fault injected:
a truncated JPEG in the manifest (read by the input pipeline) or an exception in the step. A
process that the fault leaves hanging (a thread, a tf.data iterator, an async checkpoint)
fails the test by its timeout, or by the watchdog's thread dump on its stderr.
"""
import os
import subprocess
import sys

import pytest

from medssl_jax.training import checkpoint as ckpt_lib
from tests.helpers import FAST_XLA, write_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300  # a hang is forever; a run here takes well under a minute alone on 2 cores

CONFIG = """
from configs.base import finalize
from tests.helpers import tiny_config


def get_config(arg):
  mode, source = arg.split(",")
  c = tiny_config(batch_size=16, image_size=16, steps=6)
  c.mode = mode
  c.finetune.init = "random"
  c.eval.num_replicates = 10
  c.data.verify_images = False  # the fault must reach the pipeline
  if source == "synthetic":
    c.data.synthetic.num_cases, c.data.synthetic.image_size = 48, 16
  else:
    c.data.source, c.data.path = "manifest", source
  c.aug.blur_prob = 0.0
  c.train.log_every = c.train.checkpoint_every = 2
  c.train.prefetch = 1
  return finalize(c)
"""

# Runs the entry point with its step replaced by one that raises at the 3rd call (after the
# asynchronous checkpoint of step 2 has started).
STEP_FAULT = """
import sys
from medssl_jax.training import loop

real_run = loop.run


def run(state, batches, train_step, **kwargs):
  calls = [0]

  def step(state, batch):
    calls[0] += 1
    if calls[0] == 3:
      raise RuntimeError("injected fault in step 3")
    return train_step(state, batch)
  return real_run(state, batches, step, **kwargs)


loop.run = run
from medssl_jax.commands import train
train.cli(sys.argv)
"""


def _run(tmp_path, mode, source, pipeline, step_fault=False):
  (tmp_path / "cfg.py").write_text(CONFIG)
  args = [f"--config={tmp_path / 'cfg.py'}:{mode},{source}", f"--workdir={tmp_path / 'run'}",
          f"--config.data.pipeline={pipeline}"]
  command = [sys.executable, "-c", STEP_FAULT] if step_fault else [sys.executable, "-m", "medssl_jax", "train"]
  env = dict(os.environ, XLA_FLAGS=FAST_XLA, JAX_PLATFORMS="cpu",
             PYTHONPATH=REPO)
  env.pop("MEDSSL_DEBUG", None)
  try:
    r = subprocess.run(command + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
  except subprocess.TimeoutExpired as e:
    pytest.fail(f"the failed run did not exit within {TIMEOUT} s; its stderr ends:\n{(e.stderr or b'')[-3000:]}")
  assert "Timeout (" not in r.stderr, "the exit watchdog had to end the process:\n" + r.stderr[-5000:]
  return r, r.stderr.strip().splitlines()


@pytest.mark.parametrize("mode,pipeline", [("pretrain", "tf"), ("finetune", "numpy")])
def test_unreadable_image_ends_the_run_with_one_line(tmp_path, mode, pipeline):
  # 32 training images, one cut short: it is in the first or the second batch of 16.
  manifest = write_manifest(tmp_path / "data", 40, truncated=(5,),
                            splits=lambda i: "train" if i < 32 else ("val" if i < 36 else "test"))
  r, lines = _run(tmp_path, mode, manifest, pipeline)
  assert r.returncode == 2, r.stderr[-3000:]
  assert lines[-1].startswith("error: cannot decode image ") and "im5.jpg" in lines[-1], lines[-1]
  assert "Traceback" not in r.stderr


@pytest.mark.parametrize("mode,pipeline", [("linear_eval", "tf"), ("pretrain", "numpy")])
def test_fault_in_the_step_ends_the_run_and_keeps_the_checkpoint(tmp_path, mode, pipeline):
  r, lines = _run(tmp_path, mode, "synthetic", pipeline, step_fault=True)
  assert r.returncode == 1, r.stderr[-3000:]
  assert "Traceback" in r.stderr and "injected fault in step 3" in r.stderr  # a bug: its traceback
  assert lines[-1] == "error: unexpected RuntimeError: injected fault in step 3 (traceback above)"
  # The asynchronous checkpoint of step 2, in flight when step 3 failed, was completed.
  assert ckpt_lib.restore_weights(str(tmp_path / "run"))[2] == 2

