"""benchmarks/: the report on fake result files, and smoke versions of both studies on real data."""
import json
import os

import numpy as np

from benchmarks import common
from benchmarks import dvme_study
from benchmarks import label_efficiency as study_a
from benchmarks import micle_vs_simclr as study_b
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
    json.dump({"moco": {"queue_size": 128}, "train": {"temperature": 0.2, "batch_size": 16},
               "optim": {"name": "sgd", "base_lr": 0.03, "lr_scaling": "linear"}}, f)
  runs.append({"role": "pretrain", "method": "moco_v2", "dataset": "breastmnist", "workdir": moco})
  for mode in ("finetune", "linear_eval"):
    wd = str(root / "breastmnist" / f"{mode}_moco_v2")
    _fake_eval(wd, mode=mode, init="pretrained", top1=(0.75, 0.6875, 0.8125), auc=(0.8, 0.75, 0.85), wall=6.0,
               correct=True, extra={"feature_norm": "batchnorm" if mode == "linear_eval" else "none", "base_lr": 0.05})
    runs.append({"role": "eval", "dataset": "breastmnist", "mode": mode, "init": "pretrained", "arm": "moco_v2",
                 "fraction": 1.0, "draw": 0, "batch": 16, "pretrain": moco, "workdir": wd})
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
  # the recipe run is not an arm of the comparison tables or plot; one row per table (SimCLR, MoCo v2)
  assert md.count("| finetune | 1 | 0 |") == 2
  # the MoCo runs (init 'pretrained') are not taken for SimCLR rows
  assert md.count("| BreastMNIST | ours, SimCLR init, study settings (smoke) |") == 1
  assert "md5 `0123abcd`" in md and "4/4 steps, final loss 5.2500, wall time 12.5 s" in md
  assert "2 CPU cores" in md and "JAX 0.0" in md
  assert ("- Linear evaluation (read from its runs' results.json): frozen encoder, feature norm batchnorm "
          "(`eval.feature_norm`), base learning rate 0.05") in md
  assert "**Not finished** when this report was made (1 runs, left out of the tables and plots): " \
         "`finetune_pretrained_f0.1_d0`" in md
  png = out / "smoke_label_efficiency_breastmnist_top1.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # A manifest of a study the generator does not know is named in the report, not dropped.
  other = tmp_path / "wd" / "smoke" / "other" / common.MANIFEST
  other.parent.mkdir()
  other.write_text(json.dumps({"study": "someday", "scale": "smoke", "runs": []}))
  assert report.main(["--workdir", str(tmp_path / "wd"), "--out", str(out), "--baselines", str(baselines)]) == 0
  md2 = (out / "report.md").read_text()
  assert f"## Not reported: `{other}`" in md2 and "Its study, 'someday', has no section" in md2
  assert md2.count("| finetune | 1 | 0 |") == 2  # the rest as before


def test_parse_baselines_reads_the_shared_table(shared_data):
  b = report.parse_baselines(str(shared_data / "medmnist_v2_benchmark.md"))
  assert b["PneumoniaMNIST"] == {"AUC": 0.944, "ACC": 0.854}
  assert b["BreastMNIST"] == {"AUC": 0.901, "ACC": 0.863}


