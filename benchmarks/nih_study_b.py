"""Study B on NIH ChestX-ray14: MICLe vs SimCLR (and MoCo v2 with case pairs) on 264 patients.

  python -m benchmarks.nih_study_b --scale=smoke --workdir=workdirs/benchmarks

Data: ../shared/data/nih_cxr14_kcr1000_64px (data.source='nih'): 1,000 thumbnails of 264
patients, 136 of them with 2+ images; the seeded patient-disjoint re-split (data.nih_split_seed 0,
60 / 20 / 20% of the images) gives 165 / 45 / 54 train / val / test patients.
1. SimCLR pretraining on the training patients' images (labels unused): the start ('base').
2. From that checkpoint, the same number of further steps on the same images with
   'micle' (SimCLR objective, pairing='case': two images of one patient, at most
   data.max_bag_size = 6 of a patient's images considered, Azizi et al. 2021 Sec. 4.2 "up to 6
   images per patient case"), 'simclr' (pairing='views') and 'moco_case' (MoCo v2 objective,
   pairing='case'; its own optimiser, configs/moco_v2.py:local's, as in Study A; its MLP head has
   no batch norm, unlike SimCLR's, so it starts from the SimCLR encoder alone, with a fresh head,
   through an encoder-only copy of the start, `encoder_only`). Each continued
   encoder's distance from the start (relative L2 over the encoder weights) is recorded.
3. Linear evaluation and fine-tuning of the four encoders on the binary target (No Finding vs
   any finding; softmax, top1 / AUC) and the 14-finding multi-label target (sigmoid; mean AUC
   over the findings with at least MIN_POSITIVES positive test images, listed in each run's
   results.json `mean_over_labels`), on 10% (several draws, data.nih_train_patients) and 100% of
   the training patients; metrics by view (PA / AP) and sex in results.json `test_subgroups`.
The report (benchmarks/report.py -> `section` below) pairs the arms on the same test images
(paired bootstrap resampling patients).
Finished runs are skipped on a re-run. Writes <workdir>/<scale>/nih_study_b/study.json.

Scales (the architecture is ResNet-18 with the small stem, 1 grey channel, at every scale):
- smoke: a CI plumbing check, numbers meaningless: 4 pretrainings and 8 evaluations of 2 steps at
  width 0.125, only 100% of the patients and two (task, mode) cells (binary linear evaluation,
  multi-label fine-tuning) with all four arms, the NumPy host pipeline
  (tests/benchmarks/test_nih_study_b.py runs it and builds the report).
- small: 32 px (the 64 px thumbnails halved: a quarter of the 64 px compute, close to the 28 px of
  Study A), width 0.25, 400 SimCLR steps at batch 64 (about 43 epochs of the 592 training images),
  300 continued steps at batch 32 (58 epochs over the 165 training patients for the case arms),
  200-step evaluations, 2 draws at 10%: 4 pretraining and 48 evaluation runs, estimated 3-4 hours
  on a 2-core CPU from Study A/B's small-scale timings (not yet measured on this study).
- full: 64 px (native), width 1, for a GPU.
"""
import argparse
import os
import time

import numpy as np

from benchmarks import common
from benchmarks import label_efficiency as study_a
from benchmarks import micle_vs_simclr as covid_b

MODULE = "benchmarks.nih_study_b"
STUDY = "nih_study_b"
FOLDER = "nih_cxr14_kcr1000_64px"
# Continued arms: (method, pairing).
CONTINUED = {"micle": ("simclr", "case"), "simclr": ("simclr", "views"), "moco_case": ("moco_v2", "case")}
EVAL_ARMS = ("base",) + tuple(CONTINUED)
TASKS = {"binary": "multiclass", "multilabel": "multilabel"}  # data.nih_target -> eval.task
MODES = ("linear_eval", "finetune")
# Multi-label mean AUC: findings with at least this many positive test images (a reading; an AUC
# from fewer positives, often one or two patients' series, has an interval too wide to read).
MIN_POSITIVES = 10
DEPTH, STEM, CHANNELS = 18, "small", 1

