"""User errors: one line `error: ...` and a non-zero exit, no traceback; truncated images named;
the SIGTERM handler of a loop restored only when the loop installed it."""
import errno
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from medssl_jax import errors
from medssl_jax.training import loop
from tests.helpers import FAST_XLA, write_jpegs, write_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def manifest_cfg(path, verify):
  from configs.base import get_base_config
  c = get_base_config().data
  c.source, c.path, c.verify_images = "manifest", path, verify
  return c


def test_a_truncated_jpeg_is_caught_at_start_naming_file_and_row(tmp_path):
  from input_pipeline import sources
  paths = write_jpegs(tmp_path, 3, truncated=(1,))
  with Image.open(paths[1]) as im:
    im.verify()  # the header is intact: PIL's verify() alone lets it through
  with pytest.raises(errors.UserError, match=r"1 of 3 image file\(s\) cannot be decoded: unreadable image "
                                            r".*im1\.jpg.*truncated"):
    sources.verify_images(paths)
  sources.verify_images([paths[0], paths[2]])  # intact files pass
  manifest = write_manifest(tmp_path / "m", 4, truncated=(2,))
  with pytest.raises(errors.UserError, match=r"unreadable image .*im2\.jpg \(data row 3 of .*manifest\.csv\)"):
    sources.load_source(manifest_cfg(manifest, verify=True), "train")
  assert len(sources.load_source(manifest_cfg(manifest, verify=False), "train")) == 4


@pytest.mark.parametrize("backend", ["tf", "numpy"])
def test_both_pipelines_name_the_file_they_cannot_decode(tmp_path, backend):
  from input_pipeline import backends, sources
  from tests.helpers import tiny_config
  manifest = write_manifest(tmp_path, 8, truncated=(5,))
  src = sources.load_source(manifest_cfg(manifest, verify=False), "train")
  c = tiny_config(image_size=16)
  it = backends.get(backend).supervised_iterator(src, aug_cfg=c.aug, image_size=16, channels=3, global_batch=4,
                                                 seed=0, start_step=0)
  with pytest.raises(errors.UserError, match=r"cannot decode image \S*im5\.jpg"):
    for _ in range(4):  # im5 is in the first or the second batch of 4
      next(it)
  with pytest.raises(errors.UserError, match=r"cannot decode image \S*im5\.jpg"):  # evaluation's arrays
    backends.get(backend).make_eval_arrays(src, 16, 3, batch_size=4)


def test_numpy_decode_names_the_file(tmp_path):
  from input_pipeline import numpy_pipeline
  good, bad = write_jpegs(tmp_path, 2, truncated=(1,))
  assert numpy_pipeline._decode(good).shape == (48, 48, 3)
  with pytest.raises(errors.UserError, match=r"cannot decode image .*im1\.jpg \(OSError: image file is truncated"):
    numpy_pipeline._decode(bad)


def test_user_errors_and_bugs_are_told_apart():
  def raise_here():
    raise ValueError("a refusal written by this project")

  with pytest.raises(ValueError) as info:
    raise_here()
  assert errors.is_user_error(info.value)
  with pytest.raises(ValueError) as info:
    np.zeros(3).reshape(2, 2)  # raised inside NumPy: a bug, not a refusal
  assert not errors.is_user_error(info.value)
  assert errors.is_user_error(errors.UserError("x")) and isinstance(errors.MissingFileError("x"), FileNotFoundError)
  assert isinstance(errors.NonFiniteLossError("x"), FloatingPointError)
  assert errors.one_line(errors.UserError("first\n  second\n")) == "first; second"


def _exit_code(e, capsys, monkeypatch):
  monkeypatch.setattr(errors, "arm_exit_watchdog", lambda code: None)  # never in the test process
  try:
    raise e
  except Exception as caught:  # noqa: BLE001
    with pytest.raises(SystemExit) as exit_info:
      errors.exit_on_error(caught)
  return exit_info.value.code, capsys.readouterr().err


