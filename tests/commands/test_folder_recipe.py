"""The README's recipe for your own images, as a user types it: pretrain on a folder (PNG and JPEG,
nested, no labels), then linear-evaluate the encoder on a labelled CSV, through `medssl-jax train`
with the shipped config found by name from another folder (configs/folder_simclr.py :local)."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image


def _medssl(*args, cwd):
  env = dict(os.environ)
  env.pop("MEDSSL_DEBUG", None)
  return subprocess.run([sys.executable, "-m", "medssl_jax", "train", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=900)


def _images(root, n=48):
  """n grey images in patient folders, half PNG and half JPEG; class 1 is brighter (learnable)."""
  rng = np.random.default_rng(0)
  rows = []
  for i in range(n):
    label = i % 2
    pixels = np.clip(rng.normal(90 + 80 * label, 30, (40, 36)), 0, 255).astype(np.uint8)
    rel = os.path.join(f"patient{i // 2:02d}", f"img{i}.{'png' if i % 4 < 2 else 'jpg'}")
    os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
    Image.fromarray(pixels).save(os.path.join(root, rel))
    rows.append((rel, f"patient{i // 2:02d}", label, ("train", "train", "val", "test")[(i // 2) % 4]))
  return rows


def test_pretrain_on_a_folder_then_linear_evaluate_on_a_csv(tmp_path):
  folder = tmp_path / "xrays"
  rows = _images(str(folder))
  fast = ["--config.train.num_steps=4", "--config.train.batch_size=8", "--config.train.log_every=2",
          "--config.train.checkpoint_every=2", "--config.optim.warmup_steps=1"]
  r = _medssl("--config=folder_simclr:local", f"--config.data.path={folder}", f"--workdir={tmp_path / 'simclr'}",
              "--config.data.case_rule=parent", *fast, cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  pre = json.loads((tmp_path / "simclr" / "results.json").read_text())
  assert pre["completed"] and pre["final_step"] == 4

  manifest = tmp_path / "labelled.csv"
  manifest.write_text("path,case_id,label,split\n" + "\n".join(f"{p},{c},{y},{s}" for p, c, y, s in rows) + "\n")
  r = _medssl("--config=folder_simclr:local_linear", f"--config.data.path={manifest}",
              f"--config.data.image_dir={folder}", f"--config.train.init_checkpoint={tmp_path / 'simclr'}",
              f"--workdir={tmp_path / 'linear'}", *fast, "--config.eval.num_replicates=50", cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  lin = json.loads((tmp_path / "linear" / "results.json").read_text())
  assert lin["completed"] and lin["mode"] == "linear_eval" and lin["checkpoint"] == str(tmp_path / "simclr")
  assert lin["num_train_images"] == sum(s == "train" for *_, s in rows)
  assert 0.0 <= lin["test"]["top1"]["value"] <= 1.0
  assert "test metrics" in r.stdout
