"""benchmarks/nih_study_b.py: the smoke scale on the real NIH folder, and its report section
(benchmarks/nih_study_b_report.py)."""
import json
import os

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from benchmarks import common
from benchmarks import nih_study_b as study
from benchmarks import nih_study_b_report
from benchmarks import report
from benchmarks import report_lib
from input_pipeline.sources import nih


def _paired_by_patient(a_path, b_path, metric, keep, reps):
  """NumPy / sklearn re-implementation of the report's paired bootstrap: patients resampled with
  replacement (numpy default_rng(0), groups in sorted patient order), a − b per replicate, the
  2.5 / 97.5 percentiles of the replicates that are defined."""
  with np.load(a_path) as a, np.load(b_path) as b:
    ya, pa, cases = a["labels"], a["probs"], a["case_ids"].astype(str)
    order = {k: i for i, k in enumerate(b["image_ids"].tolist())}
    idx = np.array([order[k] for k in a["image_ids"].tolist()])
    pb = b["probs"][idx]

  def value(y, p):
    if metric == "top1":
      return float(np.mean(p.argmax(1) == y))
    if metric == "auc":  # binary: the mean of the two one-vs-rest AUCs, nan unless both classes
      return float(np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in (0, 1)])) if len(set(y)) == 2 else np.nan
    aucs = [skm.roc_auc_score(y[:, j], p[:, j]) if len(set(y[:, j])) == 2 else np.nan for j in keep]
    return float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else np.nan

  rng = np.random.default_rng(0)
  uniq, inv = np.unique(cases, return_inverse=True)
  members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
  d = []
  for _ in range(reps):
    i = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
    d.append(value(ya[i], pa[i]) - value(ya[i], pb[i]))
  d = np.asarray(d)
  lo, hi = np.percentile(d[~np.isnan(d)], [2.5, 97.5])
  diff = value(ya, pa) - value(ya, pb)
  return f"{diff:+.4f} [{lo:+.4f}, {hi:+.4f}]" + (" *" if lo > 0 or hi < 0 else "")


