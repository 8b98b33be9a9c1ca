"""The model, loss, optimiser, step and the step benchmark run where TensorFlow is absent
(e.g. a GPU machine with only JAX/Flax/optax): TensorFlow is needed only by input_pipeline."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import sys
sys.modules["tensorflow"] = None          # any import of TensorFlow now raises ImportError
import jax, numpy as np
from medssl_jax import benchmark, contrastive
from medssl_jax.sharding import make_mesh
from tests.helpers import tiny_config
config = tiny_config(batch_size=4, image_size=16)
out = benchmark.time_step(config, steps=1)
assert out["loss_finite"], out
print("input:", benchmark.time_input(config, 1))
print("OK")
"""


def test_step_and_benchmark_import_no_tensorflow():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "OK" in r.stdout
  assert "input pipeline needs TensorFlow" in r.stdout   # the input part is skipped, with a note