def test_smoke_studies_and_report_on_real_data(shared_data, tmp_path):
  wd, args = str(tmp_path / "wd"), ["--scale", "smoke", "--data_dir", str(shared_data)]
  assert study_a.main(args + ["--workdir", wd]) == 0
  assert study_b.main(args + ["--workdir", wd]) == 0
  for study in ("label_efficiency", "micle_vs_simclr"):
    m = json.load(open(os.path.join(wd, "smoke", study, "study.json")))
    for run in m["runs"]:
      assert common.is_done(common.read_results(run["workdir"])), run
      if run["role"] == "eval":
        assert os.path.isfile(os.path.join(run["workdir"], "predictions_test.npz"))
  assert m["bags"]["patients_all_splits"] == 127
  moved = [r["encoder_change"] for r in m["runs"] if r["role"] == "pretrain" and r["arm"] != "base"]
  assert len(moved) == 2 and all(0 < x < 1 for x in moved), moved
  assert {r["arm"] for r in m["runs"] if r["role"] == "eval"} == {"micle", "simclr", "base"}
  a = json.load(open(os.path.join(wd, "smoke", "label_efficiency", "study.json")))
  # The MoCo v2 arm: its own pretraining run, and every evaluation of the other arms from it too.
  moco_pre = [r for r in a["runs"] if r["role"] == "pretrain" and r.get("method") == "moco_v2"]
  assert [os.path.basename(r["workdir"]) for r in moco_pre] == ["pretrain_moco_v2_breastmnist"]
  assert json.load(open(os.path.join(moco_pre[0]["workdir"], "config.json")))["method"] == "moco_v2"
  evals = [r for r in a["runs"] if r["role"] == "eval"]
  key = lambda r: (r["mode"], r["fraction"], r["draw"])  # noqa: E731
  assert sorted(key(r) for r in evals if r["arm"] == "moco_v2") == sorted(key(r) for r in evals if r["arm"] == "random")
  assert {r["pretrain"] for r in evals if r["arm"] == "moco_v2"} == {moco_pre[0]["workdir"]}
  assert [r["width"] for r in a["runs"] if r["role"] == "recipe"] == [0.125]
  # Study B starts from Study A's PneumoniaMNIST pretraining run when it exists (same config, shared dir).
  assert m["runs"][0]["workdir"] == os.path.abspath(common.pretrain_dir(wd, "smoke", "pneumoniamnist"))
  # A re-run skips every finished run.
  mtime = os.path.getmtime(os.path.join(m["runs"][0]["workdir"], "results.json"))
  assert study_b.main(args + ["--workdir", wd]) == 0
  assert os.path.getmtime(os.path.join(m["runs"][0]["workdir"], "results.json")) == mtime
  # Study C on Study A's pretraining runs (skipped there: done): features cached once, 5 arms x
  # (20 images, Full) on BreastMNIST.
  # An extra encoder a user points at (here Study A's SimCLR folder again, under another name):
  # benchmarked alone and fused with the others in concat_all / dvme_all.
  extra = os.path.abspath(common.pretrain_dir(wd, "smoke", "breastmnist"))
  assert dvme_study.main(args + ["--workdir", wd, f"--encoders=again={extra}"]) == 0
  c = json.load(open(os.path.join(wd, "smoke", "dvme", "study.json")))
  heads = [r for r in c["runs"] if r["role"] == "eval"]
  assert sorted({r["arm"] for r in heads}) == ["again", "concat", "concat_all", "dvme", "dvme_all", "moco_v2",
                                               "random", "simclr"] and len(heads) == 16
  dv_all = common.read_results(next(r["workdir"] for r in heads if r["arm"] == "dvme_all" and r["train_size"] == 20))
  assert dv_all["attention_by_class"]["sources"] == ["simclr", "moco_v2", "random", "again"]
  assert {r["workdir"] for r in c["runs"] if r["role"] == "pretrain"} == {r["workdir"] for r in a["runs"]
                                                                          if r["role"] == "pretrain"}
  dv = common.read_results(next(r["workdir"] for r in heads if r["arm"] == "dvme" and r["train_size"] == 20))
  assert dv["num_train_images"] == 20 and len(dv["attention_by_class"]["sources"]) == 3
  out = tmp_path / "report"
  assert report.main(["--workdir", wd, "--out", str(out),
                      "--baselines", str(shared_data / "medmnist_v2_benchmark.md")]) == 0
  md = (out / "report.md").read_text()
  assert "## Study A" in md and "## Study B" in md and "127 patients" in md
  assert "## Study C" in md and "### breastmnist, training set n20 (1 fold(s))" in md
  assert "DVME attention received per source (test mean over folds): simclr " in md
  assert "![dvme attention per class, breastmnist n20](smoke_dvme_attention_breastmnist_n20.png)" in md
  assert (out / "smoke_dvme_attention_breastmnist_n20.png").is_file()
  assert "DVME over all encoders attention received per source (test mean over folds): simclr " in md
  assert (out / "smoke_dvme_all_attention_breastmnist_n20.png").is_file()
  assert (out / "smoke_dvme_tsne_breastmnist.png").is_file() and "![t-SNE DVME breastmnist]" in md
  assert "- MoCo v2 pretraining (train images, labels unused): 4/4 steps" in md
  assert md.count("| finetune | 1 | 0 |") == 2 and "Δ MoCo − random top1 | Δ SimCLR − MoCo top1" in md
  assert md.count("LARS base lr 0.075 (sqrt scaling) at batch 16; encoder weights moved by") == 2
  assert "28209eda62fecd6e6a2d98b1501bb15f" in md and "750601b1f35ba3300ea97c75c52ff8f6" in md
  assert (out / "smoke_micle_vs_simclr_top1.png").is_file()
  assert (out / "smoke_label_efficiency_breastmnist_auc.png").is_file()


