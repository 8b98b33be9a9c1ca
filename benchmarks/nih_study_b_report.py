"""NIH Study B's report (benchmarks/nih_study_b.py runs it): the four arms on the same test images,
paired by patient, what the data can and cannot show, and the subgroup rows."""
import os

import numpy as np
from PIL import Image

from benchmarks import nih_study_b as study  # the design: tasks, modes, arms, architecture (it imports no report)
from benchmarks import report_lib
from input_pipeline.sources import nih

ARM_LABELS = {"base": "start (SimCLR)", "micle": "MICLe", "simclr": "SimCLR", "moco_case": "MoCo v2 + case pairs"}
# Paired differences: (a, b) -> Δ a − b on the same test images.
PAIRS = (("micle", "simclr"), ("moco_case", "simclr"), ("micle", "base"), ("simclr", "base"), ("moco_case", "base"))
HEADLINE = {"binary": ("top1", "auc"), "multilabel": ("mean_auc",)}
SUBGROUP_COLUMNS = ("view", "sex")


def paired_by_patient(run_a: dict, run_b: dict, metric_names, num_replicates: int) -> dict:
  """metric -> paired bootstrap of a − b on the same test images, resampling PATIENTS, not
  images: a patient's follow-up images are not independent (the test split has a few patients
  with many images each). Only `metric_names` are bootstrapped (all 14 per-finding AUCs would be too)."""
  return report_lib.paired(run_a, run_b, num_replicates, metrics=metric_names, by_case=True)


def data_facts(folder: str) -> dict:
  """Counts over the whole folder, read from its metadata.csv and one image (nothing typed)."""
  t = nih.read_table(folder)
  _, sizes = np.unique(t["patient_id"].to_numpy(), return_counts=True)
  with Image.open(os.path.join(folder, t["image_file"].iloc[0])) as im:
    size = im.size
  multi = nih.multilabel_targets(t)
  return {"images": len(t), "patients": int(len(sizes)), "patients_2plus": int((sizes >= 2).sum()),
          "images_of_2plus": int(sizes[sizes >= 2].sum()), "largest_series": int(sizes.max()),
          "pixels": size, "no_finding": int((nih.binary_targets(t) == 0).sum()),
          "view": t["view_position"].value_counts().sort_index().to_dict(),
          "sex": t["patient_sex"].value_counts().sort_index().to_dict(),
          "findings": {n: int(v) for n, v in zip(nih.NIH_FINDINGS, multi.sum(axis=0))}}


def _counts(d: dict) -> str:
  return " / ".join(f"{k} {v}" for k, v in d.items())


