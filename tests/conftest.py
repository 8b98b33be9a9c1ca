"""Test set-up: 8 simulated CPU devices, so sharded code paths run on any machine."""
import importlib.util
import os
import tempfile

# Tests run tiny models, so their time is mostly XLA compilation: compile without backend
# optimisation (measured: tests/methods/test_moco_v2.py + tests/training/test_train_step.py took
# 490 s with the default level, 243 s at level 0), and keep compiled programs in a persistent cache
# shared by the xdist workers, their subprocesses and later runs (187 s with it): many tests
# compile the same tiny step again through a new `jax.jit`.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"medssl-jax-tests-xla-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TFDS_DISABLE_GCS", "1")
os.environ.setdefault("NO_GCE_CHECK", "true")

import pathlib

import pytest

# The torch extra (weight-port tests): torchvision must be imported before TensorFlow. Imported
# after it, torchvision's import of triton crashes the process (segmentation fault, measured with
# tensorflow-cpu 2.21 + torch 2.14.1 + torchvision 0.29.1), and with it the whole test session.
if importlib.util.find_spec("torchvision") is not None:
  import torchvision  # noqa: F401

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
  """Path to ../shared/data; skips with a clear message when it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data folder {SHARED_DATA} is absent (expected ../shared/data beside the repo)")
  return SHARED_DATA
