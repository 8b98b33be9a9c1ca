"""The console (medssl_jax/commands/console.py): short lines, no third-party chatter, on a real run."""
import logging
import os
import re
import subprocess
import sys

from medssl_jax.commands import console

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _record(path, level, message="m"):
  return logging.LogRecord("x", level, path, 1, message, None, None)


def test_library_info_is_dropped_and_their_warnings_kept():
  quiet = console._QuietLibraries()
  assert not quiet.filter(_record("/site-packages/jax/_src/xla_bridge.py", logging.INFO))
  assert not quiet.filter(_record("/site-packages/orbax/checkpoint/x.py", logging.INFO))
  assert quiet.filter(_record("/site-packages/orbax/checkpoint/x.py", logging.WARNING))
  assert quiet.filter(_record("/work/medssl_jax/training/loop.py", logging.INFO))
  # Orbax's warnings about the read-only managers we open on purpose: dropped; the same words from our code kept.
  orbax = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
  assert not quiet.filter(_record(orbax, logging.WARNING, "Given directory is read only=/w/checkpoints"))
  assert not quiet.filter(_record(orbax, logging.WARNING, "CheckpointManagerOptions.read_only=True, setting create=False."))
  assert quiet.filter(_record(orbax, logging.ERROR, "Given directory is read only=/w/checkpoints"))
  assert quiet.filter(_record("/work/medssl_jax/x.py", logging.WARNING, "Given directory is read only=/w"))


def test_short_lines():
  fmt = console.ShortFormatter()
  assert re.fullmatch(r"\d\d:\d\d:\d\d step 2/4", fmt.format(_record("loop.py", logging.INFO, "step 2/4")))
  assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING: careful", fmt.format(_record("a.py", logging.WARNING, "careful")))


def test_a_run_prints_only_our_lines(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="")  # let JAX look for a TPU: its 'Unable to initialize' note must not show
  env.pop("MEDSSL_DEBUG", None)
  env.pop("TF_ENABLE_ONEDNN_OPTS", None)
  r = subprocess.run([sys.executable, "-m", "medssl_jax", "train", "--config=demo", f"--workdir={tmp_path / 'w'}",
                      "--config.train.num_steps=2", "--config.train.log_every=1", "--config.optim.warmup_steps=1",
                      "--config.probe.enabled=False", "--config.train.batch_size=16", "--config.data.pipeline=tf"],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  lines = [line for line in r.stderr.splitlines() if line.strip()]
  assert lines and all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines), lines
  assert any("step 2/2" in line for line in lines)
  for noise in ("Unable to initialize backend", "oneDNN", "absl::InitializeLog", "xla_bridge.py"):
    assert noise not in r.stderr, noise
