"""The transfer benchmark's report (benchmarks/transfer.py runs it, then writes this report):
mean and std over runs per (task, encoder), t-tests against the reference, bar charts, and what
the data can and cannot show. Read only from the result files the study.json lists.
"""
import os

import numpy as np

from benchmarks import common
from benchmarks import report_lib
from medssl_jax import settings
from medssl_jax.evaluation import statistics

MODULE = "benchmarks.transfer"  # the command that writes this report (and its --report_only)
LUNGSEG_NOTE = ("the lung masks of covid_cxr_lungseg were made by a published segmentation model, "
                "not drawn by hand (../shared/data/PROVENANCE.md)")


def run_results(run: dict):
  """The results.json of a manifest's run, or None when it is absent or not finished (a run that was
  deleted, or interrupted after the manifest was written)."""
  path = os.path.join(run["workdir"], "results.json")
  r = report_lib.load_json(path) if os.path.isfile(path) else None
  return r if common.is_done(r) else None


def unfinished(m: dict) -> list:
  """Workdirs the report leaves out: those the manifest lists as not finished, and listed runs whose
  results.json is absent or not completed now."""
  return list(m.get("missing", [])) + [run["workdir"] for run in m["runs"]
                                       if run["role"] == "eval" and run_results(run) is None]


def collect(m: dict) -> dict:
  """{(task, encoder): [per-run dicts: value, selected_step, epochs, seed, wall]} from the result files
  of the finished runs (the others are `unfinished(m)`)."""
  cells = {}
  for run in m["runs"]:
    if run["role"] != "eval":
      continue
    r = run_results(run)
    if r is None:
      continue
    step = int(r.get("selected_step", r["final_step"]))
    cells.setdefault((run["task"], run["encoder"]), []).append({
        "value": float(r["test"][run["metric"]]["value"]), "selected_step": step,
        "epochs": step * run["batch"] / r["num_train_images"], "seed": r.get("seed", run["seed"]),
        "wall": float(r.get("wall_time_sec", float("nan"))), "metric": run["metric"],
        "stopped_early": bool(r.get("stopped_early", False)),
        "num_steps": r["num_steps"], "fit_images": r["num_train_images"]})
  return cells


def summarise(values) -> tuple:
  """(mean, sample std (ddof=1; NaN for one run), n)."""
  v = np.asarray(values, np.float64)
  return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")), len(v)


def table_rows(m: dict, cells: dict | None = None) -> list:
  """One dict per (task, encoder): mean/std of the test metric and of the selected step, and the
  independent two-sample t-test (Student's, pooled variance; scipy) against the reference encoder."""
  cells = collect(m) if cells is None else cells
  ref = m["reference"]
  order = [e["name"] for e in m["encoders"]] or sorted({k[1] for k in cells})
  rows = []
  for task in m["settings"]["tasks"]:
    for enc in order:
      runs = cells.get((task, enc))
      if not runs:
        continue
      mean, std, n = summarise([x["value"] for x in runs])
      row = {"task": task, "encoder": enc, "metric": runs[0]["metric"], "n": n, "mean": mean, "std": std,
             "step_mean": summarise([x["selected_step"] for x in runs])[0],
             "step_std": summarise([x["selected_step"] for x in runs])[1],
             "epochs_mean": summarise([x["epochs"] for x in runs])[0],
             "epochs_std": summarise([x["epochs"] for x in runs])[1],
             "num_steps": runs[0]["num_steps"], "seeds": [x["seed"] for x in runs],
             "stopped_early": int(sum(x.get("stopped_early", False) for x in runs)),
             "wall": float(np.sum([x["wall"] for x in runs])), "t": None, "p": None}
      refs = cells.get((task, ref))
      if enc != ref and refs and n > 1 and len(refs) > 1:
        try:
          tt = statistics.independent_t_test([x["value"] for x in runs], [x["value"] for x in refs])
          row["t"], row["p"] = tt["t"], tt["p"]
        except ValueError:  # e.g. NaN scores
          pass
      rows.append(row)
  return rows


def fmt_row(row: dict, reference: str) -> str:
  pm = lambda mean, std, f: f"{mean:{f}} ± {std:{f}}"
  test = "reference" if row["encoder"] == reference else (
      "n/a" if row["t"] is None else f"t = {row['t']:+.3f}, p = {row['p']:.4g}")
  return (f"| {row['task']} | {row['encoder']} | {row['n']} | {row['metric']} | "
          f"{pm(row['mean'], row['std'], '.4f')} | {test} | "
          f"{pm(row['step_mean'], row['step_std'], '.1f')} of {row['num_steps']} | "
          f"{pm(row['epochs_mean'], row['epochs_std'], '.2f')} | {row['stopped_early']} of {row['n']} | "
          f"{', '.join(str(s) for s in row['seeds'])} | "
          f"{row['wall']:.1f} |")


