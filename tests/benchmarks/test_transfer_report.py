"""benchmarks/transfer_report.py: the transfer benchmark's report on fake result files, alone and in
the combined report."""
import json
import os

import numpy as np
from scipy import stats

from benchmarks import report
from benchmarks import transfer_report

MACHINE = {"platform": "Linux-test", "machine": "x86_64", "python": "3.11", "cpu_cores": 2, "jax": "0.0",
           "backend": "cpu", "device_kind": "cpu", "device_count": 1}
# Fake test AUCs per encoder (5 runs each) and the step each run's best hold-out state was at.
FAKE = {"random": ([0.61, 0.64, 0.58, 0.66, 0.60], [20, 40, 40, 60, 20]),
        "simclr": ([0.71, 0.69, 0.75, 0.73, 0.70], [20, 20, 40, 20, 20]),
        "imagenet": ([0.62, 0.60, 0.65, 0.59, 0.64], [60, 60, 40, 60, 60])}
BATCH, FIT_IMAGES, STEPS = 16, 491, 60
EARLY = {("simclr", 1), ("simclr", 3)}   # runs an early stop ended (at step 40)


def _fake_study(root) -> str:
  runs = []
  for enc, (values, steps) in FAKE.items():
    for r, (v, step) in enumerate(zip(values, steps)):
      wd = os.path.join(root, "breastmnist", enc, f"run{r}")
      os.makedirs(wd)
      early = (enc, r) in EARLY
      res = {"mode": "finetune", "completed": True, "final_step": 40 if early else STEPS, "num_steps": STEPS,
             "selected_step": step, "stopped_early": early, "num_train_images": FIT_IMAGES, "seed": r, "wall_time_sec": 2.5,
             "test": {"auc": {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1}}}
      cfg = {"optim": {"name": "adam", "base_lr": 2e-4, "schedule": "constant", "weight_decay": 0.0},
             "train": {"batch_size": BATCH, "num_steps": STEPS},
             "finetune": {"task": "multiclass", "eval_every": 20, "val_split": "holdout", "select_metric": "auc"},
             "data": {"image_size": 28, "channels": 1, "path": "/x/breastmnist_holdout.npz"}}
      for name, obj in (("results.json", res), ("config.json", cfg)):
        with open(os.path.join(wd, name), "w") as f:
          json.dump(obj, f)
      runs.append({"role": "eval", "task": "breastmnist", "task_kind": "multiclass", "encoder": enc, "run": r,
                   "seed": r, "metric": "auc", "batch": BATCH, "workdir": wd})
  encoders = [{"name": e, "kind": "random" if e == "random" else "checkpoint", "source": "", "checkpoint": "",
               "model": {"depth": 18}, "channels": 1} for e in FAKE]
  data = [{"path": "/x/breastmnist.npz", "kind": "file", "bytes": 10, "md5": "abc", "task": "breastmnist",
           "role": "original"}]
  m = {"study": "transfer", "scale": "smoke", "command": "python -m benchmarks.transfer", "machine": MACHINE,
       "settings": {"tasks": ["breastmnist"]}, "reference": "random", "holdout": {"fraction": 0.1, "seed": 0},
       "runs": runs, "data": data, "encoders": encoders, "wall_time_sec": 12.0}
  path = os.path.join(root, "study.json")
  with open(path, "w") as f:
    json.dump(m, f)
  return path


def test_report_rows_equal_numpy_and_scipy_on_fake_result_files(tmp_path):
  path = _fake_study(str(tmp_path / "transfer"))
  out = tmp_path / "out"
  assert transfer_report.write_report(path, str(out)) == 0
  md = (out / "transfer_smoke.md").read_text()
  # 15 runs x 2.5 s each (their results.json), and the manifest's invocation time.
  assert ("- Run time: 37.5 s, the sum of the 15 runs' own wall times (results.json); the last invocation of "
          "the command took 12.0 s") in md
  ref_values = FAKE["random"][0]
  for enc, (values, steps) in FAKE.items():
    mean, std = np.mean(values), np.std(values, ddof=1)
    epochs = np.asarray(steps) * BATCH / FIT_IMAGES
    if enc == "random":
      test = "reference"
    else:
      res = stats.ttest_ind(values, ref_values)  # Student's, pooled variance, two-sided
      test = f"t = {res.statistic:+.3f}, p = {res.pvalue:.4g}"
    row = (f"| breastmnist | {enc} | 5 | auc | {mean:.4f} ± {std:.4f} | {test} | "
           f"{np.mean(steps):.1f} ± {np.std(steps, ddof=1):.1f} of {STEPS} | "
           f"{np.mean(epochs):.2f} ± {np.std(epochs, ddof=1):.2f} | {sum(e == enc for e, _ in EARLY)} of 5 | "
           f"0, 1, 2, 3, 4 | 12.5 |")
    assert row in md, row
  # Hand check of one cell: SimCLR mean 3.58 / 5 = 0.716, squared deviations sum to 0.00232, std
  # sqrt(0.00232 / 4) = 0.0241; random: mean 0.618.
  assert "| breastmnist | simclr | 5 | auc | 0.7160 ± 0.0241 |" in md
  rows = {r["encoder"]: r for r in transfer_report.table_rows(json.load(open(path)))}
  assert rows["simclr"]["t"] > 0 and rows["simclr"]["p"] < 0.001
  assert rows["imagenet"]["p"] > 0.05 and rows["random"]["t"] is None
  assert "md5 `abc`" in md and "adam lr 0.0002 (constant schedule" in md
  assert "| simclr | 5 | auc |" in md and "| 2 of 5 | 0, 1, 2, 3, 4 |" in md
  # The fake configs predate the early-stop keys: read as off.
  assert ("`auc`; no early stop (the fixed length; the best hold-out state is tested), no ReduceLROnPlateau; "
          "28 px") in md
  assert (out / "smoke_transfer_breastmnist.png").stat().st_size > 1000


