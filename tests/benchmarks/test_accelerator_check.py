"""The one-shot accelerator check (benchmarks/accelerator_check.py) runs end to end on the CPU at
tiny sizes, so that it works the first time it meets a GPU: every part reports numbers, the
table is printed last and the JSON keeps them."""
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
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
                      "--image_size=16", "--batch_sizes=4", "--steps=1", "--also_moco", "--methods=simsiam", "--device_augment", "--torch_batch=4", "--torch_compile=off",
                      f"--images={images}", "--host_pipelines=numpy,grain", "--host_batches=1", "--host_batch=2", f"--out={out}"],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.loads(out.read_text())
  jax_rows = res["jax"]["rows"]
  assert [r["batch"] for r in jax_rows] == [4]
  assert jax_rows[0]["pairs_per_sec"] > 0 and jax_rows[0]["loss_finite"]
  moco = res["jax"]["moco_rows"]
  assert len(moco) == 1 and moco[0]["pairs_per_sec"] > 0 and moco[0]["loss_finite"], moco
  methods = res["jax"]["method_rows"]
  assert [r["method"] for r in methods] == ["simsiam"] and methods[0]["pairs_per_sec"] > 0 and methods[0]["loss_finite"]
  assert f"| JAX simsiam (ours) | 4 | {methods[0]['pairs_per_sec']:.0f} |" in p.stdout
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


def test_gpu_check_sh_dry_run_names_the_end_to_end_commands(tmp_path):
  """launch/gpu_check.sh's end-to-end part, its commands only (no GPU here): 224 px from the
  covid_cxr_multi images, as the files and as 256-px records, the real loop via throughput --end_to_end."""
  out = tmp_path / "e2e.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHON=sys.executable)
  p = subprocess.run(["bash", "launch/gpu_check.sh", "--part=e2e", "--e2e_dry_run", f"--out={out}"], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  cmds = {k: shlex.split(v) for k, v in json.loads(out.read_text())["e2e"]["commands"].items()}
  assert json.loads(out.read_text())["e2e"]["images"] == "../shared/data/covid_cxr_multi"
  prep, files, records = cmds["prepare"], cmds["files"], cmds["records"]
  assert prep[1:4] == ["-m", "medssl_jax", "prepare-data"] and "--short_side=256" in prep and "--splits=train" in prep
  out_dir = next(a.split("=", 1)[1] for a in prep if a.startswith("--out="))
  for cmd in (files, records):
    assert cmd[1:6] == ["-m", "medssl_jax", "throughput", "--end_to_end", "--input_batches=0"]
    for flag in ("--config=configs/covid_cxr_micle.py:simclr", "--config.data.image_size=224", "--config.model.depth=50",
                 "--config.model.width=1.0", "--config.model.dtype=bfloat16", "--config.train.batch_size=256",
                 "--config.data.pipeline=grain", "--config.aug.on_device=auto"):
      assert flag in cmd, (flag, cmd)
  assert "--steps=40" in files and "--steps=100" in records
  assert records[-2:] == ["--config.data.source=records", f"--config.data.path={out_dir}"]


def test_end_to_end_part_runs_on_the_cpu_from_files_and_records(tmp_path):
  from benchmarks import accelerator_check as ac
  images = tmp_path / "images"
  images.mkdir()
  rng = np.random.default_rng(2)
  for i, (h, w) in enumerate([(40, 52), (48, 48), (60, 44)]):  # grey and colour, larger than the records' side
    Image.fromarray(rng.integers(0, 255, (h, w) if i % 2 else (h, w, 3), dtype=np.uint8)).save(images / f"x{i}.png")
  out = tmp_path / "e2e.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  p = subprocess.run([sys.executable, "-m", "benchmarks.accelerator_check", "--part=e2e", "--depth=18", "--width=0.125",
                      "--image_size=16", "--e2e_batch=2", "--e2e_steps=2,3", "--e2e_short_side=24", "--e2e_pipeline=numpy",
                      f"--images={images}", f"--out={out}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stderr[-2000:]
  e2e = json.loads(out.read_text())["e2e"]
  assert e2e["num_images"] == 3 and "error" not in e2e
  rows = e2e["rows"]
  assert [r["data"] for r in rows] == ["original files", "records, short side 24"]
  for r, timed in zip(rows, (1, 2)):
    assert "error" not in r, r
    assert r["timed_steps"] == timed and r["pairs_per_sec"] > 0 and 0.0 <= r["input_wait_fraction"] <= 1.0
    assert r["of_step_rate"] == pytest.approx(r["pairs_per_sec"] / r["step_only_pairs_per_sec"])
    assert r["aug_on_device"] is False and r["host_pipeline"] == "numpy"  # 'auto' on the CPU
  text = ac.e2e_table(e2e)
  assert f"| original files (aug.on_device False) | numpy | 2 | {rows[0]['pairs_per_sec']:.0f} (" in text


def test_every_method_is_timed_with_its_own_recipe_on_the_simclr_rows_encoder():
  from benchmarks import accelerator_check as ac
  args = ac.parse_args(["--depth=50", "--width=1", "--image_size=224", "--dtype=bfloat16"])
  names = ac._method_names("all")
  assert {"byol", "simsiam", "barlow_twins", "vicreg", "dino"} <= set(names)
  for name in names:
    c = ac._method_config(args, name, 512)
    assert c.method == name
    assert (c.model.arch, c.model.depth, c.model.width, c.model.dtype) == ("resnet", 50, 1.0, "bfloat16")
    assert (c.data.image_size, c.data.channels, c.train.batch_size) == (224, 3, 512)
  assert ac._method_config(args, "barlow_twins", 512).barlow.projector_hidden == 8192  # the paper's head kept
  with pytest.raises(SystemExit, match="unknown"):
    ac._method_names("byol,nope")
