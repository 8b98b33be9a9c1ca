"""Report (Markdown + PNG plots) built only from the result files that the studies wrote.

  python -m benchmarks.report --workdir=workdirs/benchmarks --out=benchmarks/results

Reads every <workdir>/<scale>/<study>/study.json, the results.json of the runs it lists and
their predictions_test.npz (paired bootstrap differences via medssl_jax.evaluation.compare),
and the published MedMNIST v2 baselines from medmnist_v2_benchmark.md. No number is typed here.
"""
import argparse
import glob
import json
import os
import re
import time

from benchmarks import common
from medssl_jax.evaluation import compare
from medssl_jax.evaluation import label_efficiency as le

MODULE = "benchmarks.report"
METRICS = ("top1", "auc")
NAMES = {"pneumoniamnist": "PneumoniaMNIST", "breastmnist": "BreastMNIST"}
BASELINE = "ResNet-18 (28)"
ARM_NAMES = {"simclr": "SimCLR", "moco_v2": "MoCo v2", "random": "random"}


def arm_of(run: dict) -> str:
  """A Study A evaluation run's arm; manifests written before the MoCo arm have only 'init'."""
  return run.get("arm") or ("simclr" if run["init"] == "pretrained" else "random")


def pretrain_method(run: dict) -> str:
  return run.get("method", "simclr")


def load_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def fmt_ci(m: dict) -> str:
  return f"{m['value']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"


def fmt_diff(d: dict) -> str:
  mark = " *" if d["excludes_zero"] else ""
  return f"{d['difference']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]{mark}"


def fmt_wall(r: dict) -> str:
  """A run's wall time; '≥' when part of it was not recorded (a run resumed after being killed
  before it wrote its results: see medssl_jax.training.workdir.wall_time)."""
  return ("" if r.get("wall_time_complete", True) else "≥") + f"{r['wall_time_sec']:.1f}"


def paired(run_a: dict, run_b: dict, num_replicates: int, metrics=METRICS, by_case: bool = False) -> dict:
  """Paired bootstrap differences (a - b) of the metrics the tables print (only those: each
  replicate of the others, e.g. AUPRC and kappa, would cost as much and be thrown away);
  `by_case` resamples cases (patients) instead of images."""
  a = compare.load_predictions(os.path.join(run_a["workdir"], "predictions_test.npz"))
  b = compare.load_predictions(os.path.join(run_b["workdir"], "predictions_test.npz"))
  return compare.compare(a, b, num_replicates=num_replicates, seed=0, metrics=tuple(metrics),
                         groups=a["case_ids"] if by_case else None)


def parse_baselines(path: str, method: str = BASELINE) -> dict:
  """{dataset: {"AUC": x, "ACC": y}} from the long-format table of medmnist_v2_benchmark.md."""
  out, header = {}, None
  with open(path) as f:
    for line in f:
      cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
      if not cells:
        header = None
        continue
      if cells[:2] == ["dataset", "method"]:
        header = cells
      elif header and not re.fullmatch(r"-+", cells[0]) and len(cells) == len(header):
        row = dict(zip(header, cells))
        if row["method"] == method:
          out[row["dataset"]] = {k: float(row[k]) for k in ("AUC", "ACC")}
  return out


def time_line(m: dict) -> str:
  """The study's compute: its runs' own wall times summed (results.json `wall_time_sec` of every run
  in the manifest that has one, however many invocations ran them), and this invocation's."""
  walls = [load_json(p) for p in (os.path.join(r["workdir"], "results.json") for r in m["runs"]) if os.path.isfile(p)]
  walls = [r for r in walls if "wall_time_sec" in r]
  total = sum(float(r["wall_time_sec"]) for r in walls)
  partial = "≥" if any(not r.get("wall_time_complete", True) for r in walls) else ""
  return (f"- Run time: {partial}{total:.1f} s, the sum of the {len(walls)} runs' own wall times (results.json); "
          f"the last invocation of the command took {m['wall_time_sec']:.1f} s (finished runs are skipped, not re-timed)")


