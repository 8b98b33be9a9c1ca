"""benchmarks/transfer.py: the report on fake result files, skip/resume of the runner, the smoke scale."""
import json
import os

import numpy as np
import pytest
from scipy import stats

from benchmarks import transfer

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
             "eval": {"task": "multiclass", "eval_every": 20, "val_split": "holdout", "select_metric": "auc"},
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
  assert transfer.write_report(path, str(out)) == 0
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
  rows = {r["encoder"]: r for r in transfer.table_rows(json.load(open(path)))}
  assert rows["simclr"]["t"] > 0 and rows["simclr"]["p"] < 0.001
  assert rows["imagenet"]["p"] > 0.05 and rows["random"]["t"] is None
  assert "md5 `abc`" in md and "adam lr 0.0002 (constant schedule" in md
  assert "| simclr | 5 | auc |" in md and "| 2 of 5 | 0, 1, 2, 3, 4 |" in md
  # The fake configs predate the early-stop keys: read as off.
  assert ("`auc`; no early stop (the fixed length; the best hold-out state is tested), no ReduceLROnPlateau; "
          "28 px") in md
  assert (out / "smoke_transfer_breastmnist.png").stat().st_size > 1000


def test_stopping_text_reads_the_eval_settings():
  assert transfer.stopping_text({"early_stop_patience": 10, "plateau_factor": 0.1, "plateau_patience": 5}) == (
      "early stop after 10 hold-out scores without improvement, lr x 0.1 after 5 (ReduceLROnPlateau)")
  assert transfer.stopping_text({"early_stop_patience": 3, "plateau_factor": 0.0}) == (
      "early stop after 3 hold-out scores without improvement, no ReduceLROnPlateau")


def test_combined_report_has_the_transfer_section_read_from_the_result_files(tmp_path):
  """benchmarks.report over a workdir holding a transfer study.json: the section's cells equal what
  the runs' results.json hold (NumPy / scipy on the values read back), an unfinished run is listed and
  left out, and the section is the same text as the study's own report."""
  from benchmarks import report
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
  # one rendering: the combined report's section is the study's own report, line for line
  assert transfer.write_report(path, str(tmp_path / "own")) == 0
  own = (tmp_path / "own" / "transfer_smoke.md").read_text()
  section = own[own.index("## Transfer benchmark (smoke)"):]
  assert section.strip() in md
  assert (out / "smoke_transfer_breastmnist.png").read_bytes()[:4] == b"\x89PNG"


def test_parse_encoders_and_tasks():
  encs = transfer.parse_encoders("random,simclr=simclr:pneumoniamnist,r50=random:in,in=weights/x,ad=adapt:weights/x")
  assert [(e.name, e.kind, e.source) for e in encs] == [
      ("random", "random", ""), ("simclr", "simclr", "pneumoniamnist"), ("r50", "random", "in"),
      ("in", "checkpoint", "weights/x"), ("ad", "adapt", "weights/x")]
  with pytest.raises(SystemExit, match="each name once"):
    transfer.parse_encoders("random,random")
  with pytest.raises(SystemExit, match="names no encoder"):
    transfer.parse_encoders("r=random:nothing")
  tasks = transfer.parse_tasks("breastmnist,seg=configs/x.py:small")
  assert [(t.name, t.kind, t.source) for t in tasks] == [("breastmnist", "medmnist", "breastmnist"),
                                                         ("seg", "config", "configs/x.py:small")]
  tasks = transfer.parse_tasks("breastmnist;seg=configs/x.py:small,size=32")  # ';' when a variant has commas
  assert [(t.name, t.source) for t in tasks] == [("breastmnist", "breastmnist"), ("seg", "configs/x.py:small,size=32")]


def test_holdout_is_a_stratified_tenth_of_train(shared_data, tmp_path):
  from configs import chexpert_finetune
  c = chexpert_finetune.get_config("local")
  with c.unlocked():
    c.data.path = str(shared_data / "breastmnist.npz")
  h = transfer.make_holdout(c, str(tmp_path), "breastmnist")
  with np.load(h["path"]) as new, np.load(c.data.path) as old:
    assert len(new["holdout_labels"]) + len(new["fit_labels"]) == len(old["train_labels"])
    assert np.array_equal(new["test_images"], old["test_images"])
    for k in np.unique(old["train_labels"]):  # per class: round(10%) of its images
      assert np.sum(new["holdout_labels"] == k) == round(0.1 * np.sum(old["train_labels"] == k))
    # the two parts are a partition of the training images (every image once)
    both = np.concatenate([new["fit_images"], new["holdout_images"]]).reshape(len(old["train_images"]), -1)
    assert len({b.tobytes() for b in both}) == len({b.tobytes() for b in old["train_images"].reshape(len(both), -1)})


