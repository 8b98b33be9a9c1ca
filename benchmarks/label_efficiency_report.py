"""Study A's report (benchmarks/label_efficiency.py runs it): label efficiency of SimCLR, MoCo v2,
the extra arms (--arms: BYOL, Barlow Twins, DINO, ...) and random init, and the rows next to the
published MedMNIST v2 baselines."""
import os

from benchmarks import report_lib
from medssl_jax import settings

NAMES = {"pneumoniamnist": "PneumoniaMNIST", "breastmnist": "BreastMNIST"}
ARM_NAMES = {"simclr": "SimCLR", "moco_v2": "MoCo v2", "random": "random", "byol": "BYOL", "simsiam": "SimSiam",
             "barlow_twins": "Barlow Twins", "vicreg": "VICReg", "dino": "DINO", "swav": "SwAV"}
SHORT_NAMES = {"moco_v2": "MoCo"}
# The arms compared with SimCLR and random init in tables of their own, in this order.
OTHER_ARMS = ("moco_v2", "byol", "simsiam", "barlow_twins", "vicreg", "dino", "swav")


def arm_of(run: dict) -> str:
  """A Study A evaluation run's arm; manifests written before the MoCo arm have only 'init'."""
  return run.get("arm") or ("simclr" if run["init"] == "pretrained" else "random")


def pretrain_method(run: dict) -> str:
  return run.get("method", "simclr")


def section(m: dict, manifest_path: str, ctx: report_lib.Context) -> list:
  """Study A's Markdown: per data set the pretraining runs, the SimCLR vs random table with paired
  differences, the MoCo v2 arm, the label-efficiency plots (PNGs in `ctx.out_dir`), then the rows
  next to the published MedMNIST v2 baselines (`ctx.baselines`)."""
  reps = m["settings"]["num_replicates"]
  lines = [f"## Study A: label efficiency ({m['scale']})", ""] + report_lib.header_lines(m, manifest_path) + [""]
  runs = report_lib.finished_runs(m)
  pre = {r["dataset"]: report_lib.load_json(os.path.join(r["workdir"], "results.json")) for r in m["runs"]
         if r["role"] == "pretrain" and pretrain_method(r) == "simclr"}
  moco_pre = {r["dataset"]: r for r in m["runs"] if r["role"] == "pretrain" and pretrain_method(r) == "moco_v2"}
  other_pre = [r for r in m["runs"] if r["role"] == "pretrain" and pretrain_method(r) in OTHER_ARMS[1:]]
  for dataset in sorted(pre):
    lines += [f"### {NAMES.get(dataset, dataset)}", "",
              report_lib.pretrain_line("SimCLR pretraining (train images, labels unused)", pre[dataset])]
    if dataset in moco_pre:
      r = moco_pre[dataset]
      cfg = settings.read_saved(report_lib.load_json(os.path.join(r["workdir"], "config.json")))
      lines.append(report_lib.pretrain_line("MoCo v2 pretraining (train images, labels unused)",
                                            report_lib.load_json(os.path.join(r["workdir"], "results.json")))
                   + f"; queue {cfg['moco']['queue_size']}, temperature {cfg['moco']['temperature']:g}, "
                   f"{cfg['optim']['name'].upper()} base lr {cfg['optim']['base_lr']:g} "
                   f"({cfg['optim']['lr_scaling']} scaling) at batch {cfg['train']['batch_size']}")
    for r in other_pre:
      if r["dataset"] == dataset:
        lines.append(report_lib.pretrain_line(f"{ARM_NAMES[pretrain_method(r)]} pretraining (train images, labels "
                                              "unused; configs/" + pretrain_method(r) + ".py:local's heads)",
                                              report_lib.load_json(os.path.join(r["workdir"], "results.json"))))
    lines.append("")
    lines += ["Test metrics with bootstrap 95% intervals; Δ = SimCLR init − random init, paired bootstrap "
              f"({reps} replicates, same test images; * = interval excludes 0). Wall times are of the two "
              "evaluation runs (SimCLR / random); the pretraining time is above; ≥: a run resumed after an "
              "interruption whose time was not recorded (a lower bound).", ""]
    lines += ["| mode | label fraction | draw | labelled images | batch | " + " | ".join(
        f"SimCLR {k} | random {k} | Δ {k}" for k in report_lib.METRICS) + " | wall time (s) |",
              "| --- | --- | --- | --- | --- | " + " | ".join(["---"] * 3 * len(report_lib.METRICS)) + " | --- |"]
    ds_runs = [r for r in runs if r["dataset"] == dataset]
    keyed = {(r["mode"], arm_of(r), r["fraction"], r["draw"]): r for r in ds_runs}
    for (mode, init, fraction, draw), pt in sorted(keyed.items()):
      if init != "simclr" or (mode, "random", fraction, draw) not in keyed:
        continue
      rd = keyed[(mode, "random", fraction, draw)]
      diff = report_lib.paired(pt, rd, reps)
      cells = []
      for k in report_lib.METRICS:
        cells += [report_lib.fmt_ci(pt["results"]["test"][k]), report_lib.fmt_ci(rd["results"]["test"][k]),
                  report_lib.fmt_diff(diff[k])]
      lines.append(f"| {mode} | {fraction:g} | {draw} | {pt['results']['num_train_images']} | {pt['batch']} | "
                   + " | ".join(cells)
                   + f" | {report_lib.fmt_wall(pt['results'])} / {report_lib.fmt_wall(rd['results'])} |")
    lines.append("")
    for arm in OTHER_ARMS:
      lines += arm_table(keyed, reps, arm)
    for k in report_lib.METRICS:
      png = f"{m['scale']}_label_efficiency_{dataset}_{k}.png"
      table = report_lib.plot_lines(ds_runs, k, os.path.join(ctx.out_dir, png),
                                    f"{NAMES.get(dataset, dataset)} ({m['scale']}): test {k}",
                                    lambda r: f"{r['mode']} / {ARM_NAMES[arm_of(r)]}")
      lines += [f"Mean over draws ({k}; interval = mean of the draws' intervals):", "", table,
                f"![{dataset} {k}]({png})", ""]
  lines += published_section(m, runs, report_lib.finished_runs(m, "recipe"), ctx.baselines, ctx.baselines_path)
  return lines