def header_lines(m: dict, manifest_path: str) -> list:
  mach = m["machine"]
  lines = [f"- Command: `{m['command']}` (scale `{m['scale']}`), manifest `{manifest_path}`",
           f"- Machine: {mach['platform']}, {mach['cpu_cores']} CPU cores, Python {mach['python']}, "
           f"JAX {mach['jax']}, {mach['device_count']} x {mach['backend']} device ({mach['device_kind']}), "
           f"host pipeline {mach.get('host_pipeline', 'tf')}",
           time_line(m),
           "- Data:"]
  for d in m["data"]:
    extra = f", {d['files']} files, md5 over sorted (path, md5) lines" if d["kind"] == "folder" else ""
    lines.append(f"  - `{d['path']}`: {d['bytes']} bytes{extra}, md5 `{d['md5']}`")
  if m.get("missing"):
    lines.append(f"- **Not finished** when this report was made ({len(m['missing'])} runs, left out of the tables "
                 "and plots): " + ", ".join(f"`{os.path.basename(w)}`" for w in m["missing"]))
  s = m["settings"]
  lines.append(f"- Settings: ResNet-{common.DEPTH} width {s['width']}, {common.IMAGE_SIZE} px, {common.CHANNELS} channel, "
               f"batch {s['batch']}, pretraining {s['pretrain_steps']} steps, evaluation {s['eval_steps']} steps, "
               f"{s['num_replicates']} bootstrap replicates")
  linear = [load_json(os.path.join(r["workdir"], "results.json")) for r in m["runs"] if r.get("mode") == "linear_eval"]
  if linear:
    norms = sorted({r.get("feature_norm", "none") for r in linear})
    lrs = sorted({r["base_lr"] for r in linear if "base_lr" in r})
    lines.append(f"- Linear evaluation (read from its runs' results.json): frozen encoder, feature norm "
                 f"{' / '.join(norms)} (`eval.feature_norm`), base learning rate {' / '.join(f'{v:g}' for v in lrs)}")
  return lines


def pretrain_line(name: str, r: dict) -> str:
  if "loss" in r.get("metrics", {}):
    loss = f"final loss {r['metrics']['loss']:.4f}"
  else:  # e.g. stopped after its last checkpoint, then resumed there: no step ran in the run that wrote it
    loss = f"final loss not recorded (results written by a run resumed at step {r.get('resumed_from_step', '?')})"
  return f"- {name}: {r['final_step']}/{r['num_steps']} steps, {loss}, wall time {fmt_wall(r)} s (`{r['workdir']}`)"


def finished_runs(m: dict, role: str = "eval") -> list:
  """The study's runs of one role ('eval', or 'recipe': random-init fine-tuning with the MedMNIST
  v2 recipe), each with its results; ValueError for a run that has not finished."""
  runs = []
  for run in m["runs"]:
    if run["role"] == role:
      r = load_json(os.path.join(run["workdir"], "results.json"))
      if not common.is_done(r):
        raise ValueError(f"{run['workdir']}: run is not finished")
      runs.append(dict(run, results=r, results_path=os.path.join(run["workdir"], "results.json")))
  return runs


def plot_lines(runs: list, metric: str, out_png: str, title: str, label_of) -> str:
  points = {}
  for run in runs:
    v = run["results"]["test"][metric]
    points.setdefault(label_of(run), {}).setdefault(float(run["fraction"]), []).append(
        (v["value"], v["ci_low"], v["ci_high"]))
  summary = le.summarise(points)
  le.plot(summary, metric, out_png, title)
  return le.markdown_table(summary, metric)


