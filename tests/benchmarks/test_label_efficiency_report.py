"""benchmarks/label_efficiency_report.py: Study A's section of the report, on fake result files."""
import json
import os

import numpy as np

from benchmarks import common
from benchmarks import report
from medssl_jax.evaluation import compare

MACHINE = {"platform": "Linux-test", "machine": "x86_64", "python": "3.11", "cpu_cores": 2, "jax": "0.0",
           "backend": "cpu", "device_kind": "cpu", "device_count": 1}


def _metric(v, lo, hi):
  return {"value": v, "ci_low": lo, "ci_high": hi}


def _fake_eval(workdir, *, mode, init, top1, auc, wall, correct, extra=None):
  os.makedirs(workdir)
  labels = np.array([0, 1] * 10)
  probs = np.eye(2)[labels if correct else 1 - labels].astype(np.float32)
  compare.save_predictions(os.path.join(workdir, "predictions_test.npz"), image_ids=np.arange(20),
                           case_ids=np.arange(20), labels=labels, probs=probs, task="multiclass")
  r = {"mode": mode, "init": init, "label_fraction": 1.0, "fraction_seed": 0, "num_train_images": 100,
       "completed": True, "final_step": 3, "num_steps": 3, "wall_time_sec": wall, "workdir": workdir,
       "test": {"top1": _metric(*top1), "auc": _metric(*auc)}} | (extra or {})
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(r, f)


