"""Multi-host evaluation (issue 17 item 3): prediction, feature extraction and the sharded forward
pass work when each process holds only its own devices, and give every process the outputs of
all rows, in order; a 2-process x 2-device fine-tune (periodic validation, test and validation
predictions) scores like a 1-process x 4-device one.

Before the fix, the fine-tune crashed after training: `batched_apply` fetched a global array
spanning the other process's devices ("Fetching value for `jax.Array` that spans non-addressable
devices is not possible").
"""
import io
import json
import os
import subprocess
import sys

import numpy as np

from medssl_jax.commands import local_multiprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each process: 2 CPU devices of a 4-device system. It runs batched_apply (11 rows in batches of
# 4: a zero-padded last batch), on the natural mesh and on a mesh whose devices alternate between
# the processes, and extract_features on a stand-in state; it writes what it got.
EVAL_MAIN = """
import json, sys
import jax
import numpy as np
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=flags["coordinator_address"],
                           num_processes=int(flags["num_processes"]),
                           process_id=int(flags["process_id"]))
import types
from medssl_jax.runs import linear_probe
from medssl_jax.training.inference import batched_apply
from medssl_jax.training.sharding import make_mesh, replicated

x = np.arange(11 * 2 * 2 * 3, dtype=np.float32).reshape(11, 2, 2, 3)
fn = jax.jit(lambda a: 2.0 * a[:, 0, 0, :] + 1.0)
natural = make_mesh()
devs = jax.devices()
interleaved = make_mesh([devs[0], devs[2], devs[1], devs[3]])
mesh_procs = [[d.process_index for d in m.devices] for m in (natural, interleaved)]
out = {"natural": batched_apply(fn, x, natural, 4).tolist(),
       "interleaved": batched_apply(fn, x, interleaved, 4).tolist(),
       "mesh_procs": mesh_procs}
# A stand-in state: features = per-image channel means scaled by a replicated parameter.
w = jax.device_put(np.array([1.0, -2.0, 0.5], np.float32), replicated(natural))
state = types.SimpleNamespace(
    params={"w": w}, batch_stats={},
    apply_fn=lambda v, a, train, method: a.mean(axis=(1, 2)) * v["params"]["w"])
out["features"] = linear_probe.extract_features(state, x, natural, 8).tolist()
with open(flags["out"] + f".{jax.process_index()}.json", "w") as f:
  json.dump(out, f)
"""


def test_batched_apply_and_features_on_two_processes(tmp_path, monkeypatch):
  (tmp_path / "eval_main.py").write_text(EVAL_MAIN)
  monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{REPO}")
  out = io.StringIO()
  prefix = str(tmp_path / "got")
  code = local_multiprocess.launch([f"--out={prefix}"], num_processes=2, devices_per_process=2,
                                   port=0, module="eval_main", out=out)
  assert code == 0, out.getvalue()
  x = np.arange(11 * 2 * 2 * 3, dtype=np.float32).reshape(11, 2, 2, 3)
  want = 2.0 * x[:, 0, 0, :] + 1.0
  want_features = x.mean(axis=(1, 2)) * np.array([1.0, -2.0, 0.5], np.float32)
  for p in range(2):
    got = json.load(open(f"{prefix}.{p}.json"))
    # The meshes are what the test means: devices of both processes, contiguous then alternating.
    assert got["mesh_procs"] == [[0, 0, 1, 1], [0, 1, 0, 1]]
    np.testing.assert_array_equal(got["natural"], want)       # all 11 rows, in order, on each
    np.testing.assert_array_equal(got["interleaved"], want)
    np.testing.assert_allclose(got["features"], want_features, rtol=1e-6)


# Fine-tune on the synthetic colour data (configs/derm_finetune.py:local), shrunk to a couple of
# compiles: ResNet-18 at 1/8 width on 16 px images, 2 steps of batch 8, validation every step.
FT_ARGS = [
    "--config=configs/derm_finetune.py:local", "--config.train.num_steps=2",
    "--config.train.log_every=1", "--config.train.checkpoint_every=2", "--config.train.prefetch=1",
    "--config.train.batch_size=8", "--config.model.width=0.125", "--config.data.image_size=16",
    "--config.data.synthetic.image_size=16", "--config.data.synthetic.num_cases=40",
    "--config.eval.num_replicates=20", "--config.finetune.eval_every=1", "--config.data.pipeline=numpy",
]


def test_two_process_finetune_scores_like_one_process(tmp_path):
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  out = io.StringIO()
  code = local_multiprocess.launch(FT_ARGS + [f"--workdir={multi}"], num_processes=2,
                                   devices_per_process=2, port=0, out=out)
  assert code == 0, out.getvalue()[-5000:]
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0",
             JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "medssl_jax", "train", *FT_ARGS, f"--workdir={single}"],
                     cwd=REPO, env=env, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-5000:]

  r_multi = json.load(open(os.path.join(multi, "results.json")))
  r_single = json.load(open(os.path.join(single, "results.json")))
  assert r_multi["completed"] and r_single["completed"]
  np.testing.assert_allclose([l for _, l in r_multi["loss_history"]],
                             [l for _, l in r_single["loss_history"]], rtol=1e-5)
  for split in ("test", "val"):
    assert r_multi[split].keys() == r_single[split].keys()
    for name, v in r_single[split].items():
      for k in ("value", "ci_low", "ci_high"):
        np.testing.assert_allclose(r_multi[split][name][k], v[k], atol=1e-5, err_msg=f"{split} {name} {k}")
  assert r_multi["selected_step"] == r_single["selected_step"]
  for (a, b) in zip(r_multi["val_history"], r_single["val_history"]):
    assert a["step"] == b["step"] and abs(a["top1"] - b["top1"]) < 1e-6
  # Predictions: written once (by process 0), every row of the split, equal to one process's.
  for split in ("test", "val"):
    p_multi = np.load(os.path.join(multi, f"predictions_{split}.npz"))
    p_single = np.load(os.path.join(single, f"predictions_{split}.npz"))
    np.testing.assert_array_equal(p_multi["image_ids"], p_single["image_ids"])
    np.testing.assert_allclose(p_multi["probs"], p_single["probs"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(p_multi["probs"].sum(axis=1), 1.0, rtol=1e-5)
  assert not any(n.endswith(".tmp") for n in os.listdir(multi))