def study_a_section(m: dict, manifest_path: str, out_dir: str, baselines: dict, baseline_src: str) -> list:
  reps = m["settings"]["num_replicates"]
  lines = [f"## Study A: label efficiency ({m['scale']})", ""] + header_lines(m, manifest_path) + [""]
  runs = finished_runs(m)
  pre = {r["dataset"]: load_json(os.path.join(r["workdir"], "results.json")) for r in m["runs"]
         if r["role"] == "pretrain" and pretrain_method(r) == "simclr"}
  moco_pre = {r["dataset"]: r for r in m["runs"] if r["role"] == "pretrain" and pretrain_method(r) == "moco_v2"}
  for dataset in sorted(pre):
    lines += [f"### {NAMES.get(dataset, dataset)}", "", pretrain_line("SimCLR pretraining (train images, labels unused)", pre[dataset])]
    if dataset in moco_pre:
      r = moco_pre[dataset]
      cfg = load_json(os.path.join(r["workdir"], "config.json"))
      lines.append(pretrain_line("MoCo v2 pretraining (train images, labels unused)",
                                 load_json(os.path.join(r["workdir"], "results.json")))
                   + f"; queue {cfg['moco']['queue_size']}, temperature {cfg['train']['temperature']:g}, "
                   f"{cfg['optim']['name'].upper()} base lr {cfg['optim']['base_lr']:g} "
                   f"({cfg['optim']['lr_scaling']} scaling) at batch {cfg['train']['batch_size']}")
    lines.append("")
    lines += ["Test metrics with bootstrap 95% intervals; Δ = SimCLR init − random init, paired bootstrap "
              f"({reps} replicates, same test images; * = interval excludes 0). Wall times are of the two "
              "evaluation runs (SimCLR / random); the pretraining time is above; ≥: a run resumed after an "
              "interruption whose time was not recorded (a lower bound).", ""]
    lines += ["| mode | label fraction | draw | labelled images | batch | " + " | ".join(
        f"SimCLR {k} | random {k} | Δ {k}" for k in METRICS) + " | wall time (s) |",
              "| --- | --- | --- | --- | --- | " + " | ".join(["---"] * 3 * len(METRICS)) + " | --- |"]
    ds_runs = [r for r in runs if r["dataset"] == dataset]
    keyed = {(r["mode"], arm_of(r), r["fraction"], r["draw"]): r for r in ds_runs}
    for (mode, init, fraction, draw), pt in sorted(keyed.items()):
      if init != "simclr" or (mode, "random", fraction, draw) not in keyed:
        continue
      rd = keyed[(mode, "random", fraction, draw)]
      diff = paired(pt, rd, reps)
      cells = []
      for k in METRICS:
        cells += [fmt_ci(pt["results"]["test"][k]), fmt_ci(rd["results"]["test"][k]), fmt_diff(diff[k])]
      lines.append(f"| {mode} | {fraction:g} | {draw} | {pt['results']['num_train_images']} | {pt['batch']} | "
                   + " | ".join(cells) + f" | {fmt_wall(pt['results'])} / {fmt_wall(rd['results'])} |")
    lines.append("")
    lines += moco_table(keyed, reps)
    for k in METRICS:
      png = f"{m['scale']}_label_efficiency_{dataset}_{k}.png"
      table = plot_lines(ds_runs, k, os.path.join(out_dir, png),
                         f"{NAMES.get(dataset, dataset)} ({m['scale']}): test {k}",
                         lambda r: f"{r['mode']} / {ARM_NAMES[arm_of(r)]}")
      lines += [f"Mean over draws ({k}; interval = mean of the draws' intervals):", "", table,
                f"![{dataset} {k}]({png})", ""]
  lines += published_section(m, runs, finished_runs(m, "recipe"), baselines, baseline_src)
  return lines


def moco_table(keyed: dict, reps: int) -> list:
  """The MoCo v2 arm next to random init and SimCLR: paired bootstrap Δ MoCo − random and
  Δ SimCLR − MoCo on the same test images; no lines when the study has no MoCo runs."""
  rows = []
  for (mode, arm, fraction, draw), mo in sorted(keyed.items()):
    rd, si = keyed.get((mode, "random", fraction, draw)), keyed.get((mode, "simclr", fraction, draw))
    if arm != "moco_v2" or rd is None or si is None:
      continue
    vs_random, vs_simclr = paired(mo, rd, reps), paired(si, mo, reps)
    cells = []
    for k in METRICS:
      cells += [fmt_ci(mo["results"]["test"][k]), fmt_diff(vs_random[k]), fmt_diff(vs_simclr[k])]
    rows.append(f"| {mode} | {fraction:g} | {draw} | {mo['results']['num_train_images']} | {mo['batch']} | "
                + " | ".join(cells) + f" | {fmt_wall(mo['results'])} |")
  if not rows:
    return []
  return ["MoCo v2 arm: the same evaluation runs from the MoCo v2 encoder. Δ MoCo − random and Δ SimCLR − MoCo: "
          f"paired bootstrap ({reps} replicates, same test images; * = interval excludes 0); the SimCLR and "
          "random values are in the table above. Wall time: the MoCo v2 evaluation run.", "",
          "| mode | label fraction | draw | labelled images | batch | " + " | ".join(
              f"MoCo v2 {k} | Δ MoCo − random {k} | Δ SimCLR − MoCo {k}" for k in METRICS) + " | wall time (s) |",
          "| --- | --- | --- | --- | --- | " + " | ".join(["---"] * 3 * len(METRICS)) + " | --- |"] + rows + [""]


def versus(m: dict, published: float) -> str:
  """Where a published value lies relative to our 95% interval."""
  if m["ci_high"] < published:
    return "below"
  if m["ci_low"] > published:
    return "above"
  return "within"