def test_report_on_fake_result_files(tmp_path):
  root = tmp_path / "wd" / "smoke" / "label_efficiency"
  pre = str(root / "breastmnist" / "pretrain_simclr")
  os.makedirs(pre)
  with open(os.path.join(pre, "results.json"), "w") as f:
    json.dump({"mode": "pretrain", "completed": True, "final_step": 4, "num_steps": 4, "wall_time_sec": 12.5,
               "metrics": {"loss": 5.25}, "workdir": pre}, f)
  runs = [{"role": "pretrain", "dataset": "breastmnist", "workdir": pre}]
  for mode in ("finetune", "linear_eval"):
    for init, top1, auc, wall, correct in (("pretrained", (0.8125, 0.75, 0.875), (0.9, 0.85, 0.95), 7.25, True),
                                           ("random", (0.5, 0.4375, 0.5625), (0.625, 0.5, 0.75), 3.5, False)):
      wd = str(root / "breastmnist" / f"{mode}_{init}")
      extra = {"feature_norm": "batchnorm" if mode == "linear_eval" else "none", "base_lr": 0.05}
      if mode == "linear_eval" and init == "random":
        extra["wall_time_complete"] = False  # resumed after a kill: its time is a lower bound
      _fake_eval(wd, mode=mode, init=init, top1=top1, auc=auc, wall=wall, correct=correct, extra=extra)
      runs.append({"role": "eval", "dataset": "breastmnist", "mode": mode, "init": init, "fraction": 1.0,
                   "draw": 0, "batch": 16, "pretrain": pre, "workdir": wd})
  # The MoCo v2 arm (entries with 'arm'/'method'; the SimCLR and random entries above have neither,
  # as in manifests written before the arm existed).
  moco = str(root / "breastmnist" / "pretrain_moco_v2")
  os.makedirs(moco)
  with open(os.path.join(moco, "results.json"), "w") as f:
    json.dump({"mode": "pretrain", "completed": True, "final_step": 4, "num_steps": 4, "wall_time_sec": 10.0,
               "metrics": {"loss": 3.5}, "workdir": moco}, f)
  with open(os.path.join(moco, "config.json"), "w") as f:
    json.dump({"method": "moco_v2", "moco": {"queue_size": 128}, "train": {"temperature": 0.2, "batch_size": 16},
               "optim": {"name": "sgd", "base_lr": 0.03, "lr_scaling": "linear"}}, f)
  runs.append({"role": "pretrain", "method": "moco_v2", "dataset": "breastmnist", "workdir": moco})
  for mode in ("finetune", "linear_eval"):
    wd = str(root / "breastmnist" / f"{mode}_moco_v2")
    _fake_eval(wd, mode=mode, init="pretrained", top1=(0.75, 0.6875, 0.8125), auc=(0.8, 0.75, 0.85), wall=6.0,
               correct=True, extra={"feature_norm": "batchnorm" if mode == "linear_eval" else "none", "base_lr": 0.05})
    runs.append({"role": "eval", "dataset": "breastmnist", "mode": mode, "init": "pretrained", "arm": "moco_v2",
                 "fraction": 1.0, "draw": 0, "batch": 16, "pretrain": moco, "workdir": wd})
  # An extra arm (--arms=byol): its pretraining line, its table, its row next to the published ones.
  byol = str(root / "breastmnist" / "pretrain_byol")
  os.makedirs(byol)
  with open(os.path.join(byol, "results.json"), "w") as f:
    json.dump({"mode": "pretrain", "completed": True, "final_step": 4, "num_steps": 4, "wall_time_sec": 11.0,
               "metrics": {"loss": 1.25}, "workdir": byol}, f)
  runs.append({"role": "pretrain", "method": "byol", "dataset": "breastmnist", "workdir": byol})
  for mode in ("finetune", "linear_eval"):
    wd = str(root / "breastmnist" / f"{mode}_byol")
    _fake_eval(wd, mode=mode, init="pretrained", top1=(0.625, 0.5625, 0.6875), auc=(0.7, 0.65, 0.75), wall=5.0,
               correct=False, extra={"feature_norm": "batchnorm" if mode == "linear_eval" else "none", "base_lr": 0.05})
    runs.append({"role": "eval", "dataset": "breastmnist", "mode": mode, "init": "pretrained", "arm": "byol",
                 "fraction": 1.0, "draw": 0, "batch": 16, "pretrain": byol, "workdir": wd})
  wd = str(root / "breastmnist" / "finetune_random_medmnist_recipe_w1")
  _fake_eval(wd, mode="finetune", init="random", top1=(0.875, 0.8, 0.9), auc=(0.75, 0.7, 0.8), wall=9.0, correct=True)
  runs.append({"role": "recipe", "dataset": "breastmnist", "mode": "finetune", "init": "random", "fraction": 1.0,
               "draw": 0, "width": 1.0, "batch": 16, "steps": 7, "workdir": wd})
  data = [{"path": "/data/breastmnist.npz", "kind": "file", "bytes": 10, "md5": "0123abcd"}]
  common.write_manifest(str(root / "study.json"), {
      "study": "label_efficiency", "scale": "smoke", "command": "python -m benchmarks.label_efficiency",
      "machine": MACHINE, "settings": dict(common.SCALES["smoke"]), "runs": runs, "data": data,
      "wall_time_sec": 42.0, "missing": ["/wd/smoke/label_efficiency/breastmnist/finetune_pretrained_f0.1_d0"]})
  baselines = tmp_path / "bench.md"
  baselines.write_text("| dataset | method | AUC | ACC |\n|---|---|---|---|\n"
                       "| BreastMNIST | ResNet-50 (28) | 0.111 | 0.222 |\n| BreastMNIST | ResNet-18 (28) | 0.901 | 0.863 |\n")
  out = tmp_path / "report"
  assert report.main(["--workdir", str(tmp_path / "wd"), "--out", str(out), "--baselines", str(baselines)]) == 0
  md = (out / "report.md").read_text()
  assert ("| finetune | 1 | 0 | 100 | 16 | 0.8125 [0.7500, 0.8750] | 0.5000 [0.4375, 0.5625] | "
          "+1.0000 [+1.0000, +1.0000] * | 0.9000 [0.8500, 0.9500] | 0.6250 [0.5000, 0.7500] |") in md
  assert "| 7.25 / 3.5" not in md and "| 7.2 / 3.5 |" in md and "| 7.2 / ≥3.5 |" in md
  assert "| linear_eval | 1 | 0 | 100 | 16 | 0.8125 [0.7500, 0.8750] |" in md
  assert "| BreastMNIST | published ResNet-18 (28) | 0.863 | 0.901 | | n/a (published) |" in md
  assert ("| BreastMNIST | ours, SimCLR init, study settings (smoke) | 0.8125 [0.7500, 0.8750] | "
          "0.9000 [0.8500, 0.9500] | within / within | 7.2 |") in md
  assert ("| BreastMNIST | ours, random init, MedMNIST v2 recipe (width 1, 0.2 epochs = 7 steps of batch 16) | "
          "0.8750 [0.8000, 0.9000] | 0.7500 [0.7000, 0.8000] | within / below | 9.0 |") in md
  assert "| ours, random init, study settings (smoke) | 0.5000 [0.4375, 0.5625] | 0.6250 [0.5000, 0.7500] | below / below |" in md
  # MoCo v2 rows: Δ MoCo − random (all right vs all wrong: +1) and Δ SimCLR − MoCo (both all right: 0).
  assert ("| finetune | 1 | 0 | 100 | 16 | 0.7500 [0.6875, 0.8125] | +1.0000 [+1.0000, +1.0000] * | "
          "+0.0000 [+0.0000, +0.0000] | 0.8000 [0.7500, 0.8500] | +1.0000 [+1.0000, +1.0000] * | "
          "+0.0000 [+0.0000, +0.0000] | 6.0 |") in md
  assert "| linear_eval | 1 | 0 | 100 | 16 | 0.7500 [0.6875, 0.8125] | +1.0000 [+1.0000, +1.0000] * |" in md
  assert ("- MoCo v2 pretraining (train images, labels unused): 4/4 steps, final loss 3.5000, wall time 10.0 s "
          f"(`{moco}`); queue 128, temperature 0.2, SGD base lr 0.03 (linear scaling) at batch 16") in md
  assert ("| BreastMNIST | ours, MoCo v2 init, study settings (smoke) | 0.7500 [0.6875, 0.8125] | "
          "0.8000 [0.7500, 0.8500] | below / below | 6.0 |") in md
  # BYOL (all wrong, as random): Δ BYOL − random 0, Δ SimCLR − BYOL +1
  assert ("| finetune | 1 | 0 | 100 | 16 | 0.6250 [0.5625, 0.6875] | +0.0000 [+0.0000, +0.0000] | "
          "+1.0000 [+1.0000, +1.0000] * |") in md
  assert "BYOL arm: the same evaluation runs from the BYOL encoder. Δ BYOL − random and Δ SimCLR − BYOL" in md
  assert "- BYOL pretraining (train images, labels unused; configs/byol.py:local's heads): 4/4 steps, final loss 1.2500" in md
  assert ("| BreastMNIST | ours, BYOL init, study settings (smoke) | 0.6250 [0.5625, 0.6875] | "
          "0.7000 [0.6500, 0.7500] | below / below | 5.0 |") in md
  # the recipe run is not an arm of the comparison tables or plot; one row per table (SimCLR, MoCo v2, BYOL)
  assert md.count("| finetune | 1 | 0 |") == 3
  # the MoCo runs (init 'pretrained') are not taken for SimCLR rows
  assert md.count("| BreastMNIST | ours, SimCLR init, study settings (smoke) |") == 1
  assert "md5 `0123abcd`" in md and "4/4 steps, final loss 5.2500, wall time 12.5 s" in md
  assert "2 CPU cores" in md and "JAX 0.0" in md
  assert ("- Linear evaluation (read from its runs' results.json): frozen encoder, feature norm batchnorm "
          "(`finetune.feature_norm`), base learning rate 0.05") in md
  assert "**Not finished** when this report was made (1 runs, left out of the tables and plots): " \
         "`finetune_pretrained_f0.1_d0`" in md
  png = out / "smoke_label_efficiency_breastmnist_top1.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