def test_smoke_study_and_its_report_on_the_real_folder(shared_data, tmp_path):
  wd = str(tmp_path / "wd")
  assert study.main(["--scale=smoke", f"--workdir={wd}", f"--data_dir={shared_data}"]) == 0
  path = os.path.join(wd, "smoke", study.STUDY, common.MANIFEST)
  m = json.load(open(path))
  s = study.SCALES["smoke"]
  evals = [r for r in m["runs"] if r["role"] == "eval"]
  pre = {r["arm"]: r for r in m["runs"] if r["role"] == "pretrain"}
  # Every path once: 4 pretrainings, both tasks, both modes, all four arms in each evaluated cell.
  assert sorted(pre) == sorted(study.EVAL_ARMS) and "missing" not in m
  assert {(r["target"], r["mode"]) for r in evals} == set(s["cells"]) == {("binary", "linear_eval"),
                                                                         ("multilabel", "finetune")}
  assert len(evals) == len(s["cells"]) * len(study.EVAL_ARMS)
  for r in m["runs"]:
    assert common.is_done(common.read_results(r["workdir"])), r
  assert all(0 < pre[a]["encoder_change"] < 1 for a in study.CONTINUED)
  assert json.load(open(os.path.join(pre["moco_case"]["workdir"], "config.json")))["pairing"] == "case"

  out = tmp_path / "report"
  assert report.main(["--workdir", wd, "--out", str(out)]) == 0
  md = (out / "report.md").read_text()
  assert "## Study B on NIH ChestX-ray14" in md
  # The data facts, against the folder's metadata.csv read here with pandas.
  t = pd.read_csv(shared_data / study.FOLDER / "metadata.csv", dtype=str, keep_default_na=False)
  sizes = t["patient_id"].value_counts()
  assert (len(t), len(sizes), int((sizes >= 2).sum())) == (1000, 264, 136)
  assert (f"{len(t)} images of {len(sizes)} patients (`{shared_data / study.FOLDER}`), {int((sizes >= 2).sum())} "
          f"patients with 2+ images ({int(sizes[sizes >= 2].sum())} images; the largest series {sizes.max()})") in md
  assert f"view AP {(t['view_position'] == 'AP').sum()} / PA {(t['view_position'] == 'PA').sum()}" in md
  assert f"'No Finding' {(t['finding_labels_v2020'] == 'No Finding').sum()} /" in md
  # Pretraining lines: the continued arms' encoder change as stored in the manifest.
  for arm in study.CONTINUED:
    assert f"encoder weights moved by {100 * pre[arm]['encoder_change']:.2f}%" in md
  # The multi-label mean is over the findings with enough positives, named from results.json.
  ml = next(r for r in evals if r["target"] == "multilabel" and r["arm"] == "micle")
  res_ml = json.load(open(os.path.join(ml["workdir"], "results.json")))
  over = res_ml["mean_over_labels"]
  assert 0 < len(over) < 14 and all(res_ml["test_positives"][n] >= study.MIN_POSITIVES for n in over)
  assert f"over the {len(over)} findings with at least {study.MIN_POSITIVES} positive test images" in md
  # Table rows: the arm cells are results.json's intervals, the Δ cells a paired bootstrap re-computed here.
  reps = s["num_replicates"]
  by = {(r["target"], r["arm"]): r for r in evals}
  for target, metric in (("binary", "top1"), ("binary", "auc"), ("multilabel", "mean_auc")):
    res = {a: json.load(open(os.path.join(by[(target, a)]["workdir"], "results.json"))) for a in study.EVAL_ARMS}
    pred = lambda a: os.path.join(by[(target, a)]["workdir"], "predictions_test.npz")  # noqa: E731
    keep = [nih.NIH_FINDINGS.index(n) for n in over]
    cells = [report_lib.fmt_ci(res[a]["test"][metric]) for a in study.EVAL_ARMS]
    cells += [_paired_by_patient(pred(a), pred(b), metric, keep, reps) for a, b in nih_study_b_report.PAIRS]
    r0 = res["base"]
    row = (f"| 1 | 0 | {r0['num_train_images']} ({r0['num_train_cases']}) | " + " | ".join(cells) + " |")
    assert row in md, (row, md)
  # Subgroup rows at 100%: view and sex parts of every arm, from results.json test_subgroups.
  res = {a: json.load(open(os.path.join(by[("multilabel", a)]["workdir"], "results.json"))) for a in study.EVAL_ARMS}
  for column, parts in (("view", ("AP", "PA")), ("sex", ("F", "M"))):
    for v in parts:
      p = res["base"]["test_subgroups"][column][v]
      row = (f"| multilabel | finetune | mean_auc | {column} {v} | {p['num_images']} ({p['num_cases']}) | "
             + " | ".join(report_lib.fmt_ci(res[a]["test_subgroups"][column][v]["mean_auc"]) for a in study.EVAL_ARMS))
      assert row in md
  assert sum(res["base"]["test_subgroups"]["view"][v]["num_images"] for v in ("AP", "PA")) == 200

  # An unfinished run is listed as missing and shown as such, not a crash.
  gone = next(r for r in m["runs"] if r["role"] == "eval" and r["arm"] == "moco_case" and r["target"] == "binary")
  m["runs"].remove(gone)
  m["missing"] = [gone["workdir"]]
  common.write_manifest(path, m)
  assert report.main(["--workdir", wd, "--out", str(out)]) == 0
  md = (out / "report.md").read_text()
  assert f"`{os.path.basename(gone['workdir'])}`" in md and "| missing |" in md


def test_every_config_of_the_small_and_full_scales_builds(shared_data, tmp_path):
  """small / full are not run here: --only_finished builds every run's config and runs nothing."""
  for scale in ("small", "full"):
    s = study.SCALES[scale]
    assert study.main([f"--scale={scale}", "--only_finished", f"--workdir={tmp_path}",
                       f"--data_dir={shared_data}"]) == 0
    m = json.load(open(tmp_path / scale / study.STUDY / common.MANIFEST))
    evals = len(study.TASKS) * len(study.MODES) * len(study.EVAL_ARMS) * (s["draws"] * (len(s["fractions"]) - 1) + 1)
    assert m["runs"] == [] and len(m["missing"]) == 1 + len(study.CONTINUED) + evals