def test_stopping_text_reads_the_eval_settings():
  assert transfer_report.stopping_text({"early_stop_patience": 10, "plateau_factor": 0.1, "plateau_patience": 5}) == (
      "early stop after 10 hold-out scores without improvement, lr x 0.1 after 5 (ReduceLROnPlateau)")
  assert transfer_report.stopping_text({"early_stop_patience": 3, "plateau_factor": 0.0}) == (
      "early stop after 3 hold-out scores without improvement, no ReduceLROnPlateau")


def test_combined_report_has_the_transfer_section_read_from_the_result_files(tmp_path):
  """benchmarks.report over a workdir holding a transfer study.json: the section's cells equal what
  the runs' results.json hold (NumPy / scipy on the values read back), an unfinished run is listed and
  left out, and the section is the same text as the study's own report."""
  root = tmp_path / "wd" / "smoke" / "transfer"
  path = _fake_study(str(root))
  m = json.load(open(path))
  # one run interrupted after the manifest was written, one never finished, and a pretrained encoder
  # whose checkpoint records its pretraining data (the task's own file)
  stopped = os.path.join(root, "breastmnist", "imagenet", "run4")
  with open(os.path.join(stopped, "results.json"), "w") as f:
    json.dump({"mode": "finetune", "completed": False, "final_step": 20, "num_steps": STEPS}, f)
  m["missing"] = [str(root / "breastmnist" / "simclr" / "run5")]
  ck = root / "encoders" / "simclr"
  ck.mkdir(parents=True)
  (ck / "config.json").write_text(json.dumps({"mode": "pretrain", "data": {"path": "/x/breastmnist.npz",
                                                                           "train_split": "train"}}))
  m["encoders"][1]["checkpoint"] = str(ck)
  # ... and one continued from a checkpoint pretrained elsewhere (the adapt arm): both stages named
  ck2 = root / "encoders" / "imagenet"
  ck2.mkdir(parents=True)
  (ck2 / "config.json").write_text(json.dumps({"mode": "pretrain", "train": {"init_checkpoint": str(ck)},
                                               "data": {"path": "/x/pneumoniamnist.npz", "train_split": "train"}}))
  m["encoders"][2]["checkpoint"] = str(ck2)
  with open(path, "w") as f:
    json.dump(m, f)
  out = tmp_path / "report"
  assert report.main(["--workdir", str(tmp_path / "wd"), "--out", str(out)]) == 0
  md = (out / "report.md").read_text()
  values = {}
  for run in m["runs"]:
    r = json.load(open(os.path.join(run["workdir"], "results.json")))
    if r["completed"]:
      values.setdefault(run["encoder"], []).append(r["test"]["auc"]["value"])
  assert [len(values[e]) for e in FAKE] == [5, 5, 4]  # imagenet run4 is not read
  for enc, v in values.items():
    test = "reference" if enc == "random" else "t = {:+.3f}, p = {:.4g}".format(*stats.ttest_ind(v, values["random"]))
    assert f"| breastmnist | {enc} | {len(v)} | auc | {np.mean(v):.4f} ± {np.std(v, ddof=1):.4f} | {test} |" in md
  assert "| breastmnist | imagenet | 4 | auc | 0.6150 ± 0.0265 |" in md  # by hand: runs 0-3 = 2.46 / 4
  assert "**Not finished** when this report was made (2 runs or encoders" in md
  assert f"`{root / 'breastmnist' / 'simclr' / 'run5'}`" in md and f"`{stopped}`" in md
  assert "BreastMNIST (breast ultrasound, MedMNIST 28 px) has no patient ids (MedMNIST drops them)" in md
  assert "the numbers mean nothing" in md and "same test images" in md
  assert ("Encoder simclr: pretrained on `/x/breastmnist.npz`, split `train` (labels unused; its config.json); "
          "the same file as task(s) breastmnist") in md
  assert ("Encoder imagenet: pretrained on `/x/breastmnist.npz`, split `train`; then on `/x/pneumoniamnist.npz`, "
          "split `train` (labels unused; 2 stages, from the checkpoints' config.json); the same file as task(s) "
          "breastmnist") in md
  # a supervised domain-adaptive stage (adapt_supervised) is named as such, labels and all
  ck3 = root / "encoders" / "supervised"
  ck3.mkdir(parents=True)
  (ck3 / "config.json").write_text(json.dumps({"mode": "finetune", "train": {"init_checkpoint": "/w/imagenet"},
                                               "data": {"path": "/x/breastmnist.npz", "train_split": "train"}}))
  line = transfer_report.encoder_limits({"name": "sup", "checkpoint": str(ck3)}, {"breastmnist": "/x/breastmnist.npz"})
  assert line == ("  - Encoder sup: pretrained on `/x/breastmnist.npz`, split `train` with its labels (supervised) "
                  "(labels used where marked; its config.json); the same file as task(s) breastmnist: the "
                  "pretraining saw their training images and labels (not their test split)")
  # one rendering: the combined report's section is the study's own report, line for line
  assert transfer_report.write_report(path, str(tmp_path / "own")) == 0
  own = (tmp_path / "own" / "transfer_smoke.md").read_text()
  section = own[own.index("## Transfer benchmark (smoke)"):]
  assert section.strip() in md
  assert (out / "smoke_transfer_breastmnist.png").read_bytes()[:4] == b"\x89PNG"
