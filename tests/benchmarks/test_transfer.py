"""benchmarks/transfer.py: parsing, the hold-out, skip/resume of the runner, the smoke scale (its report:
test_transfer_report.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import common
from benchmarks import transfer
from configs import chexpert_finetune
from medssl_jax import main as main_lib
from medssl_jax.errors import UserError
from medssl_jax.training import loop
from medssl_jax.training import workdir as workdir_lib


def test_parse_encoders_and_tasks():
  encs = transfer.parse_encoders("random,simclr=simclr:pneumoniamnist,r50=random:in,in=weights/x,ad=adapt:weights/x,"
                                 "ssl=adapt_ssl:weights/x,sup=adapt_supervised:weights/x")
  assert [(e.name, e.kind, e.source) for e in encs] == [
      ("random", "random", ""), ("simclr", "simclr", "pneumoniamnist"), ("r50", "random", "in"),
      ("in", "checkpoint", "weights/x"), ("ad", "adapt_ssl", "weights/x"), ("ssl", "adapt_ssl", "weights/x"),
      ("sup", "adapt_supervised", "weights/x")]  # adapt: is adapt_ssl's earlier spelling
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
  calls = []

  def fake_run(config, workdir):  # what a finished fine-tuning run leaves behind
    calls.append(workdir)
    os.makedirs(workdir, exist_ok=True)
    workdir_lib.save_config(workdir, config)
    r = {"mode": "finetune", "completed": True, "final_step": 4, "num_steps": 4, "selected_step": 2,
         "num_train_images": 491, "seed": config.seed, "wall_time_sec": 1.0,
         "test": {"auc": {"value": 0.5 + 0.01 * config.seed + (0.1 if config.train.init_checkpoint else 0.0),
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
  ck = tmp_path / "imported"
  (ck / "checkpoints").mkdir(parents=True)
  loop.write_json(str(ck / "config.json"), {"model": {"arch": "resnet", "depth": 50, "width": 1.0, "stem": "imagenet",
                                                      "input_norm": "imagenet", "downsample_padding": "symmetric"},
                                            "data": {"channels": 3}})
  enc = transfer.parse_encoders(f"in_cxr=adapt:{ck}")[0]
  c = transfer.adapt_config(enc, "/x/pneumoniamnist.npz", common.SCALES["smoke"], transfer.SCALES["smoke"])
  assert c.mode == "pretrain" and c.method == "simclr" and c.train.init_checkpoint == str(ck)
  assert (c.model.depth, c.model.stem, c.model.input_norm, c.model.downsample_padding, c.data.channels) == (
      50, "imagenet", "imagenet", "symmetric", 3)
  assert c.train.num_steps == transfer.SCALES["smoke"]["adapt_steps"] and c.data.path == "/x/pneumoniamnist.npz"


def test_supervised_adapt_arm_fine_tunes_every_layer_on_the_labels_for_the_adapt_steps(tmp_path):
  ck = tmp_path / "imported"
  (ck / "checkpoints").mkdir(parents=True)
  loop.write_json(str(ck / "config.json"), {"model": {"arch": "resnet", "depth": 50, "width": 1.0, "stem": "imagenet",
                                                      "input_norm": "imagenet"}, "data": {"channels": 3}})
  enc = transfer.parse_encoders(f"in_cxr=adapt_supervised:{ck}")[0]
  ts = transfer.SCALES["small"]
  c = transfer.adapt_supervised_config(enc, "/x/pneumoniamnist.npz", common.SCALES["small"], ts)
  assert (c.mode, c.finetune.init, c.finetune.task, c.train.init_checkpoint) == ("finetune", "pretrained", "multiclass",
                                                                                 str(ck))
  assert (c.model.depth, c.model.input_norm, c.data.channels, c.data.path) == (50, "imagenet", 3, "/x/pneumoniamnist.npz")
  assert (c.optim.name, c.optim.base_lr, c.optim.schedule) == ("adam", transfer.CLASSIFICATION_LR, "constant")
  assert c.train.num_steps == ts["adapt_steps"] and c.finetune.val_split == "" and c.finetune.label_fraction == 1.0
  assert transfer.ADAPT_CONFIGS["adapt_ssl"] is transfer.adapt_config


def md_of(out):
  return (out / "transfer_smoke.md").read_text()


def test_smoke_scale_end_to_end(shared_data, tmp_path):
  """2 encoders (random init; SimCLR pretrained here on BreastMNIST's training images) x BreastMNIST x 1
  run, real data, then the report. One run per encoder keeps the test short (3 runs, not 5): the
  per-run seeds and the mean / std / t-test over runs are checked on the runner with a stand-in run
  and on fake result files above."""
  wd, out = str(tmp_path / "wd"), tmp_path / "out"
  # ... and the supervised domain-adaptive arm, from the SimCLR encoder (resolved before it), on PneumoniaMNIST's labels
  simclr_dir = common.pretrain_dir(wd, "smoke", "breastmnist")
  assert transfer.main(["--scale=smoke", f"--workdir={wd}", f"--data_dir={shared_data}", f"--out={out}",
                        f"--encoders=random,simclr=simclr:breastmnist,sup=adapt_supervised:{simclr_dir}",
                        "--runs=1"]) == 0
  m = json.load(open(os.path.join(wd, "smoke", "transfer", "study.json")))
  assert len(m["runs"]) == 3 and not m.get("missing")
  sup = json.load(open(os.path.join(wd, "smoke", "transfer", "encoders", "sup", "results.json")))
  assert sup["completed"] and sup["mode"] == "finetune" and sup["final_step"] == transfer.SCALES["smoke"]["adapt_steps"]
  assert (f"Encoder sup: pretrained on `{shared_data / 'breastmnist.npz'}`, split `train`; then on "
          f"`{shared_data / 'pneumoniamnist.npz'}`, split `train` with its labels (supervised)") in md_of(out)
  md = (out / "transfer_smoke.md").read_text()
  for run in m["runs"]:
    r = json.load(open(os.path.join(run["workdir"], "results.json")))
    c = json.load(open(os.path.join(run["workdir"], "config.json")))
    assert r["completed"] and 0.0 <= r["test"]["auc"]["value"] <= 1.0 and r["seed"] == run["seed"] == 0
    assert (c["optim"]["name"], c["optim"]["base_lr"], c["optim"]["schedule"]) == ("adam", 2e-4, "constant")
    assert (c["data"]["train_split"], c["finetune"]["val_split"], c["finetune"]["select_metric"]) == ("fit", "holdout", "auc")
    # the scale's patience: early stop and ReduceLROnPlateau (factor 0.1) after one hold-out score
    assert (c["finetune"]["early_stop_patience"], c["finetune"]["plateau_factor"], c["finetune"]["plateau_patience"]) == (1, 0.1, 1)
    assert [h["step"] for h in r["val_history"]] == [2, 4] and "lr_reduced_at" in r   # 4 steps: never stopped
    assert r["selected_step"] in (2, 4) and r["num_train_images"] == 546 - 55  # 10% hold-out of 546 (stratified)
    assert (c["finetune"]["init"] == "random") == (run["encoder"] == "random")
    assert (c["train"]["init_checkpoint"] == "") == (run["encoder"] == "random")
    # the table's cell is the result file's value; one run: no std, no t-test
    test = "reference" if run["encoder"] == "random" else "n/a"
    assert f"| breastmnist | {run['encoder']} | 1 | auc | {r['test']['auc']['value']:.4f} ± nan | {test} |" in md
  assert md.count("| breastmnist | ") == 3
  # the SimCLR encoder was pretrained on the task's own file (train split): the report says so
  assert (f"Encoder simclr: pretrained on `{shared_data / 'breastmnist.npz'}`, split `train` (labels unused; its "
          "config.json); the same file as task(s) breastmnist") in md
  assert (out / "smoke_transfer_breastmnist.png").is_file()


def test_segmentation_config_plugs_in_as_a_task(shared_data, tmp_path):
  """configs/lung_segmentation.py:smoke as a task: its own patient split's 'val' is the hold-out,
  Adam 1e-3 cosine, Dice reported; one random-init encoder x 1 run (the runs are what the other tests
  cover), then the report."""
  cfg = os.path.join(common.REPO_ROOT, "configs", "lung_segmentation.py")
  wd, out = str(tmp_path / "wd"), tmp_path / "out"
  assert transfer.main(["--scale=smoke", f"--workdir={wd}", f"--data_dir={shared_data}", f"--out={out}",
                        "--encoders=random", "--runs=1", f"--tasks=lungseg={cfg}:smoke"]) == 0
  m = json.load(open(os.path.join(wd, "smoke", "transfer", "study.json")))
  assert len(m["runs"]) == 1
  for run in m["runs"]:
    c = json.load(open(os.path.join(run["workdir"], "config.json")))
    r = json.load(open(os.path.join(run["workdir"], "results.json")))
    assert (c["optim"]["name"], c["optim"]["base_lr"], c["optim"]["schedule"]) == ("adam", 1e-3, "cosine")
    assert (c["finetune"]["task"], c["finetune"]["val_split"], run["metric"]) == ("segmentation", "val", "dice")
    assert (c["finetune"]["early_stop_patience"], c["finetune"]["plateau_factor"]) == (1, 0.0)   # cosine, no plateau
    assert 0.0 <= r["test"]["dice"]["value"] <= 1.0
  md = (out / "transfer_smoke.md").read_text()
  assert "| lungseg | random | 1 | dice |" in md and "lungVAE" in md  # the masks' provenance beside the numbers


def test_a_user_error_inside_a_run_is_one_error_line(tmp_path):
  """The study calls medssl_jax.main.run in-process; a UserError there (here: a segmentation task's
  CSV that does not exist) ends the command with one `error: ...` line and exit 2, no traceback."""
  p = subprocess.run([sys.executable, "-m", "benchmarks.transfer", "--scale=smoke", f"--workdir={tmp_path}",
                      "--tasks=seg=configs/lung_segmentation.py:smoke,root=/nonexistent;breastmnist"],
                     cwd=common.REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert p.returncode == 2, p.stderr[-2000:]
  assert "error: segmentation manifest CSV /nonexistent/pairs.csv does not exist" in p.stderr
  assert "Traceback" not in p.stderr


def test_a_supervised_adapt_arm_on_a_tasks_own_file_is_refused(tmp_path):
  """adapt_supervised trains on the adapt data's labels: with the task's own file as adapt data its row
  would not be a transfer, so the command refuses before any run, in one line."""
  encoders = transfer.parse_encoders("sup=adapt_supervised:weights/x,random")
  tasks = transfer.parse_tasks("pneumoniamnist,breastmnist")
  with pytest.raises(UserError, match=r"encoder\(s\) sup \(adapt_supervised\) train on the labels of .*task\(s\) "
                     r"pneumoniamnist: not a transfer"):
    transfer.check_supervised_adapt_data(encoders, tasks, str(tmp_path / "pneumoniamnist.npz"), str(tmp_path))
  transfer.check_supervised_adapt_data(encoders, tasks[1:], str(tmp_path / "pneumoniamnist.npz"), str(tmp_path))
  ssl = transfer.parse_encoders("ssl=adapt_ssl:weights/x")  # labels unused: allowed
  transfer.check_supervised_adapt_data(ssl, tasks, str(tmp_path / "pneumoniamnist.npz"), str(tmp_path))
  p = subprocess.run([sys.executable, "-m", "benchmarks.transfer", "--scale=smoke", f"--workdir={tmp_path}",
                      "--encoders=sup=adapt_supervised:weights/x", "--tasks=pneumoniamnist"],
                     cwd=common.REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert p.returncode == 2 and "error: encoder(s) sup (adapt_supervised)" in p.stderr and "Traceback" not in p.stderr