def test_a_run_stopped_early_stops_the_study(tmp_path, monkeypatch):
  """A preempted run (SIGTERM: checkpoint saved, completed false) must not let the study go on."""
  import pytest
  from medssl_jax import main as main_lib
  monkeypatch.setattr(main_lib, "run", lambda config, workdir: {"mode": "pretrain", "completed": False,
                                                               "final_step": 2, "num_steps": 4})
  with pytest.raises(SystemExit, match="stopped at step 2 of 4; re-run the same command"):
    common.run_once(None, str(tmp_path / "run"), log=lambda *_: None)


def _finished_run(workdir: str, config) -> None:
  os.makedirs(workdir)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"mode": "pretrain", "completed": True}, f)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort())


def test_only_finished_runs_nothing_and_lists_the_rest(tmp_path, monkeypatch):
  from medssl_jax import main as main_lib
  monkeypatch.setattr(main_lib, "run", None)  # nothing may be run
  done_dir, todo_dir = str(tmp_path / "done"), str(tmp_path / "todo")
  config = study_a.pretrain_config("x.npz", common.SCALES["smoke"])
  _finished_run(done_dir, config)
  quiet = lambda *_: None
  manifest = {"runs": []}
  for wd in (done_dir, todo_dir):
    common.add_run(manifest, {"workdir": wd}, common.run_once(config, wd, log=quiet, run=False))
  assert manifest == {"runs": [{"workdir": done_dir}], "missing": [todo_dir]}


def test_a_run_made_with_other_settings_is_refused_not_reused(shared_data, tmp_path):
  import pytest
  s, data = common.SCALES["smoke"], str(shared_data / "breastmnist.npz")
  plain = study_a.eval_config(data, s, mode="linear_eval", init="random", checkpoint="", fraction=1.0, draw=0)
  assert plain.eval.feature_norm == common.LINEAR_FEATURE_NORM == "batchnorm"
  with plain.unlocked():
    plain.eval.feature_norm = "none"
  wd = str(tmp_path / "lin")
  _finished_run(wd, plain)
  wanted = study_a.eval_config(data, s, mode="linear_eval", init="random", checkpoint="", fraction=1.0, draw=0)
  for run in (True, False):
    with pytest.raises(SystemExit, match="eval.feature_norm: 'none' -> 'batchnorm'"):
      common.run_once(wanted, wd, log=lambda *_: None, run=run)
  # A key the saved run predates counts as its default: fine-tuning has no feature norm.
  ft = study_a.eval_config(data, s, mode="finetune", init="random", checkpoint="", fraction=1.0, draw=0)
  saved = json.loads(ft.to_json_best_effort())
  del saved["eval"]["feature_norm"]
  wd2 = str(tmp_path / "ft")
  _finished_run(wd2, ft)
  with open(os.path.join(wd2, "config.json"), "w") as f:
    json.dump(saved, f)
  assert common.run_once(ft, wd2, log=lambda *_: None)["completed"]