SCALES = {
    # smoke: every code path once (4 pretrainings; both tasks, both modes, all four arms, 100% so the
    # subgroup rows exist) in 8 evaluations: two (task, mode) cells, not four. Host pipeline 'numpy'
    # (the same batches as tf.data, input_pipeline/backends.py): tracing the tf.data maps took about
    # a fifth of a 2-step evaluation run (cProfile); the other scales keep data.pipeline='auto'.
    "smoke": dict(image_size=32, width=0.125, pretrain_batch=16, pretrain_steps=2, continue_batch=16,
                  continue_steps=2, eval_batch=16, eval_steps=2, draws=1, fractions=(1.0,), num_replicates=10,
                  cells=(("binary", "linear_eval"), ("multilabel", "finetune")), pipeline="numpy"),
    "small": dict(image_size=32, width=0.25, pretrain_batch=64, pretrain_steps=400, continue_batch=32,
                  continue_steps=300, eval_batch=64, eval_steps=200, draws=2, fractions=(0.1, 1.0),
                  num_replicates=1000),
    "full": dict(image_size=64, width=1.0, pretrain_batch=256, pretrain_steps=5000, continue_batch=64,
                 continue_steps=2000, eval_batch=128, eval_steps=1000, draws=5, fractions=(0.1, 1.0),
                 num_replicates=1000),
}


def _on_nih(c, nih_dir: str, s: dict, seed: int = 0):
  """The scale's data, model and seed on a config (labels unused by pretraining)."""
  c.seed = seed
  c.data.source, c.data.path = "nih", nih_dir
  c.data.image_size, c.data.channels = s["image_size"], CHANNELS
  c.data.pipeline = s.get("pipeline", c.data.pipeline)
  c.data.max_bag_size = 6  # Azizi et al. 2021 Sec. 4.2 (the settings default; covid_cxr_micle sets 8)
  c.model.depth, c.model.width, c.model.stem, c.model.dtype = DEPTH, s["width"], STEM, "float32"
  c.model.head_layers, c.model.head_dim = common.HEAD_LAYERS, common.HEAD_DIM
  c.probe.enabled = False
  return c


def pretrain_config(nih_dir: str, s: dict, seed: int = 0):
  """configs/chexpert_simclr.py:local (its augmentation and LARS 0.075 x sqrt(batch)) on NIH."""
  from configs import chexpert_simclr
  c = chexpert_simclr.get_config("local")
  with c.unlocked():
    _on_nih(c, nih_dir, s, seed)
    c.train.batch_size = s["pretrain_batch"]
    common.set_steps(c, s["pretrain_steps"])
  return c