def arm_table(keyed: dict, reps: int, arm: str) -> list:
  """An arm (MoCo v2, BYOL, ...) next to random init and SimCLR: paired bootstrap Δ arm − random and
  Δ SimCLR − arm on the same test images; no lines when the study has no runs of that arm."""
  name, short = ARM_NAMES[arm], SHORT_NAMES.get(arm, ARM_NAMES[arm])
  rows = []
  for (mode, run_arm, fraction, draw), mo in sorted(keyed.items()):
    rd, si = keyed.get((mode, "random", fraction, draw)), keyed.get((mode, "simclr", fraction, draw))
    if run_arm != arm or rd is None or si is None:
      continue
    vs_random, vs_simclr = report_lib.paired(mo, rd, reps), report_lib.paired(si, mo, reps)
    cells = []
    for k in report_lib.METRICS:
      cells += [report_lib.fmt_ci(mo["results"]["test"][k]), report_lib.fmt_diff(vs_random[k]),
                report_lib.fmt_diff(vs_simclr[k])]
    rows.append(f"| {mode} | {fraction:g} | {draw} | {mo['results']['num_train_images']} | {mo['batch']} | "
                + " | ".join(cells) + f" | {report_lib.fmt_wall(mo['results'])} |")
  if not rows:
    return []
  return [f"{name} arm: the same evaluation runs from the {name} encoder. Δ {short} − random and Δ SimCLR − "
          f"{short}: paired bootstrap ({reps} replicates, same test images; * = interval excludes 0); the SimCLR "
          f"and random values are in the table above. Wall time: the {name} evaluation run.", "",
          "| mode | label fraction | draw | labelled images | batch | " + " | ".join(
              f"{name} {k} | Δ {short} − random {k} | Δ SimCLR − {short} {k}" for k in report_lib.METRICS)
          + " | wall time (s) |",
          "| --- | --- | --- | --- | --- | " + " | ".join(["---"] * 3 * len(report_lib.METRICS)) + " | --- |"
          ] + rows + [""]


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
           f"**Published numbers** ({report_lib.BASELINE}, Yang et al., Scientific Data 2023), parsed by program "
           f"from `{baseline_src}`; not run here. Ours: fine-tuning on 100% of the labels (draw 0), test split, "
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
    for arm in ("simclr",) + OTHER_ARMS + ("random",):
      label = f"ours, {ARM_NAMES[arm]} init, study settings"
      rows += [(f"{label} ({m['scale']})", r) for r in runs if r["dataset"] == dataset and r["mode"] == "finetune"
               and arm_of(r) == arm and r["fraction"] >= 1.0 and r["draw"] == 0]
    rows += [(f"ours, random init, MedMNIST v2 recipe (width {r['width']:g}, {s['recipe_epochs']:g} epochs = "
              f"{r['steps']} steps of batch {r['batch']})", r) for r in recipes if r["dataset"] == dataset]
    b = baselines.get(name)
    for label, r in rows:
      t = r["results"]["test"]
      vs = f"{versus(t['top1'], b['ACC'])} / {versus(t['auc'], b['AUC'])}" if b else "n/a"
      lines.append(f"| {name} | {label} | {report_lib.fmt_ci(t['top1'])} | {report_lib.fmt_ci(t['auc'])} | {vs} | "
                   f"{report_lib.fmt_wall(r['results'])} |")
    if b:
      lines.append(f"| {name} | published {report_lib.BASELINE} | {b['ACC']:.3f} | {b['AUC']:.3f} | "
                   "| n/a (published) |")
  return lines + [""]
