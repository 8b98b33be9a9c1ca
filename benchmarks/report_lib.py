"""What the studies' report modules share: reading result files, formatting intervals and paired
differences, the header every study section opens with, and the label-efficiency table and plot.

A report module (`benchmarks/<study>_report.py`) turns one study.json and the result files it
lists into Markdown lines with `section(m, manifest_path, ctx)`; `benchmarks.report` finds it in
its table of studies. Nothing here runs a study, and no number is typed here.

Imports go one way per study: a report module may read its study's design from the run module
(nih_study_b_report does), or the run module may import its report module to write the report
itself (transfer.py does; transfer_report then takes nothing from it), never both.
"""
import dataclasses
import json
import os
import re

from benchmarks import common
from medssl_jax import jsonio
from medssl_jax.evaluation import compare
from medssl_jax.evaluation import label_efficiency as le

METRICS = ("top1", "auc")
BASELINE = "ResNet-18 (28)"


@dataclasses.dataclass(frozen=True)
class Context:
  """What every study's `section` gets besides its manifest: the folder for its PNGs ('' for none)
  and the published MedMNIST v2 rows (`parse_baselines`) with the file they were read from."""
  out_dir: str = ""
  baselines: dict = dataclasses.field(default_factory=dict)
  baselines_path: str = ""


def load_json(path: str) -> dict:
  """A run's JSON file; a metric written as null (NaN: strict JSON) reads as NaN."""
  with open(path) as f:
    return jsonio.nan_fields(json.load(f))


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
          f"the last invocation of the command took {m['wall_time_sec']:.1f} s "
          "(finished runs are skipped, not re-timed)")


def machine_line(m: dict) -> str:
  mach = m["machine"]
  return (f"- Machine: {mach['platform']}, {mach['cpu_cores']} CPU cores, Python {mach['python']}, "
          f"JAX {mach['jax']}, {mach['device_count']} x {mach['backend']} device ({mach['device_kind']}), "
          f"host pipeline {mach.get('host_pipeline', 'tf')}")


def header_lines(m: dict, manifest_path: str) -> list:
  """Command, machine, run time, data md5s, runs not finished, the settings of Studies A and B (one
  architecture and batch; a study with other settings replaces that line) and linear evaluation."""
  lines = [f"- Command: `{m['command']}` (scale `{m['scale']}`), manifest `{manifest_path}`",
           machine_line(m),
           time_line(m),
           "- Data:"]
  for d in m["data"]:
    extra = f", {d['files']} files, md5 over sorted (path, md5) lines" if d["kind"] == "folder" else ""
    lines.append(f"  - `{d['path']}`: {d['bytes']} bytes{extra}, md5 `{d['md5']}`")
  if m.get("missing"):
    lines.append(f"- **Not finished** when this report was made ({len(m['missing'])} runs, left out of the tables "
                 "and plots): " + ", ".join(f"`{os.path.basename(w)}`" for w in m["missing"]))
  s = m["settings"]
  lines.append(f"- Settings: ResNet-{common.DEPTH} width {s['width']}, {common.IMAGE_SIZE} px, "
               f"{common.CHANNELS} channel, batch {s['batch']}, pretraining {s['pretrain_steps']} steps, "
               f"evaluation {s['eval_steps']} steps, {s['num_replicates']} bootstrap replicates")
  linear = [load_json(os.path.join(r["workdir"], "results.json")) for r in m["runs"] if r.get("mode") == "linear_eval"]
  if linear:
    norms = sorted({r.get("feature_norm", "none") for r in linear})
    lrs = sorted({r["base_lr"] for r in linear if "base_lr" in r})
    lines.append(f"- Linear evaluation (read from its runs' results.json): frozen encoder, feature norm "
                 f"{' / '.join(norms)} (`finetune.feature_norm`), base learning rate {' / '.join(f'{v:g}' for v in lrs)}")
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
  """A label-efficiency plot (test `metric` against the label fraction, one line per `label_of(run)`,
  mean over draws) written to `out_png`; returns its Markdown table."""
  points = {}
  for run in runs:
    v = run["results"]["test"][metric]
    points.setdefault(label_of(run), {}).setdefault(float(run["fraction"]), []).append(
        (v["value"], v["ci_low"], v["ci_high"]))
  summary = le.summarise(points)
  le.plot(summary, metric, out_png, title)
  return le.markdown_table(summary, metric)