def test_finished_runs_are_skipped_and_an_interrupted_one_resumes(shared_data, tmp_path, monkeypatch):
  from medssl_jax import main as main_lib
  from medssl_jax.training import workdir as workdir_lib
  calls = []

  def fake_run(config, workdir):  # what a finished fine-tuning run leaves behind
    calls.append(workdir)
    os.makedirs(workdir, exist_ok=True)
    workdir_lib.save_config(workdir, config)
    r = {"mode": "finetune", "completed": True, "final_step": 4, "num_steps": 4, "selected_step": 2,
         "num_train_images": 491, "seed": config.seed, "wall_time_sec": 1.0,
         "test": {"auc": {"value": 0.5 + 0.01 * config.seed + (0.1 if config.eval.checkpoint else 0.0),
                          "ci_low": 0.0, "ci_high": 1.0}}}
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(r, f)
    return r

  monkeypatch.setattr(main_lib, "run", fake_run)
  wd = str(tmp_path / "wd")
  args = ["--scale=smoke", f"--workdir={wd}", f"--data_dir={shared_data}", f"--out={tmp_path / 'out'}",
          "--encoders=random,wide=random:random", "--runs=3"]
  assert transfer.main(args) == 0
  assert len(calls) == 6
  m = json.load(open(os.path.join(wd, "smoke", "transfer", "study.json")))
  assert [(r["encoder"], r["run"], r["seed"]) for r in m["runs"]] == [
      ("random", 0, 0), ("random", 1, 1), ("random", 2, 2), ("wide", 0, 0), ("wide", 1, 1), ("wide", 2, 2)]
  calls.clear()
  assert transfer.main(args) == 0
  assert calls == []  # everything finished: nothing runs
  # An interrupted run (config.json and checkpoints, no completed results.json) is run again, alone.
  stopped = transfer.run_dir(os.path.join(wd, "smoke", "transfer"), "breastmnist", "wide", 1)
  with open(os.path.join(stopped, "results.json"), "w") as f:
    json.dump({"mode": "finetune", "completed": False, "final_step": 2, "num_steps": 4}, f)
  assert transfer.main(args) == 0
  assert calls == [stopped]
  md = (tmp_path / "out" / "transfer_smoke.md").read_text()
  assert "| breastmnist | wide | 3 | auc | 0.5100 ± 0.0100 | t = +0.000, p = 1 |" in md


def test_adapt_arm_continues_simclr_from_the_checkpoint_with_its_settings(tmp_path):
  from medssl_jax.training import loop
  ck = tmp_path / "imported"
  (ck / "checkpoints").mkdir(parents=True)
  loop.write_json(str(ck / "config.json"), {"model": {"arch": "resnet", "depth": 50, "width": 1.0, "stem": "imagenet",
                                                      "input_norm": "imagenet", "downsample_padding": "symmetric"},
                                            "data": {"channels": 3}})
  enc = transfer.parse_encoders(f"in_cxr=adapt:{ck}")[0]
  c = transfer.adapt_config(enc, "/x/pneumoniamnist.npz", transfer.common.SCALES["smoke"], transfer.SCALES["smoke"])
  assert c.mode == "pretrain" and c.method == "simclr" and c.train.init_checkpoint == str(ck)
  assert (c.model.depth, c.model.stem, c.model.input_norm, c.model.downsample_padding, c.data.channels) == (
      50, "imagenet", "imagenet", "symmetric", 3)
  assert c.train.num_steps == transfer.SCALES["smoke"]["adapt_steps"] and c.data.path == "/x/pneumoniamnist.npz"