def data_lines(m: dict, folder: str, runs: list) -> list:
  f, b = data_facts(folder), m["bags"]
  sp = b["splits"]
  lines = ["### What this data can and cannot show", "",
           f"- **Small**: {f['images']} images of {f['patients']} patients (`{folder}`), {f['patients_2plus']} "
           f"patients with 2+ images ({f['images_of_2plus']} images; the largest series {f['largest_series']}). "
           "The seeded patient-disjoint re-split gives " + ", ".join(
               f"{k} {v['patients']} patients / {v['images']} images ({v['patients_with_2plus_images']} with 2+)"
               for k, v in sp.items()) + f". MICLe draws pairs from at most {b['max_bag_size']} images per patient "
           f"(a seeded random subset of a larger series: {b['train_images_in_capped_bags']} of the "
           f"{sp['train']['images']} training images; largest training "
           f"series {b['train_largest_series']}).",
           f"- **Thumbnails**: {f['pixels'][0]} x {f['pixels'][1]} px as stored (downsampled by the source "
           "repository's author, method unknown: see the folder's PROVENANCE.md), read at "
           f"{m['settings']['image_size']} px here; findings that need fine detail (nodules, small masses, "
           "pneumothorax rims) may not be visible at this size. Azizi et al. (2021) pretrain at 224 px on "
           "hundreds of thousands of images: the magnitudes there cannot be reproduced on this set.",
           "- **Labels mined from radiology reports** by text processing (Wang et al., CVPR 2017: ChestX-ray14's "
           "labels are NLP-extracted, not read from the images), so some are wrong; here 'No Finding' "
           f"{f['no_finding']} / any finding {f['images'] - f['no_finding']} images; findings over all images: "
           + ", ".join(f"{k} {v}" for k, v in sorted(f["findings"].items(), key=lambda kv: -kv[1])) + ".",
           f"- Subgroup columns over all images: view {_counts(f['view'])}; sex {_counts(f['sex'])}.",
           f"- **Test set**: {sp['test']['patients']} patients / {sp['test']['images']} images; every interval "
           "below is wide, and "
           "at this size a difference between arms that the paired interval does not separate from 0 is "
           "no evidence either way. What the study can show: whether, on this pipeline and scale, continued "
           "pretraining with case pairs (MICLe, MoCo v2 + case pairs) moves the evaluations relative to "
           "continued SimCLR and to the start; it cannot show clinical performance or the paper's effect sizes."]
  multi = [r["results"] for r in runs if r["target"] == "multilabel"]
  if multi:
    r = multi[0]
    over, pos = r["mean_over_labels"], r["test_positives"]
    left = [n for n in pos if n not in over]
    lines.append(f"- **Multi-label mean AUC** is over the {len(over)} findings with at least "
                 f"{r['min_positives']} positive test images (`eval.min_positives`, a reading: an AUC from fewer "
                 "positives, often one patient's series, says little): " + ", ".join(f"{n} ({pos[n]})" for n in over)
                 + "; left out: " + (", ".join(f"{n} ({pos[n]})" for n in left) or "none") + ".")
  return lines + [""]


def pretrain_lines(m: dict) -> list:
  names = {"base": "SimCLR on the training patients' images (the start, arm 'start')",
           "micle": "continued with MICLe (SimCLR objective, two images of one patient)",
           "simclr": "continued with SimCLR (two views of one image)",
           "moco_case": "continued with MoCo v2 + case pairs (from the start's encoder, fresh head)"}
  lines = ["### Pretraining", ""]
  for r in m["runs"]:
    if r["role"] != "pretrain":
      continue
    res = report_lib.load_json(os.path.join(r["workdir"], "results.json"))
    cfg = report_lib.load_json(os.path.join(r["workdir"], "config.json"))
    line = report_lib.pretrain_line(names.get(r["arm"], r["arm"]), res)
    if "distinct_pairs" in res.get("metrics", {}):
      line += f", distinct_pairs {res['metrics']['distinct_pairs']:.3f}"
    line += (f"; {cfg['optim']['name'].upper()} base lr {cfg['optim']['base_lr']:g} ({cfg['optim']['lr_scaling']} "
             f"scaling) at batch {cfg['train']['batch_size']}, pairing '{cfg.get('pairing', 'views')}'")
    if "encoder_change" in r:
      line += f"; encoder weights moved by {100 * r['encoder_change']:.2f}% (relative L2 from the start)"
    lines.append(line)
  return lines + [""]


def result_tables(runs: list, reps: int) -> list:
  keyed = {(r["target"], r["mode"], r["fraction"], r["draw"], r["arm"]): r for r in runs}
  lines = []
  for target in study.TASKS:
    for mode in study.MODES:
      rows = sorted({k[2:4] for k in keyed if k[:2] == (target, mode)})
      if not rows:
        continue
      for metric in HEADLINE[target]:
        lines += [f"### {target} ({study.TASKS[target]}), {mode}: test {metric}", "",
                  "| patients share | draw | labelled images (patients) | "
                  + " | ".join(ARM_LABELS[a] for a in study.EVAL_ARMS) + " | "
                  + " | ".join(f"Δ {ARM_LABELS[a]} − {ARM_LABELS[b]}" for a, b in PAIRS) + " |",
                  "| --- | --- | --- | " + " | ".join(["---"] * (len(study.EVAL_ARMS) + len(PAIRS))) + " |"]
        for fraction, draw in rows:
          cell = {arm: keyed.get((target, mode, fraction, draw, arm)) for arm in study.EVAL_ARMS}
          any_run = next(r for r in cell.values() if r)
          values = [report_lib.fmt_ci(r["results"]["test"][metric]) if r else "missing" for r in cell.values()]
          diffs = [report_lib.fmt_diff(paired_by_patient(cell[a], cell[b], (metric,), reps)[metric])
                   if cell[a] and cell[b] else "n/a" for a, b in PAIRS]
          res = any_run["results"]
          lines.append(f"| {fraction:g} | {draw} | {res['num_train_images']} ({res['num_train_cases']}) | "
                       + " | ".join(values + diffs) + " |")
        lines.append("")
  return lines