def plot(rows: list, task: str, out_png: str, title: str) -> None:
  import matplotlib  # here, as medssl_jax.evaluation's plots: only drawing a report needs it
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rs = [r for r in rows if r["task"] == task]
  fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rs), 3.6))
  x = np.arange(len(rs))
  ax.bar(x, [r["mean"] for r in rs], yerr=[0.0 if np.isnan(r["std"]) else r["std"] for r in rs], capsize=4,
         color="#4c72b0")
  ax.set_xticks(x, [r["encoder"] for r in rs], rotation=20, ha="right")
  ax.set_ylabel(f"test {rs[0]['metric']} (mean ± std over runs)")
  ax.set_title(title)
  lo = min(r["mean"] - (0 if np.isnan(r["std"]) else r["std"]) for r in rs)
  hi = max(r["mean"] + (0 if np.isnan(r["std"]) else r["std"]) for r in rs)
  ax.set_ylim(max(0.0, lo - 0.05), min(1.0, hi + 0.05))
  fig.tight_layout()
  fig.savefig(out_png, dpi=120)
  plt.close(fig)


def stopping_text(e: dict) -> str:
  """How a run's finetune.* settings stop training and cut the lr (keys absent in older runs: off)."""
  stop, factor = int(e.get("early_stop_patience", 0)), float(e.get("plateau_factor", 0.0))
  text = (f"early stop after {stop} hold-out scores without improvement" if stop
          else "no early stop (the fixed length; the best hold-out state is tested)")
  if factor:
    text += f", lr x {factor:g} after {int(e.get('plateau_patience', 5))} (ReduceLROnPlateau)"
  return text + ("" if factor else ", no ReduceLROnPlateau")


def protocol_lines(m: dict) -> list:
  """The protocol as the runs' own config.json files record it (one line per task)."""
  lines, seen = [], set()
  for run in m["runs"]:
    cfg = os.path.join(run["workdir"], "config.json")
    if run["role"] != "eval" or run["task"] in seen or not os.path.isfile(cfg):
      continue
    seen.add(run["task"])
    c = settings.read_saved(report_lib.load_json(cfg))  # a run saved under older key names reads the same
    o, t, e = c["optim"], c["train"], c["finetune"]
    lines.append(f"  - {run['task']} (`finetune.task={e['task']}`): {o['name']} lr {o['base_lr']:g} ({o['schedule']} "
                 f"schedule, weight decay {o['weight_decay']:g}), batch {t['batch_size']}, {t['num_steps']} steps; "
                 f"hold-out scored every {e['eval_every']} steps on `{e['val_split']}`, model selected on hold-out "
                 f"`{e['select_metric']}`; {stopping_text(e)}; {c['data']['image_size']} px, "
                 f"{c['data']['channels']} channel(s); "
                 f"data `{c['data']['path']}`" + (f"; U-Net decoder {c['seg']['decoder_width']:g}x the paper's widths"
                                                  if e["task"] == "segmentation" and "seg" in c else ""))
    if run.get("data_note") or "lungseg" in c["data"]["path"]:
      lines.append(f"    - **Note on every {run['task']} number**: {run.get('data_note') or LUNGSEG_NOTE}.")
  return lines