def test_exit_on_error_prints_one_line_unless_debugging(capsys, monkeypatch):
  monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
  code, err = _exit_code(errors.UserError("bad setting\nfix it"), capsys, monkeypatch)
  assert code == 2 and err == "error: bad setting; fix it\n"
  code, err = _exit_code(RuntimeError("boom"), capsys, monkeypatch)  # a bug: its traceback, exit 1
  assert code == 1 and "Traceback" in err and err.splitlines()[-1].startswith("error: unexpected RuntimeError: boom")
  monkeypatch.setenv(errors.DEBUG_ENV, "1")
  code, err = _exit_code(errors.UserError("bad setting"), capsys, monkeypatch)
  assert code == 2 and "Traceback" in err and err.splitlines()[-1] == "error: bad setting"


def test_a_full_disk_anywhere_in_the_chain_is_one_line_naming_the_fix(capsys, monkeypatch):
  monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
  full = OSError(errno.ENOSPC, "No space left on device", "/data/run/results.json")
  code, err = _exit_code(full, capsys, monkeypatch)
  assert code == 2 and err == ("error: the disk is full (No space left on device writing /data/run/results.json): free "
                               "space there and run the same command again; a training run resumes from its newest "
                               "complete checkpoint\n")
  try:  # raised while a library handled it (the chain's cause), no file name
    raise RuntimeError("write failed") from OSError(errno.EDQUOT, "Disk quota exceeded")
  except RuntimeError as e:
    wrapped = e
  code, err = _exit_code(wrapped, capsys, monkeypatch)
  assert code == 2 and err.startswith("error: the disk is full (Disk quota exceeded): free space there")
  code, err = _exit_code(OSError(errno.EIO, "Input/output error"), capsys, monkeypatch)  # another OSError: a bug
  assert code == 1 and "Traceback" in err


def _cli(tmp_path, *overrides, env=None):
  env = dict(os.environ, XLA_FLAGS=FAST_XLA, JAX_PLATFORMS="cpu",
             **(env or {}))
  env.pop(errors.DEBUG_ENV, None)
  return subprocess.run([sys.executable, "-m", "medssl_jax", "train", "--config=configs/demo.py",
                         f"--workdir={tmp_path / 'run'}", *overrides], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize("case", ["batch", "npz"])
def test_command_line_refusal_is_one_line(tmp_path, case):
  if case == "batch":
    r = _cli(tmp_path, "--config.train.batch_size=12")
    expected = "error: train.batch_size=12 is not divisible by the 8 devices of the mesh"
  else:
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    r = _cli(tmp_path, "--config.data.source=npz", f"--config.data.path={tmp_path / 'bad.npz'}")
    expected = f"error: {tmp_path / 'bad.npz'} is not a readable .npz file (BadZipFile"
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2, r.stderr[-3000:]
  assert lines[-1].startswith(expected), lines[-1]
  assert "Traceback" not in r.stderr


@pytest.fixture
def restore_sigterm():
  before = signal.getsignal(signal.SIGTERM)
  yield
  signal.signal(signal.SIGTERM, before)


def test_stop_flag_restores_only_a_handler_it_installed(restore_sigterm, monkeypatch):
  def outside(signum, frame):
    pass

  def runtime_handler(signum, frame):  # e.g. JAX's preemption notifier, set while the loop runs
    pass

  signal.signal(signal.SIGTERM, outside)
  with loop.StopFlag() as flag:  # one process: the loop's own handler, then the previous one again
    assert signal.getsignal(signal.SIGTERM) == flag._handle
  assert signal.getsignal(signal.SIGTERM) is outside

  flag = loop.StopFlag()
  flag._multi = True  # several processes: JAX's sync point decides, no handler is installed
  with flag:
    assert signal.getsignal(signal.SIGTERM) is outside
    signal.signal(signal.SIGTERM, runtime_handler)
  assert signal.getsignal(signal.SIGTERM) is runtime_handler  # not "restored" over

  from jax.experimental import multihost_utils

  def no_service(step):
    raise RuntimeError("preemption service not initialised")

  monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", no_service)
  signal.signal(signal.SIGTERM, outside)
  flag = loop.StopFlag()
  flag._multi = True
  with flag:  # the preemption service is absent: the flag falls back to its own handler...
    assert not flag.should_stop(1)
    assert signal.getsignal(signal.SIGTERM) == flag._handle
  assert signal.getsignal(signal.SIGTERM) is outside  # ...and undoes it