def subgroup_lines(runs: list) -> list:
  full = [r for r in runs if r["fraction"] >= 1.0 and "test_subgroups" in r["results"]]
  if not full:
    return []
  lines = ["### Subgroups (100% of the training patients, test split)", "",
           "Each part scored on its own images (results.json `test_subgroups`; bootstrap over its images).", "",
           "| task | mode | metric | subgroup | images (patients) | "
           + " | ".join(ARM_LABELS[a] for a in study.EVAL_ARMS) + " |",
           "| --- | --- | --- | --- | --- | " + " | ".join(["---"] * len(study.EVAL_ARMS)) + " |"]
  keyed = {(r["target"], r["mode"], r["draw"], r["arm"]): r["results"] for r in full}
  for target, mode, draw in sorted({k[:3] for k in keyed}):
    if draw != 0:
      continue
    arms = {a: keyed.get((target, mode, draw, a)) for a in study.EVAL_ARMS}
    ref = next(r for r in arms.values() if r)["test_subgroups"]
    for metric in HEADLINE[target]:
      for column in SUBGROUP_COLUMNS:
        for value, part in sorted(ref.get(column, {}).items()):
          cells = [report_lib.fmt_ci(r["test_subgroups"][column][value][metric]) if r else "missing"
                   for r in arms.values()]
          lines.append(f"| {target} | {mode} | {metric} | {column} {value} | {part['num_images']} "
                       f"({part['num_cases']}) | " + " | ".join(cells) + " |")
  return lines + [""]


def section(m: dict, manifest_path: str, ctx: report_lib.Context) -> list:
  """The report's Markdown for this study's study.json: header, what the data can show, the
  pretraining runs, per task x mode x fraction x draw the four arms and the paired differences,
  and the subgroup rows at 100%. Every number is read from the result files. `ctx.out_dir` is
  unused (no plots: one or two fractions)."""
  s, reps = m["settings"], m["settings"]["num_replicates"]
  # header_lines' settings line is Study A's (28 px, one batch): replaced by this study's own.
  head = [x for x in report_lib.header_lines(dict(m, settings=dict(s, batch=s["pretrain_batch"])), manifest_path)
          if not x.startswith("- Settings:")]
  lines = [f"## Study B on NIH ChestX-ray14: MICLe vs SimCLR vs MoCo v2 + case pairs ({m['scale']})", ""] + head
  lines += [f"- Settings: ResNet-{study.DEPTH} ({study.STEM} stem) width {s['width']:g}, {s['image_size']} px, "
            f"{study.CHANNELS} channel; SimCLR pretraining {s['pretrain_steps']} steps at batch {s['pretrain_batch']}; "
            "continued pretraining "
            f"{s['continue_steps']} steps at batch {s['continue_batch']} per arm; evaluations {s['eval_steps']} steps "
            f"at batch {s['eval_batch']} (lower where fewer labelled images), last step evaluated; "
            f"{reps} bootstrap replicates", ""]
  runs = report_lib.finished_runs(m)
  folder = m["data"][0]["path"]
  lines += data_lines(m, folder, runs) + pretrain_lines(m)
  lines += ["### Results", "",
            "Arm values: test metric with its run's bootstrap 95% interval (over images). Δ: paired bootstrap of "
            f"the difference on the same test images, resampling patients ({reps} replicates; * = interval "
            "excludes 0). 'start': the SimCLR checkpoint every continued arm began from. Multi-label: mean AUC "
            "over the findings listed above.", ""]
  lines += result_tables(runs, reps) + subgroup_lines(runs)
  return lines