def test_smoke_scale_end_to_end(shared_data, tmp_path):
  """2 encoders (random init; SimCLR pretrained here on BreastMNIST's training images) x BreastMNIST x 1
  run, real data, then the report. One run per encoder keeps the test short (3 runs, not 5): the
  per-run seeds and the mean / std / t-test over runs are checked on the runner with a stand-in run
  and on fake result files above."""
  wd, out = str(tmp_path / "wd"), tmp_path / "out"
  assert transfer.main(["--scale=smoke", f"--workdir={wd}", f"--data_dir={shared_data}", f"--out={out}",
                        "--encoders=random,simclr=simclr:breastmnist", "--runs=1"]) == 0
  m = json.load(open(os.path.join(wd, "smoke", "transfer", "study.json")))
  assert len(m["runs"]) == 2 and not m.get("missing")
  md = (out / "transfer_smoke.md").read_text()
  for run in m["runs"]:
    r = json.load(open(os.path.join(run["workdir"], "results.json")))
    c = json.load(open(os.path.join(run["workdir"], "config.json")))
    assert r["completed"] and 0.0 <= r["test"]["auc"]["value"] <= 1.0 and r["seed"] == run["seed"] == 0
    assert (c["optim"]["name"], c["optim"]["base_lr"], c["optim"]["schedule"]) == ("adam", 2e-4, "constant")
    assert (c["data"]["train_split"], c["eval"]["val_split"], c["eval"]["select_metric"]) == ("fit", "holdout", "auc")
    # the scale's patience: early stop and ReduceLROnPlateau (factor 0.1) after one hold-out score
    assert (c["eval"]["early_stop_patience"], c["eval"]["plateau_factor"], c["eval"]["plateau_patience"]) == (1, 0.1, 1)
    assert [h["step"] for h in r["val_history"]] == [2, 4] and "lr_reduced_at" in r   # 4 steps: never stopped
    assert r["selected_step"] in (2, 4) and r["num_train_images"] == 546 - 55  # 10% hold-out of 546 (stratified)
    assert (c["eval"]["init"] == "random") == (run["encoder"] == "random")
    assert (c["eval"]["checkpoint"] == "") == (run["encoder"] == "random")
    # the table's cell is the result file's value; one run: no std, no t-test
    test = "reference" if run["encoder"] == "random" else "n/a"
    assert f"| breastmnist | {run['encoder']} | 1 | auc | {r['test']['auc']['value']:.4f} ± nan | {test} |" in md
  assert md.count("| breastmnist | ") == 2
  # the SimCLR encoder was pretrained on the task's own file (train split): the report says so
  assert (f"Encoder simclr: pretrained on `{shared_data / 'breastmnist.npz'}`, split `train` (labels unused; its "
          "config.json); the same file as task(s) breastmnist") in md
  assert (out / "smoke_transfer_breastmnist.png").is_file()


def test_segmentation_config_plugs_in_as_a_task(shared_data, tmp_path):
  """configs/lung_segmentation.py:smoke as a task: its own patient split's 'val' is the hold-out,
  Adam 1e-3 cosine, Dice reported; one random-init encoder x 1 run (the runs are what the other tests
  cover), then the report."""
  cfg = os.path.join(transfer.common.REPO_ROOT, "configs", "lung_segmentation.py")
  wd, out = str(tmp_path / "wd"), tmp_path / "out"
  assert transfer.main(["--scale=smoke", f"--workdir={wd}", f"--data_dir={shared_data}", f"--out={out}",
                        "--encoders=random", "--runs=1", f"--tasks=lungseg={cfg}:smoke"]) == 0
  m = json.load(open(os.path.join(wd, "smoke", "transfer", "study.json")))
  assert len(m["runs"]) == 1
  for run in m["runs"]:
    c = json.load(open(os.path.join(run["workdir"], "config.json")))
    r = json.load(open(os.path.join(run["workdir"], "results.json")))
    assert (c["optim"]["name"], c["optim"]["base_lr"], c["optim"]["schedule"]) == ("adam", 1e-3, "cosine")
    assert (c["eval"]["task"], c["eval"]["val_split"], run["metric"]) == ("segmentation", "val", "dice")
    assert (c["eval"]["early_stop_patience"], c["eval"]["plateau_factor"]) == (1, 0.0)   # cosine, no plateau
    assert 0.0 <= r["test"]["dice"]["value"] <= 1.0
  md = (out / "transfer_smoke.md").read_text()
  assert "| lungseg | random | 1 | dice |" in md and "lungVAE" in md  # the masks' provenance beside the numbers


def test_a_user_error_inside_a_run_is_one_error_line(tmp_path):
  """The study calls medssl_jax.main.run in-process; a UserError there (here: a segmentation task's
  CSV that does not exist) ends the command with one `error: ...` line and exit 2, no traceback."""
  import subprocess
  import sys
  p = subprocess.run([sys.executable, "-m", "benchmarks.transfer", "--scale=smoke", f"--workdir={tmp_path}",
                      "--tasks=seg=configs/lung_segmentation.py:smoke,root=/nonexistent;breastmnist"],
                     cwd=transfer.common.REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert p.returncode == 2, p.stderr[-2000:]
  assert "error: segmentation manifest CSV /nonexistent/pairs.csv does not exist" in p.stderr
  assert "Traceback" not in p.stderr