def published_section(m: dict, runs: list, recipes: list, baselines: dict, baseline_src: str) -> list:
  s = m["settings"]
  lines = ["### Next to the published MedMNIST v2 baselines", "",
           f"**Published numbers** ({BASELINE}, Yang et al., Scientific Data 2023), parsed by program from "
           f"`{baseline_src}`; not run here. Ours: fine-tuning on 100% of the labels (draw 0), test split, "
           "last step (no epoch picked on validation); ACC = our top1, AUC = our auc. Rows 'study settings' use "
           f"this study's fine-tuning settings (width {s['width']}, {s['eval_steps']} steps, batch {s['batch']}, "
           "SGD, augmentation); rows 'MedMNIST v2 recipe' use the published training recipe from random init "
           "(Adam 1e-3, lr x0.1 at 50% and 75% of training, no augmentation; published length: 100 epochs of "
           "batch 128; ours in the row). 'vs published': our interval lies below / above the published value, "
           "or the published value is within it.", "",
           "| data set | source | ACC | AUC | vs published (ACC / AUC) | wall time (s) |",
           "| --- | --- | --- | --- | --- | --- |"]
  for dataset in sorted({r["dataset"] for r in runs} | {r["dataset"] for r in recipes}):
    name = NAMES.get(dataset, dataset)
    rows = []
    for arm, label in (("simclr", "ours, SimCLR init, study settings"), ("moco_v2", "ours, MoCo v2 init, study settings"),
                       ("random", "ours, random init, study settings")):
      rows += [(f"{label} ({m['scale']})", r) for r in runs if r["dataset"] == dataset and r["mode"] == "finetune"
               and arm_of(r) == arm and r["fraction"] >= 1.0 and r["draw"] == 0]
    rows += [(f"ours, random init, MedMNIST v2 recipe (width {r['width']:g}, {s['recipe_epochs']:g} epochs = "
              f"{r['steps']} steps of batch {r['batch']})", r) for r in recipes if r["dataset"] == dataset]
    b = baselines.get(name)
    for label, r in rows:
      t = r["results"]["test"]
      vs = f"{versus(t['top1'], b['ACC'])} / {versus(t['auc'], b['AUC'])}" if b else "n/a"
      lines.append(f"| {name} | {label} | {fmt_ci(t['top1'])} | {fmt_ci(t['auc'])} | {vs} | "
                   f"{fmt_wall(r['results'])} |")
    if b:
      lines.append(f"| {name} | published {BASELINE} | {b['ACC']:.3f} | {b['AUC']:.3f} | | n/a (published) |")
  return lines + [""]