# What each data set can and cannot show (../shared/data/PROVENANCE.md), keyed by a name that the
# path of a task's data (or of an encoder's pretraining data) contains.
DATA_LIMITS = {
    "pneumoniamnist": "PneumoniaMNIST (paediatric chest X-rays of Kermany et al. 2018, MedMNIST 28 px) has no "
                      "patient ids (MedMNIST drops them): the hold-out is drawn per image, and whether a patient "
                      "has images on both sides of it, or of the official train / test split, cannot be checked. "
                      "Such a leak would inflate the scores (not necessarily every encoder's by as much); the "
                      "encoders are compared on the same split, with that caveat.",
    "breastmnist": "BreastMNIST (breast ultrasound, MedMNIST 28 px) has no patient ids (MedMNIST drops them): "
                   "the hold-out is drawn per image and a patient on both sides of a split cannot be ruled "
                   "out. Its test split is small: each run's test score is uncertain (the bootstrap interval in "
                   "its results.json), and the ± over runs, all scored on the same images, does not include that "
                   "uncertainty.",
    "covid_cxr_lungseg": "The lung masks of covid_cxr_lungseg were made by a published segmentation model (lungVAE, "
                         "Selvan et al. 2020), not drawn by hand: Dice and IoU measure agreement with that model, "
                         "not with the anatomy, so an encoder that segments lungs better than lungVAE can score "
                         "lower. configs/lung_segmentation.py splits train / val / test by patient. Most of its "
                         "images are also in covid_cxr_multi (same files): an encoder pretrained there may have seen "
                         "its test images (without masks).",
    "covid_cxr_multi": "covid_cxr_multi: patients 285 and 339 are probably one patient entered twice upstream; a "
                       "split that keeps them apart leaks.",
    "nih_cxr14": "NIH ChestX-ray14 thumbnails: the source folders' train / val / test split is not patient-disjoint; "
                 "only a split by patient_id is free of patient leakage.",
    "dermamnist": "DermaMNIST splits by image, not by lesion: lesions have images in both train and test; only a "
                  "lesion-disjoint re-split is free of that leak.",
}


def _limits_of(path: str) -> str:
  return next((v for k, v in DATA_LIMITS.items() if k in os.path.basename(os.path.dirname(path)) + "/"
               + os.path.basename(path)), "")


def pretraining_stages(e: dict) -> list:
  """[(data path, split, labels used), ...] of the training runs behind an encoder, first stage first:
  its own config.json, then that of its `train.init_checkpoint` (a continued pretraining, e.g. the
  adapt_ssl arm, or a supervised fine-tuning, the adapt_supervised arm), and so on. [] when the
  checkpoint records none (random init, imported weights)."""
  stages, folder, seen = [], e.get("checkpoint") or "", set()
  while folder and os.path.isfile(os.path.join(folder, "config.json")) and folder not in seen:
    seen.add(folder)
    c = report_lib.load_json(os.path.join(folder, "config.json"))
    if c.get("mode") not in ("pretrain", "finetune") or not c.get("data", {}).get("path"):
      break
    stages.insert(0, (c["data"]["path"], c["data"].get("train_split", "train"), c["mode"] == "finetune"))
    folder = c.get("train", {}).get("init_checkpoint") or ""
  return stages


def encoder_limits(e: dict, task_paths: dict) -> str:
  """The report line on an encoder's pretraining data ('' when it records none)."""
  stages = pretraining_stages(e)
  if not stages:
    return ""
  paths = [p for p, _, _ in stages]
  labelled = {os.path.abspath(p) for p, _, with_labels in stages if with_labels}
  where = "; then on ".join(f"`{p}`, split `{sp}`" + (" with its labels (supervised)" if with_labels else "")
                            for p, sp, with_labels in stages)
  how = f"{len(stages)} stages, from the checkpoints' config.json" if len(stages) > 1 else "its config.json"
  line = f"  - Encoder {e['name']}: pretrained on {where} ({'labels used where marked' if labelled else 'labels unused'}; {how})"
  same = [t for t, p in task_paths.items() if any(os.path.abspath(p) == os.path.abspath(x) for x in paths)]
  shared = [t for t, p in task_paths.items() if "covid_cxr_lungseg" in p and any("covid_cxr_multi" in x for x in paths)]
  if same:
    saw = ("training images and labels" if any(os.path.abspath(task_paths[t]) in labelled for t in same)
           else "training images")
    line += f"; the same file as task(s) {', '.join(same)}: the pretraining saw their {saw} (not their test split)"
  if shared:
    line += f"; covid_cxr_multi shares images with task(s) {', '.join(shared)}, test images included"
  extra = next((_limits_of(x) for x in paths if "covid_cxr_multi" in x), "")
  return line + (f". {extra}" if extra else "")


def data_limits(m: dict) -> list:
  """What the numbers can and cannot show, from the data the manifest lists (PROVENANCE.md facts per
  data set), the encoders' pretraining data and the run design."""
  lines = ["- **What these numbers can and cannot show**:"]
  if m["scale"] == "smoke":
    lines.append("  - Scale `smoke`: a few steps on tiny models, a check of the plumbing; the numbers mean nothing.")
  lines.append("  - Runs differ only in their seed (head initialisation, batch order, augmentation); every run of a "
               "task is scored on the same test images. So ± std and the t-test measure run-to-run training "
               "variation on this one test set, not how a result would move on other images or patients; the "
               "p-values are not corrected for the number of encoders compared.")
  seen = set()
  for d in m["data"]:
    note = _limits_of(d["path"]) if d.get("role", "original") == "original" else ""
    if note and (d.get("task"), note) not in seen:
      seen.add((d.get("task"), note))
      lines.append(f"  - {d.get('task', '')}: {note}")
  task_paths = {d["task"]: d["path"] for d in m["data"] if d.get("role") == "original" and d.get("task")}
  for e in m["encoders"]:
    line = encoder_limits(e, task_paths)
    if line:
      lines.append(line)
  if not collect(m):
    lines.append("  - No run has finished: nothing to compare yet.")
  return lines