def continue_config(nih_dir: str, init_checkpoint: str, arm: str, s: dict, seed: int = 0):
  """An arm's continued pretraining from `init_checkpoint`, the same steps and batch for every arm.

  MICLe and SimCLR: configs/covid_cxr_micle.py (the CheXpert pretraining augmentation) with the
  step size of the run they continue (see benchmarks/micle_vs_simclr.continue_config). MoCo v2:
  configs/moco_v2.py:local's objective and optimiser (SGD 0.03 x batch/256, temperature 0.2,
  shuffled BN), queue sized as in Study A, from the same encoder."""
  method, pairing = CONTINUED[arm]
  if method == "simclr":
    from configs import covid_cxr_micle
    c = covid_cxr_micle.get_config("")
  else:
    from configs import moco_v2
    c = moco_v2.get_config("local")
  with c.unlocked():
    _on_nih(c, nih_dir, s, seed)
    c.method, c.pairing = method, pairing
    c.train.batch_size = s["continue_batch"]
    common.set_steps(c, s["continue_steps"])
    c.train.init_checkpoint = init_checkpoint
    if method == "simclr":
      pre = pretrain_config(nih_dir, s)
      c.optim.base_lr, c.optim.lr_scaling = pre.optim.base_lr, pre.optim.lr_scaling
    else:
      from configs import moco_v2
      from input_pipeline import sources
      n = len(sources.load_source(c.data, c.data.train_split))
      c.moco.queue_size = study_a.moco_queue(n, c.train.batch_size, moco_v2.LOCAL_QUEUE)
      c.moco.bn_groups = min(c.moco.bn_groups, max(1, c.train.batch_size // 2))
  return c


def encoder_only(start_dir: str, out_dir: str, c) -> str:
  """`out_dir`: the encoder of `start_dir`'s checkpoint without its projection head (written once),
  for an arm whose head differs (MoCo v2's). Returns out_dir."""
  from medssl_jax import weights
  from medssl_jax.training import checkpoint as ckpt_lib
  if os.path.isdir(os.path.join(out_dir, "checkpoints")) and os.listdir(os.path.join(out_dir, "checkpoints")):
    return out_dir
  params, batch_stats, step = ckpt_lib.restore_weights(start_dir)
  settings = {k: c.model[k] for k in ("arch", "depth", "width", "stem", "head_layers", "head_dim")}
  weights.write_checkpoint(out_dir, {"encoder": params["encoder"]}, {"encoder": batch_stats["encoder"]}, settings,
                           {"encoder_of": os.path.abspath(start_dir), "step": int(step)})
  return out_dir


def eval_config(nih_dir: str, s: dict, *, target: str, mode: str, checkpoint: str, fraction: float, draw: int,
                seed: int = 0):
  """configs/chexpert_finetune.py:local's evaluation on an NIH target and share of training patients."""
  from configs import chexpert_finetune
  c = chexpert_finetune.get_config("local")
  with c.unlocked():
    _on_nih(c, nih_dir, s, seed)
    c.mode = mode
    c.data.nih_target = target
    c.data.nih_train_patients, c.data.nih_train_draw = float(fraction), int(draw)
    c.eval.task = TASKS[target]
    c.eval.min_positives = MIN_POSITIVES if target == "multilabel" else 0
    c.eval.init, c.eval.checkpoint = "pretrained", checkpoint
    c.eval.feature_norm = common.LINEAR_FEATURE_NORM if mode == "linear_eval" else "none"
    c.eval.label_fraction, c.eval.fraction_seed = 1.0, 0  # the share is taken by the source (per patient)
    c.eval.num_replicates = s["num_replicates"]
    c.eval.val_split = ""  # the last step is evaluated: no model selection
    common.set_steps(c, s["eval_steps"])
    c.train.batch_size, labelled = common.labelled_batch(c.data, 1.0, 0, s["eval_batch"])
    c.eval.repeat_to_fill_batch = c.train.batch_size > labelled
  return c


def cells(s: dict) -> list:
  """The (task, mode) pairs a scale evaluates: its 'cells', or every task x mode."""
  return [tuple(x) for x in s.get("cells", [(t, m) for t in TASKS for m in MODES])]


def draws_for(fraction: float, s: dict) -> range:
  return range(1 if fraction >= 1.0 else s["draws"])


def run_name(target, mode, arm, fraction, draw) -> str:
  return f"{target}_{mode}_{arm}_f{fraction:g}_d{draw}"


def bag_counts(c) -> dict:
  """Patients and images of each split, multi-image patients, and what the MICLe cap leaves."""
  from input_pipeline import indexing, sources
  out = {"max_bag_size": int(c.data.max_bag_size), "splits": {}}
  for split in ("train", "val", "test"):
    src = sources.load_source(c.data, split)
    _, sizes = np.unique(src.case_ids, return_counts=True)
    out["splits"][split] = {"patients": int(len(sizes)), "images": int(sizes.sum()),
                            "patients_with_2plus_images": int((sizes >= 2).sum())}
    if split == "train":
      capped = indexing.bag_table(src, int(c.data.max_bag_size))[2]
      out["train_images_in_capped_bags"] = int(capped.sum())
      out["train_largest_series"] = int(sizes.max())
  out["patients_all_splits"] = sum(v["patients"] for v in out["splits"].values())
  out["images_all_splits"] = sum(v["images"] for v in out["splits"].values())
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  common.add_common_flags(p)
  a = p.parse_args(argv)
  s = dict(SCALES[a.scale])
  t0, run = time.time(), not a.only_finished
  root = common.study_dir(a.workdir, a.scale, STUDY)
  nih = os.path.abspath(os.path.join(a.data_dir, FOLDER))
  manifest = {"study": STUDY, "scale": a.scale, "command": common.command_line(MODULE, argv),
              "machine": common.machine_record(), "settings": s, "runs": [], "min_positives": MIN_POSITIVES,
              "data": [common.data_record(nih)]}
  base = os.path.join(root, "pretrain_simclr_nih")
  c = pretrain_config(nih, s)
  manifest["bags"] = bag_counts(c)
  print(f"[{STUDY}] SimCLR pretraining on the NIH training patients' images")
  done = common.run_once(c, base, run=run)
  common.add_run(manifest, {"role": "pretrain", "arm": "base", "workdir": os.path.abspath(base)}, done)
  arm_dirs = {"base": base}
  for arm in CONTINUED:
    arm_dirs[arm] = os.path.join(root, f"continue_{arm}_nih")
    print(f"[{STUDY}] continued pretraining: {arm} (method, pairing = {CONTINUED[arm]})")
    start = os.path.abspath(base)
    if CONTINUED[arm][0] == "moco_v2":  # the start's encoder alone (MoCo's head differs)
      start = os.path.abspath(os.path.join(root, "start_encoder_only"))
      if run:
        encoder_only(base, start, c)
    done = common.run_once(continue_config(nih, start, arm, s), arm_dirs[arm], run=run)
    entry = {"role": "pretrain", "arm": arm, "workdir": os.path.abspath(arm_dirs[arm]), "init_checkpoint": start}
    if common.is_done(done):
      entry["encoder_change"] = covid_b.encoder_change(base, arm_dirs[arm])
    common.add_run(manifest, entry, done)
  for target, mode in cells(s):
    for fraction in s["fractions"]:
      for draw in draws_for(fraction, s):
        for arm in EVAL_ARMS:
          wd = os.path.join(root, run_name(target, mode, arm, fraction, draw))
          print(f"[{STUDY}] {target} {mode} of {arm}, {fraction:g} of the training patients, draw {draw}")
          c = eval_config(nih, s, target=target, mode=mode, checkpoint=os.path.abspath(arm_dirs[arm]),
                          fraction=fraction, draw=draw)
          done = common.run_once(c, wd, run=run)
          common.add_run(manifest, {"role": "eval", "arm": arm, "target": target, "mode": mode,
                                    "fraction": fraction, "draw": draw, "batch": c.train.batch_size,
                                    "pretrain": os.path.abspath(arm_dirs[arm]), "workdir": os.path.abspath(wd)},
                         done)
  return common.finish_study(root, manifest, t0, STUDY)


# ---- the report section (benchmarks/report.py dispatches study 'nih_study_b' here) ----
ARM_LABELS = {"base": "start (SimCLR)", "micle": "MICLe", "simclr": "SimCLR", "moco_case": "MoCo v2 + case pairs"}
# Paired differences: (a, b) -> Δ a − b on the same test images.
PAIRS = (("micle", "simclr"), ("moco_case", "simclr"), ("micle", "base"), ("simclr", "base"), ("moco_case", "base"))
HEADLINE = {"binary": ("top1", "auc"), "multilabel": ("mean_auc",)}
SUBGROUP_COLUMNS = ("view", "sex")


def paired_by_patient(run_a: dict, run_b: dict, metric_names, num_replicates: int) -> dict:
  """metric -> paired bootstrap of a − b on the same test images, resampling PATIENTS, not
  images: a patient's follow-up images are not independent (the test split has a few patients
  with many images each). Only `metric_names` are bootstrapped (all 14 per-finding AUCs would be too)."""
  from benchmarks import report
  return report.paired(run_a, run_b, num_replicates, metrics=metric_names, by_case=True)


def data_facts(folder: str) -> dict:
  """Counts over the whole folder, read from its metadata.csv and one image (nothing typed)."""
  from PIL import Image
  from input_pipeline.sources import nih
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
           f"(each patient's first {b['max_bag_size']}: {b['train_images_in_capped_bags']} of the "
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
  from benchmarks import report
  names = {"base": "SimCLR on the training patients' images (the start, arm 'start')",
           "micle": "continued with MICLe (SimCLR objective, two images of one patient)",
           "simclr": "continued with SimCLR (two views of one image)",
           "moco_case": "continued with MoCo v2 + case pairs (from the start's encoder, fresh head)"}
  lines = ["### Pretraining", ""]
  for r in m["runs"]:
    if r["role"] != "pretrain":
      continue
    res = report.load_json(os.path.join(r["workdir"], "results.json"))
    cfg = report.load_json(os.path.join(r["workdir"], "config.json"))
    line = report.pretrain_line(names.get(r["arm"], r["arm"]), res)
    if "distinct_pairs" in res.get("metrics", {}):
      line += f", distinct_pairs {res['metrics']['distinct_pairs']:.3f}"
    line += (f"; {cfg['optim']['name'].upper()} base lr {cfg['optim']['base_lr']:g} ({cfg['optim']['lr_scaling']} "
             f"scaling) at batch {cfg['train']['batch_size']}, pairing '{cfg.get('pairing', 'views')}'")
    if "encoder_change" in r:
      line += f"; encoder weights moved by {100 * r['encoder_change']:.2f}% (relative L2 from the start)"
    lines.append(line)
  return lines + [""]


def result_tables(runs: list, reps: int) -> list:
  from benchmarks import report
  keyed = {(r["target"], r["mode"], r["fraction"], r["draw"], r["arm"]): r for r in runs}
  lines = []
  for target in TASKS:
    for mode in MODES:
      rows = sorted({k[2:4] for k in keyed if k[:2] == (target, mode)})
      if not rows:
        continue
      for metric in HEADLINE[target]:
        lines += [f"### {target} ({TASKS[target]}), {mode}: test {metric}", "",
                  "| patients share | draw | labelled images (patients) | " + " | ".join(ARM_LABELS[a] for a in EVAL_ARMS)
                  + " | " + " | ".join(f"Δ {ARM_LABELS[a]} − {ARM_LABELS[b]}" for a, b in PAIRS) + " |",
                  "| --- | --- | --- | " + " | ".join(["---"] * (len(EVAL_ARMS) + len(PAIRS))) + " |"]
        for fraction, draw in rows:
          cell = {arm: keyed.get((target, mode, fraction, draw, arm)) for arm in EVAL_ARMS}
          any_run = next(r for r in cell.values() if r)
          values = [report.fmt_ci(r["results"]["test"][metric]) if r else "missing" for r in cell.values()]
          diffs = [report.fmt_diff(paired_by_patient(cell[a], cell[b], (metric,), reps)[metric])
                   if cell[a] and cell[b] else "n/a" for a, b in PAIRS]
          res = any_run["results"]
          lines.append(f"| {fraction:g} | {draw} | {res['num_train_images']} ({res['num_train_cases']}) | "
                       + " | ".join(values + diffs) + " |")
        lines.append("")
  return lines


def subgroup_lines(runs: list) -> list:
  from benchmarks import report
  full = [r for r in runs if r["fraction"] >= 1.0 and "test_subgroups" in r["results"]]
  if not full:
    return []
  lines = ["### Subgroups (100% of the training patients, test split)", "",
           "Each part scored on its own images (results.json `test_subgroups`; bootstrap over its images).", "",
           "| task | mode | metric | subgroup | images (patients) | " + " | ".join(ARM_LABELS[a] for a in EVAL_ARMS) + " |",
           "| --- | --- | --- | --- | --- | " + " | ".join(["---"] * len(EVAL_ARMS)) + " |"]
  keyed = {(r["target"], r["mode"], r["draw"], r["arm"]): r["results"] for r in full}
  for target, mode, draw in sorted({k[:3] for k in keyed}):
    if draw != 0:
      continue
    arms = {a: keyed.get((target, mode, draw, a)) for a in EVAL_ARMS}
    ref = next(r for r in arms.values() if r)["test_subgroups"]
    for metric in HEADLINE[target]:
      for column in SUBGROUP_COLUMNS:
        for value, part in sorted(ref.get(column, {}).items()):
          cells = [report.fmt_ci(r["test_subgroups"][column][value][metric]) if r else "missing" for r in arms.values()]
          lines.append(f"| {target} | {mode} | {metric} | {column} {value} | {part['num_images']} "
                       f"({part['num_cases']}) | " + " | ".join(cells) + " |")
  return lines + [""]


def section(m: dict, manifest_path: str, out_dir: str = "") -> list:
  """The report's Markdown for this study's study.json: header, what the data can show, the
  pretraining runs, per task x mode x fraction x draw the four arms and the paired differences,
  and the subgroup rows at 100%. Every number is read from the result files. `out_dir` is
  unused (no plots: one or two fractions)."""
  from benchmarks import report
  s, reps = m["settings"], m["settings"]["num_replicates"]
  # header_lines' settings line is Study A's (28 px, one batch): replaced by this study's own.
  head = [x for x in report.header_lines(dict(m, settings=dict(s, batch=s["pretrain_batch"])), manifest_path)
          if not x.startswith("- Settings:")]
  lines = [f"## Study B on NIH ChestX-ray14: MICLe vs SimCLR vs MoCo v2 + case pairs ({m['scale']})", ""] + head
  lines += [f"- Settings: ResNet-{DEPTH} ({STEM} stem) width {s['width']:g}, {s['image_size']} px, {CHANNELS} channel; "
            f"SimCLR pretraining {s['pretrain_steps']} steps at batch {s['pretrain_batch']}; continued pretraining "
            f"{s['continue_steps']} steps at batch {s['continue_batch']} per arm; evaluations {s['eval_steps']} steps "
            f"at batch {s['eval_batch']} (lower where fewer labelled images), last step evaluated; "
            f"{reps} bootstrap replicates", ""]
  runs = report.finished_runs(m)
  folder = m["data"][0]["path"]
  lines += data_lines(m, folder, runs) + pretrain_lines(m)
  lines += ["### Results", "",
            "Arm values: test metric with its run's bootstrap 95% interval (over images). Δ: paired bootstrap of "
            f"the difference on the same test images, resampling patients ({reps} replicates; * = interval "
            "excludes 0). 'start': the SimCLR checkpoint every continued arm began from. Multi-label: mean AUC "
            "over the findings listed above.", ""]
  lines += result_tables(runs, reps) + subgroup_lines(runs)
  return lines


if __name__ == "__main__":
  from medssl_jax import errors
  raise SystemExit(errors.guard(main)())  # a UserError: one line `error: ...`, exit 2