def study_b_section(m: dict, manifest_path: str, out_dir: str) -> list:
  reps = m["settings"]["num_replicates"]
  bags = m["bags"]
  lines = [f"## Study B: MICLe vs SimCLR on multi-image chest X-rays ({m['scale']})", ""] + header_lines(m, manifest_path)
  lines += [f"- **The bag set is small**: covid_cxr_multi has {bags['patients_all_splits']} patients over all splits; "
            f"continued pretraining used the `{bags['split']}` split, {bags['patients']} patients "
            f"({bags['patients_with_2plus_images']} with 2+ images) and {bags['images']} images. "
            "Differences between the arms are expected to be small and uncertain.", ""]
  for r in m["runs"]:
    if r["role"] == "pretrain":
      res = load_json(os.path.join(r["workdir"], "results.json"))
      name = {"base": "SimCLR on PneumoniaMNIST train images (shared starting point)",
              "micle": "continued with MICLe on covid_cxr_multi", "simclr": "continued with SimCLR on covid_cxr_multi"}[r["arm"]]
      extra = res.get("metrics", {}).get("distinct_pairs")
      line = pretrain_line(name, res) + (f", distinct_pairs {extra:.3f}" if extra is not None else "")
      if r["arm"] != "base":  # the continued run's optimiser, from its own config.json
        cfg = load_json(os.path.join(r["workdir"], "config.json"))
        line += (f"; {cfg['optim']['name'].upper()} base lr {cfg['optim']['base_lr']:g} "
                 f"({cfg['optim']['lr_scaling']} scaling) at batch {cfg['train']['batch_size']}")
      if "encoder_change" in r:
        line += f"; encoder weights moved by {100 * r['encoder_change']:.2f}% (relative L2 from the start)"
      lines.append(line)
  lines += ["", f"Linear evaluation on PneumoniaMNIST (test split). Δ = MICLe − SimCLR, paired bootstrap ({reps} "
            "replicates; * = interval excludes 0); 'start' = the starting SimCLR checkpoint itself, before "
            "continued pretraining. Wall times: MICLe / SimCLR evaluation runs (≥: part of the run's time "
            "was not recorded, a lower bound).", "",
            "| label fraction | draw | labelled images | " + " | ".join(
                f"MICLe {k} | SimCLR {k} | Δ {k} | start {k}" for k in METRICS)
            + " | wall time (s) |", "| --- | --- | --- | " + " | ".join(["---"] * 4 * len(METRICS)) + " | --- |"]
  runs = finished_runs(m)
  keyed = {(r["arm"], r["fraction"], r["draw"]): r for r in runs}
  for (arm, fraction, draw), mi in sorted(keyed.items()):
    if arm != "micle" or ("simclr", fraction, draw) not in keyed:
      continue
    si = keyed[("simclr", fraction, draw)]
    diff = paired(mi, si, reps)
    cells = []
    base = keyed.get(("base", fraction, draw))
    for k in METRICS:
      cells += [fmt_ci(mi["results"]["test"][k]), fmt_ci(si["results"]["test"][k]), fmt_diff(diff[k]),
                fmt_ci(base["results"]["test"][k]) if base else "n/a"]
    lines.append(f"| {fraction:g} | {draw} | {mi['results']['num_train_images']} | " + " | ".join(cells)
                 + f" | {fmt_wall(mi['results'])} / {fmt_wall(si['results'])} |")
  lines.append("")
  for k in METRICS:
    png = f"{m['scale']}_micle_vs_simclr_{k}.png"
    table = plot_lines(runs, k, os.path.join(out_dir, png), f"MICLe vs SimCLR ({m['scale']}): linear eval {k}",
                       lambda r: f"linear_eval / {r['arm']}")
    lines += [f"Mean over draws ({k}):", "", table, f"![MICLe vs SimCLR {k}]({png})", ""]
  return lines


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default=common.DEFAULT_WORKDIR)
  p.add_argument("--out", default=os.path.join("benchmarks", "results"), help="folder for report.md and PNGs")
  p.add_argument("--scale", default="", help="only this scale (default: every scale found)")
  p.add_argument("--baselines", default=os.path.join(common.DEFAULT_DATA_DIR, "medmnist_v2_benchmark.md"))
  a = p.parse_args(argv)
  t0 = time.time()
  manifests = sorted(glob.glob(os.path.join(a.workdir, a.scale or "*", "*", common.MANIFEST)))
  if not manifests:
    raise SystemExit(f"no {common.MANIFEST} under {a.workdir}: run a study first")
  os.makedirs(a.out, exist_ok=True)
  baselines = parse_baselines(a.baselines)
  lines = ["# medssl-jax benchmarks on real data", "",
           f"Generated by `{common.command_line(MODULE, argv)}` from the result files under `{os.path.abspath(a.workdir)}`; "
           "every number below is read from those files (or, where marked, from the published table).", ""]
  for path in manifests:
    m = load_json(path)
    if m["study"] == "label_efficiency":
      lines += study_a_section(m, os.path.abspath(path), a.out, baselines, os.path.abspath(a.baselines))
    elif m["study"] == "micle_vs_simclr":
      lines += study_b_section(m, os.path.abspath(path), a.out)
    elif m["study"] == "dvme":
      from benchmarks import dvme_study
      lines += dvme_study.section(m, os.path.abspath(path), a.out)
    elif m["study"] == "transfer":
      from benchmarks import transfer
      lines += transfer.section(m, os.path.abspath(path), a.out)
    elif m["study"] == "nih_study_b":
      from benchmarks import nih_study_b
      lines += nih_study_b.section(m, os.path.abspath(path), a.out)
    else:  # listed, not dropped: a manifest of another version or a study this report does not know
      lines += [f"## Not reported: `{os.path.abspath(path)}`", "",
                f"Its study, {m.get('study')!r}, has no section in this report generator.", ""]
  lines.append(f"Report built in {time.time() - t0:.1f} s.")
  out = os.path.join(a.out, "report.md")
  with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
  print(f"Wrote {out}")
  return 0


if __name__ == "__main__":
  from medssl_jax import errors
  raise SystemExit(errors.guard(main)())  # a UserError: one line `error: ...`, exit 2