def test_feature_scale_diagnostic_on_real_data(shared_data):
  from benchmarks import feature_scale
  r = feature_scale.main(["--dataset=breastmnist", "--scale=smoke", "--max_train=200",
                          f"--data_dir={shared_data}"])
  with np.load(shared_data / "breastmnist.npz") as d:
    y_train, y_test = d["train_labels"].ravel()[:200], d["test_labels"].ravel()
  assert (r["train_images"], r["test_images"], r["feature_dim"]) == (200, len(y_test), 64)
  assert r["majority_rate_test"] == np.mean(y_test == np.bincount(y_train).argmax())
  assert 0 < r["feature_std_across_images_mean"] < 0.05  # a random encoder's features are tiny
  for k in ("logreg_raw", "logreg_standardised"):
    assert 0.0 <= r[k]["test_auc"] <= 1.0


def test_every_config_of_the_full_scale_builds(shared_data, tmp_path):
  """`full` (meant for a GPU) is not run here: plan it with --only_finished, which builds every
  run's config (batches checked against the labelled images) and runs nothing."""
  args = ["--scale=full", "--only_finished", f"--workdir={tmp_path}", f"--data_dir={shared_data}"]
  assert study_a.main(args) == 0
  a = json.load(open(tmp_path / "full" / "label_efficiency" / "study.json"))
  s = common.SCALES["full"]
  evals = 2 * 3 * (s["draws"] * (len(s["fractions"]) - 1) + 1)   # modes x arms x (draws x fractions < 1, + 100%)
  # per data set: SimCLR and MoCo v2 pretraining + the evaluations
  assert a["runs"] == [] and len(a["missing"]) == len(s["datasets"]) * (2 + evals) + len(s["recipe"])
  assert study_b.main(args) == 0
  b = json.load(open(tmp_path / "full" / "micle_vs_simclr" / "study.json"))
  arms = len(study_b.EVAL_ARMS)
  assert len(b["missing"]) == 3 + arms * (s["draws"] * (len(s["fractions_b"]) - 1) + 1)


def test_continued_pretraining_takes_the_pretraining_step_size():
  """Study B continues at the step size of the SimCLR run it starts from (the paper's MICLe lr
  over a few hundred steps left the encoder where it was: a comparison of nothing)."""
  from medssl_jax.training import optim
  s = common.SCALES["small"]
  pre = study_a.pretrain_config("unused", s)
  for method in study_b.ARMS:
    cont = study_b.continue_config("unused", "ckpt", method, s)
    assert (cont.optim.name, cont.optim.base_lr, cont.optim.lr_scaling) == ("lars", 0.075, "sqrt")
    assert (pre.optim.name, pre.optim.base_lr, pre.optim.lr_scaling) == ("lars", 0.075, "sqrt")
    peak = optim.scaled_learning_rate(cont.optim.base_lr, s["covid_batch"], cont.optim.lr_scaling)
    assert abs(peak - 0.075 * np.sqrt(32)) < 1e-9 and peak > 30 * 0.1 * 32 / 256


def test_moco_arm_pretrains_at_the_simclr_arms_scale(shared_data):
  """Study A's MoCo v2 pretraining has the SimCLR pretraining's data, model, batch and steps at
  every scale; its queue is a multiple of the batch, at most a quarter of the training images
  (PneumoniaMNIST 4,708, BreastMNIST 546) or one batch, and at most :local's 1,024."""
  for scale, s in common.SCALES.items():
    for name, n_train in (("pneumoniamnist", 4708), ("breastmnist", 546)):
      path = str(shared_data / f"{name}.npz")
      m, p = study_a.moco_pretrain_config(path, s), study_a.pretrain_config(path, s)
      assert (m.method, p.method) == ("moco_v2", "simclr")
      data = lambda c: {k: v for k, v in c.data.to_dict().items() if k != "tfds_name"}  # noqa: E731 (npz: unused)
      assert m.model.to_dict() == p.model.to_dict() and data(m) == data(p), scale
      assert (m.train.batch_size, m.train.num_steps, m.seed) == (p.train.batch_size, p.train.num_steps, p.seed)
      q, b = m.moco.queue_size, m.train.batch_size
      assert q % b == 0 and q <= 1024 and (q <= n_train / 4 or q == b), (scale, name, q)
  small = common.SCALES["small"]
  assert study_a.moco_pretrain_config(str(shared_data / "pneumoniamnist.npz"), small).moco.queue_size == 1024
  assert study_a.moco_pretrain_config(str(shared_data / "breastmnist.npz"), small).moco.queue_size == 128


