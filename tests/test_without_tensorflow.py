"""Where TensorFlow is absent (e.g. a GPU machine with only JAX/Flax/optax) the step, the
benchmark and the NumPy host pipeline run; data.pipeline='tf' says what is missing."""
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import sys
sys.modules["tensorflow"] = None          # any import of TensorFlow now raises ImportError
import jax, numpy as np
from medssl_jax import methods
from medssl_jax.commands import throughput
from medssl_jax.training.sharding import make_mesh
from tests.helpers import tiny_config
config = tiny_config(batch_size=4, image_size=16)
out = throughput.time_step(config, steps=1)
assert out["loss_finite"], out
inp = throughput.time_input(config, 1)
assert inp["host_pipeline"] == "numpy" and inp["images_per_sec"] > 0, inp
from input_pipeline import backends
try:
  backends.get("tf")
  raise SystemExit("expected ImportError")
except ImportError as e:
  assert "data.pipeline='numpy'" in str(e), e
print("OK")
"""


def test_step_and_benchmark_import_no_tensorflow():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0")
  r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "OK" in r.stdout



STUDY = r"""
import sys
sys.modules["tensorflow"] = None
from benchmarks import label_efficiency
assert label_efficiency.main(sys.argv[1:]) == 0
print("OK")
"""


def test_study_a_smoke_runs_without_tensorflow(shared_data, tmp_path):
  """Study A end to end on the real .npz data with the NumPy host pipeline and TF-free TensorBoard events."""
  import glob
  import json
  from tensorboard.backend.event_processing import event_accumulator
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0")
  wd = tmp_path / "wd"
  r = subprocess.run([sys.executable, "-c", STUDY, "--scale", "smoke", "--workdir", str(wd), "--data_dir",
                      str(shared_data)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  m = json.load(open(wd / "smoke" / "label_efficiency" / "study.json"))
  assert m["machine"]["host_pipeline"] == "numpy (no TensorFlow)"
  assert len(m["runs"]) >= 6
  for run in m["runs"]:
    res = json.load(open(os.path.join(run["workdir"], "results.json")))
    assert res["completed"] and res["host_pipeline"] == "numpy", run
  events = glob.glob(os.path.join(m["runs"][0]["workdir"], "events.out.tfevents.*"))
  acc = event_accumulator.EventAccumulator(events[0])
  acc.Reload()
  loss = acc.Scalars("train/loss")
  assert [e.step for e in loss] == [4] and np.isfinite(loss[0].value)  # smoke: 4 steps, logged at the end