def section(m: dict, manifest_path: str, ctx: report_lib.Context) -> list:
  """The Markdown of a transfer study.json: header (command, machine, data md5s, encoders, runs not
  finished), the protocol from the runs' config.json, what the data can and cannot show, the table
  and a bar chart per task (PNG in `ctx.out_dir`). Both this study's own report (`write_report`) and
  the combined one (`benchmarks.report`) are this function's output; unfinished runs are listed,
  not read."""
  ref = m["reference"]
  lines = [f"## Transfer benchmark ({m['scale']})", "",
           f"- Command: `{m['command']}` (scale `{m['scale']}`), manifest `{manifest_path}`",
           report_lib.machine_line(m),
           report_lib.time_line(m),
           "- Hold-out for early stopping (model selection): per task, on its data line below; the same for "
           "every encoder and run.",
           "- Data (md5; folders: md5 over sorted (path, md5) lines):"]
  for d in m["data"]:
    extra = f"; hold-out: {d['holdout']}" if d.get("holdout") else ""
    lines.append(f"  - {d.get('task', '')} {d.get('role', '')}: `{d['path']}`, {d['bytes']} bytes, "
                 f"md5 `{d['md5']}`{extra}")
  lines.append("- Encoders:")
  for e in m["encoders"]:
    model = ", ".join(f"{k} {v}" for k, v in e["model"].items())
    ck = f"; checkpoint `{e['checkpoint']}` (md5 `{e['checkpoint_md5']['md5']}`)" if e.get("checkpoint_md5") else ""
    src = f" from `{e['source']}`" if e["source"] else ""
    lines.append(f"  - {e['name']}: {e['kind']}{src}; {model}; {e['channels']} channel(s){ck}")
  left_out = unfinished(m)
  if left_out:
    lines.append(f"- **Not finished** when this report was made ({len(left_out)} runs or encoders, left out of "
                 "the table and plots): " + ", ".join(f"`{w}`" for w in left_out))
  lines += ["- Protocol, read from the runs' config.json:"] + protocol_lines(m)
  lines += data_limits(m)
  rows = table_rows(m)
  lines += ["", f"Test metric: mean ± sample standard deviation over the runs (seed r for run r). t-test: "
            f"independent two-sample (Student's, pooled variance, two-sided; scipy) of each encoder against "
            f"`{ref}`; t > 0 when the encoder's mean is higher. 'Steps to early stop': the step whose state was "
            "best on the hold-out (the tested one), and the same in epochs over "
            "the fit images; 'stopped early': runs that an early stop ended before the scale's length. Wall time: "
            "the sum over the runs.", "",
            "| task | encoder | runs | metric | test mean ± std | vs reference | steps to early stop | "
            "epochs to early stop | stopped early | seeds | wall time (s) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  lines += [fmt_row(r, ref) for r in rows]
  lines.append("")
  for task in m["settings"]["tasks"]:
    if not any(r["task"] == task for r in rows):
      continue
    png = f"{m['scale']}_transfer_{task}.png"
    plot(rows, task, os.path.join(ctx.out_dir, png), f"{task} ({m['scale']}): mean ± std over runs")
    lines += [f"![{task}]({png})", ""]
  return lines


def write_report(manifest_path: str, out_dir: str) -> int:
  if not os.path.isfile(manifest_path):
    raise SystemExit(f"{manifest_path} does not exist: run the benchmark first")
  os.makedirs(out_dir, exist_ok=True)
  m = report_lib.load_json(manifest_path)
  lines = ["# Transfer benchmark", "", f"Generated by `{MODULE}` from the result files listed in "
           f"`{os.path.abspath(manifest_path)}`; every number below is read from those files.", ""]
  lines += section(m, os.path.abspath(manifest_path), report_lib.Context(out_dir=out_dir))
  out = os.path.join(out_dir, f"transfer_{m['scale']}.md")
  with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
  print(f"Wrote {out}")
  return 0