def test_dvme_regimes_fit_the_real_training_splits(shared_data):
  """Every Small / Medium subset of every scale can be drawn class-balanced from the real training
  split (BreastMNIST has 147 malignant training images: Medium's 500 is capped at 294, with a
  note), so a `small` Study C cannot stop half-way at a size the data cannot give."""
  from medssl_jax import fusion
  for scale, d in dvme_study.DVME_SCALES.items():
    for name in ("pneumoniamnist", "breastmnist"):
      with np.load(shared_data / f"{name}.npz") as f:
        y = f["train_labels"].ravel()
      for asked, size, note in dvme_study.feasible_sizes(y, d["train_sizes"]):
        assert len(fusion.training_subset(y, size, 0, 0)) == (size or len(y)), (scale, name, size)
        assert (size != asked) == bool(note)
  with np.load(shared_data / "breastmnist.npz") as f:
    y = f["train_labels"].ravel()
  assert dvme_study.feasible_sizes(y, (50, 500, 0)) == [
      (50, 50, ""), (500, 294, "train_size 500 -> 294: class 0 has 147 training images"), (0, 0, "")]


def test_a_pretraining_without_a_recorded_loss_says_so():
  """A run stopped after its last checkpoint and resumed there writes results.json with no step
  run, hence no loss: the report says that instead of printing 'final loss nan'."""
  r = {"final_step": 500, "num_steps": 500, "metrics": {}, "resumed_from_step": 500, "wall_time_sec": 5.4,
       "wall_time_complete": False, "workdir": "/w/p"}
  assert report.pretrain_line("MoCo v2", r) == ("- MoCo v2: 500/500 steps, final loss not recorded (results written "
                                                "by a run resumed at step 500), wall time ≥5.4 s (`/w/p`)")
  r |= {"metrics": {"loss": 3.25}, "wall_time_complete": True}
  assert report.pretrain_line("MoCo v2", r) == "- MoCo v2: 500/500 steps, final loss 3.2500, wall time 5.4 s (`/w/p`)"


def test_dvme_study_extra_encoders_and_arms():
  import pytest
  assert dvme_study.parse_extra_encoders("in=/w/r50, dino=/w/dino") == {"in": "/w/r50", "dino": "/w/dino"}
  for bad, msg in (("simclr=/x", "is taken"), ("dvme_all=/x", "is taken"), ("a=/x,a=/y", "is taken"),
                   ("nofolder", "name=<checkpoint folder>"), ("=/x", "name=<checkpoint folder>")):
    with pytest.raises(SystemExit, match=msg):
      dvme_study.parse_extra_encoders(bad)
  spec = {"simclr": "S", "moco_v2": "M", "random": "R", "in": "I"}
  assert dvme_study.plan_arms(spec, []) == [
      ("simclr", "simclr=S", False), ("moco_v2", "moco_v2=M", False), ("random", "random=R", False),
      ("concat", "simclr=S,moco_v2=M,random=R", False), ("dvme", "simclr=S,moco_v2=M,random=R", True)]
  arms = dvme_study.plan_arms(spec, ["in"])
  assert arms[:3] + arms[4:6] == dvme_study.plan_arms(spec, [])  # the three-encoder arms are unchanged
  assert arms[3] == ("in", "in=I", False)
  assert arms[6:] == [("concat_all", "simclr=S,moco_v2=M,random=R,in=I", False),
                      ("dvme_all", "simclr=S,moco_v2=M,random=R,in=I", True)]


def test_recorded_command_can_be_pasted_into_a_shell():
  import shlex
  argv = ["--scale=small", "--tasks=pneumoniamnist;lungseg=configs/lung_segmentation.py:small,size=32", "--runs=5"]
  line = common.command_line("benchmarks.transfer", argv)
  assert line == ("python -m benchmarks.transfer --scale=small "
                  "'--tasks=pneumoniamnist;lungseg=configs/lung_segmentation.py:small,size=32' --runs=5")
  assert shlex.split(line)[3:] == argv
