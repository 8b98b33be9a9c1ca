"""The one-shot accelerator check (benchmarks/accelerator_check.py) runs end to end on the CPU at
tiny sizes, so that it works the first time it meets a GPU: every part reports numbers, the
table is printed last and the JSON keeps them."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cpu_dry_run_prints_the_table_and_writes_json(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  rng = np.random.default_rng(0)
  for i, (h, w) in enumerate([(40, 52), (48, 48), (60, 44)]):  # mixed sizes, grey and colour
    shape = (h, w) if i % 2 else (h, w, 3)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(images / f"x{i}.png")
  out = tmp_path / "check.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  p = subprocess.run([sys.executable, "-m", "benchmarks.accelerator_check", "--depth=18", "--width=0.125",
                      "--image_size=16", "--batch_sizes=4", "--steps=1", "--also_moco", "--device_augment", "--torch_batch=4", "--torch_compile=off",
                      f"--images={images}", "--host_pipelines=numpy,grain", "--host_batches=1", "--host_batch=2", f"--out={out}"],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.loads(out.read_text())
  jax_rows = res["jax"]["rows"]
  assert [r["batch"] for r in jax_rows] == [4]
  assert jax_rows[0]["pairs_per_sec"] > 0 and jax_rows[0]["loss_finite"]
  moco = res["jax"]["moco_rows"]
  assert len(moco) == 1 and moco[0]["pairs_per_sec"] > 0 and moco[0]["loss_finite"], moco
  device_aug = res["jax"]["device_aug_rows"]
  assert len(device_aug) == 1 and device_aug[0]["pairs_per_sec"] > 0 and device_aug[0]["loss_finite"], device_aug
  assert f"| JAX (ours), aug.on_device | 4 | {device_aug[0]['pairs_per_sec']:.0f} |" in p.stdout
  torch = res["torch"]
  assert "skipped" in torch or torch["eager"]["pairs_per_sec"] > 0
  host = {(r["augmentation"], r["workers"]) for r in res["host"]["rows"]}
  assert {r["pipeline"] for r in res["host"]["rows"]} == {"numpy", "grain"}
  assert ("simclr", 1) in host and ("chexpert", 1) in host
  assert ("simclr (host part of on_device)", 1) in host and ("chexpert (host part of on_device)", 1) in host
  assert res["host"]["images"] == 3
  # The table is the last thing printed, with one JAX row carrying the measured rate.
  assert p.stdout.strip().splitlines()[0].startswith("## Accelerator check: SimCLR ResNet-18")
  assert f"| JAX (ours) | 4 | {jax_rows[0]['pairs_per_sec']:.0f} |" in p.stdout


def test_a_part_that_times_out_keeps_the_rows_it_finished(monkeypatch):
  from benchmarks import accelerator_check as ac

  partial = json.dumps({"rows": [{"batch": 512, "pairs_per_sec": 3000.0, "step_ms": 170.0, "compile_s": 60.0}]})

  def run(cmd, **kw):
    raise subprocess.TimeoutExpired(cmd, kw["timeout"], output=("jax batch 512\n" + partial + "\n").encode())

  monkeypatch.setattr(ac.subprocess, "run", run)
  out = ac._run_part(ac.parse_args(["--part_timeout=7"]), "jax")
  assert out["rows"][0]["pairs_per_sec"] == 3000.0
  assert out["error"] == "timed out after 7 s (the rows above finished)"
  monkeypatch.setattr(ac.subprocess, "run", lambda cmd, **kw: (_ for _ in ()).throw(
      subprocess.TimeoutExpired(cmd, kw["timeout"], output=b"")))
  assert ac._run_part(ac.parse_args(["--part_timeout=7"]), "jax") == {"error": "timed out after 7 s"}


def test_one_part_alone_also_writes_its_json(tmp_path):
  """`--part=host --out=F` (how the 16-core host rows were measured) keeps its rows in F."""
  from benchmarks import accelerator_check as ac
  images = tmp_path / "images"
  images.mkdir()
  rng = np.random.default_rng(1)
  for i in range(2):
    Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(images / f"x{i}.png")
  out = tmp_path / "host.json"
  ac.main(["--part=host", "--image_size=16", f"--images={images}", "--host_pipelines=numpy",
           "--host_batches=1", "--host_batch=2", f"--out={out}"])
  res = json.loads(out.read_text())
  assert res["args"]["part"] == "host"
  rows = res["host"]["rows"]
  assert {r["workers"] for r in rows} >= {1} and all(r["pairs_per_sec"] > 0 for r in rows)
  assert {r["augmentation"] for r in rows} == {"simclr", "chexpert"}
