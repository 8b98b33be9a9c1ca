"""benchmarks/dvme_study_report.py: Study C's section on fake result files (two folds of one regime)."""
import json
import os

import numpy as np

from benchmarks import dvme_study_report
from benchmarks import report_lib

MACHINE = {"platform": "Linux-test", "machine": "x86_64", "python": "3.11", "cpu_cores": 2, "jax": "0.0",
           "backend": "cpu", "device_kind": "cpu", "device_count": 1}
SOURCES = ["simclr", "moco_v2", "random"]
# (arm, fold) -> test AUC; top1 is AUC - 0.125. Fold 0 and 1 of the regime n20, one fold of Full.
AUC = {("simclr_mlp", 0): 0.75, ("simclr_mlp", 1): 0.625, ("dvme", 0): 0.875, ("dvme", 1): 0.8125,
       ("linear_simclr", 0): 0.7, ("linear_simclr", 1): 0.6}


def _metric(v):
  return {"value": v, "ci_low": v - 0.0625, "ci_high": v + 0.0625}


def _study(root) -> dict:
  runs = []
  for (arm, fold), auc in list(AUC.items()) + [(("dvme", 0), 0.5)]:
    regime = "full" if len(runs) == len(AUC) else "n20"
    wd = os.path.join(root, "breastmnist", regime, f"fold{fold}", arm)
    os.makedirs(wd)
    r = {"mode": "dvme", "completed": True, "wall_time_sec": 1.0, "epochs_run": 5 + fold, "best_epoch": 2 + fold,
         "test": {"auc": _metric(auc), "top1": _metric(auc - 0.125)}}
    if arm.startswith("linear_"):  # a linear evaluation's results: steps, not epochs
      r = {"mode": "linear_eval", "completed": True, "wall_time_sec": 1.0, "final_step": 30 + fold,
           "selected_step": 20 + fold, "test": {"auc": _metric(auc), "top1": _metric(auc - 0.125)}}
    if arm == "dvme":  # each source's attention per class; rows sum to 1
      w = np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]) if fold == 0 else np.array([[0.25, 0.25, 0.5]] * 2)
      r["attention_by_class"] = {"sources": SOURCES, "classes": ["class 0", "class 1"], "weights": w.tolist(),
                                 "mean": w.mean(0).tolist()}
    with open(os.path.join(wd, "results.json"), "w") as f:
      json.dump(r, f)
    runs.append({"role": "eval", "dataset": "breastmnist", "arm": arm, "regime": regime,
                 "train_size": 0 if regime == "full" else 20, "fold": fold, "workdir": wd})
  return {"study": "dvme", "scale": "smoke", "command": "python -m benchmarks.dvme_study", "machine": MACHINE,
          "wall_time_sec": 3.0, "runs": runs, "data": [], "capped": ["breastmnist: train_size 500 -> 294"],
          "settings": {"width": 0.125, "batch": 16, "pretrain_steps": 4, "eval_steps": 3, "num_replicates": 50,
                       "dvme": {"epochs": 2, "proj_dim": 16, "heads": 2}}}


def test_section_aggregates_folds_and_attention(tmp_path):
  m = _study(str(tmp_path / "dvme"))
  lines = dvme_study_report.section(m, "/w/study.json", report_lib.Context())  # no out_dir: no PNGs
  md = "\n".join(lines)
  assert lines[0] == "## Study C: DVME vs single encoders on cached features"
  assert "- Heads: Truong et al.'s protocol" in md and "at most 2 epochs), projection width 16, 2 heads" in md
  assert "- Class-balanced subset capped by the data: breastmnist: train_size 500 -> 294" in md
  assert "### breastmnist, training set n20 (2 fold(s))" in md and "### breastmnist, training set full (1 fold(s))" in md
  # two folds: mean ± sample std over the folds, by hand (0.75, 0.625: 0.6875 ± 0.0884)
  assert "| simclr_mlp | 0.688 ± 0.088 | 0.562 ± 0.088 | 5 (2), 6 (3) |" in md
  assert "| linear_simclr | 0.650 ± 0.071 | 0.525 ± 0.071 | 30 steps (20), 31 steps (21) |" in md
  assert md.index("| linear_simclr |") < md.index("| dvme |") < md.index("| simclr_mlp |")  # the paper's baseline first
  assert f"| dvme | {np.mean([0.875, 0.8125]):.3f} ± {np.std([0.875, 0.8125], ddof=1):.3f} |" in md
  # one fold: that fold's bootstrap interval
  assert "| dvme | 0.500 [0.438, 0.562] | 0.375 [0.312, 0.438] | 5 (2) |" in md
  # attention per source, mean over the folds of the regime: (0.375, 0.375, 0.25) and (0.25, 0.25, 0.5)
  assert "DVME attention received per source (test mean over folds): simclr 0.312, moco_v2 0.312, random 0.375" in md
  assert "![" not in md


def test_section_draws_the_attention_maps_into_the_out_folder(tmp_path):
  m = _study(str(tmp_path / "dvme"))
  out = tmp_path / "out"
  out.mkdir()
  md = "\n".join(dvme_study_report.section(m, "/w/study.json", report_lib.Context(out_dir=str(out))))
  for regime in ("n20", "full"):
    png = f"smoke_dvme_attention_breastmnist_{regime}.png"
    assert f"![dvme attention per class, breastmnist {regime}]({png})" in md
    assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "t-SNE" not in md  # no run drew one
