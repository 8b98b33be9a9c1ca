"""benchmarks/: smoke versions of Studies A, B and C on real data, one after the other (B and C start
from A's runs), and the combined report over them."""
import json
import os

from benchmarks import common
from benchmarks import dvme_study
from benchmarks import label_efficiency as study_a
from benchmarks import micle_vs_simclr as study_b
from benchmarks import report


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
  # Study C on Study A's pretraining runs (skipped there: done): features cached once, per regime
  # (20 images, Full) on BreastMNIST the linear evaluation of each encoder (the paper's baseline),
  # the MLP head on each, concat and DVME.
  # An extra encoder a user points at (here Study A's SimCLR folder again, under another name):
  # benchmarked alone and fused with the others in concat_all / dvme_all.
  extra = os.path.abspath(common.pretrain_dir(wd, "smoke", "breastmnist"))
  assert dvme_study.main(args + ["--workdir", wd, f"--encoders=again={extra}"]) == 0
  c = json.load(open(os.path.join(wd, "smoke", "dvme", "study.json")))
  heads = [r for r in c["runs"] if r["role"] == "eval"]
  assert sorted({r["arm"] for r in heads}) == [
      "again_mlp", "concat", "concat_all", "dvme", "dvme_all", "linear_again", "linear_moco_v2", "linear_random",
      "linear_simclr", "moco_v2_mlp", "random_mlp", "simclr_mlp"] and len(heads) == 24
  lin = [r for r in heads if r["arm"] == "linear_simclr" and r["train_size"] == 20][0]
  lin_res = common.read_results(lin["workdir"])
  assert lin_res["mode"] == "linear_eval" and lin_res["num_train_images"] == 20 and lin_res["fold"] == 0
  assert lin_res["checkpoint"] == extra  # Study A's SimCLR run (smoke has no validation split: the fixed length)
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
  assert md.index("| linear_simclr |") < md.index("| dvme |") < md.index("| simclr_mlp |")
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
