"""Model selection after a sweep (Azizi et al. 2021 Sec. 4.3): pick the trial with the best
validation metric, re-train that setting k times with other seeds, evaluate each on test, and
write a summary table.

  medssl-jax sweep --config=configs/derm_finetune.py:local --workdir_root=DIR \
      --preset azizi_finetune --mode local
  medssl-jax select-best --sweep_dir=DIR --metric=top1 --repeats=5 [--mode local|print]

Reads DIR/sweep.json (written by `medssl-jax sweep`) and every trial's results.json (its "val" metrics:
the trials need a validation split, `finetune.val_split`; with `finetune.eval_every` > 0 they are those
of the trial's best state during training, at its `selected_step`; CheXpert: `--metric=mean_auc`
on the `resplit_val` part of the patient re-split). Writes DIR/selection.json and
DIR/selection.md: the validation metric of every trial, the chosen overrides, and for each of
the k repeats (workdirs DIR/repeat_<seed>, `--config.seed=<seed>`) its test metrics with 95%
bootstrap intervals, plus their mean and standard deviation. Azizi et al. repeat 5 times (Derm)
or 10 times (CXR).

  medssl-jax select-best --pretrain_dir=WORKDIR --metric=knn/top1

picks a pretraining checkpoint instead: the step of a run's monitor.json (`monitor.every`, the kNN
and linear-probe scores of runs/monitor.py) with the best --metric, and prints where its weights
are for `train.init_checkpoint` (checkpoints_best/ with `monitor.keep_best=<metric>`, or the
workdir when the step is its newest checkpoint); WORKDIR/selection.json records the choice.
"""
import json
import os
import shlex
import subprocess
import sys

from absl import flags
from etils import epath
import numpy as np

from medssl_jax import jsonio
from medssl_jax.commands import common
from medssl_jax.errors import UserError

FLAGS = flags.FLAGS


def _load(path):
  return jsonio.read_json(path)  # a metric written as null (NaN) reads as NaN


def _exists(path) -> bool:
  return epath.Path(path).is_file()


def validation_table(sweep: dict, metric: str) -> list:
  """[(trial index, overrides, val value or None, workdir)] for every trial."""
  rows = []
  for t in sweep["trials"]:
    path = os.path.join(t["workdir"], "results.json")
    value = None
    if _exists(path):
      r = _load(path)
      if "val" not in r:
        raise UserError(f"{path} has no validation metrics: run the sweep with a validation split "
                         f"(finetune.val_split) so that a setting can be selected")
      if metric not in r["val"]:
        raise UserError(f"{path}: no validation metric {metric!r}; it has {sorted(r['val'])}")
      value = r["val"][metric]["value"]
    rows.append((t["index"], t["overrides"], value, t["workdir"]))
  return rows


def choose(rows: list, higher_is_better: bool = True):
  done = [r for r in rows if r[2] is not None and np.isfinite(r[2])]
  if not done:
    raise UserError("no finished trial with a validation metric: run the sweep first")
  return (max if higher_is_better else min)(done, key=lambda r: r[2])


def repeat_commands(sweep: dict, best_overrides: dict, sweep_dir: str, seeds) -> list:
  cmds = []
  for seed in seeds:
    argv = [sys.executable, "-m", "medssl_jax", "train", f"--config={sweep['config']}",
            f"--workdir={os.path.join(sweep_dir, f'repeat_{seed}')}"]
    argv += [f"--config.{k}={v}" for k, v in best_overrides.items()] + list(sweep.get("extra", []))
    argv.append(f"--config.seed={seed}")
    cmds.append(argv)
  return cmds


def summarise(sweep_dir: str, rows, best, seeds, metric: str) -> dict:
  repeats = []
  for seed in seeds:
    path = os.path.join(sweep_dir, f"repeat_{seed}", "results.json")
    if _exists(path):
      repeats.append({"seed": seed, "test": _load(path)["test"]})
  values = [r["test"][metric]["value"] for r in repeats]
  summary = {"metric": metric, "chosen": {"index": best[0], "overrides": best[1], "val": best[2]},
             "trials": [{"index": i, "overrides": o, "val": v} for i, o, v, _ in rows],
             "repeats": repeats,
             "test_mean": float(np.mean(values)) if values else None,
             "test_std": float(np.std(values, ddof=1)) if len(values) > 1 else None}
  lines = [f"# Model selection on validation {metric}", "", "| trial | overrides | val |", "| --- | --- | --- |"]
  for i, o, v, _ in rows:
    mark = " (chosen)" if i == best[0] else ""
    val = "not finished" if v is None else f"{v:.4f}"
    lines.append(f"| {i}{mark} | {', '.join(f'{k}={x}' for k, x in o.items())} | {val} |")
  lines += ["", f"## Chosen setting on test, {len(repeats)} repeats", "", f"| seed | {metric} | 95% CI |",
            "| --- | --- | --- |"]
  for r in repeats:
    m = r["test"][metric]
    lines.append(f"| {r['seed']} | {m['value']:.4f} | [{m['ci_low']:.4f}, {m['ci_high']:.4f}] |")
  if values:
    std = f" +- {summary['test_std']:.4f}" if summary["test_std"] is not None else ""
    lines += ["", f"Mean test {metric}: {summary['test_mean']:.4f}{std} (std over repeats)."]
  summary["markdown"] = "\n".join(lines) + "\n"
  return summary


def _define_flags() -> None:
  flags.DEFINE_string("sweep_dir", None, "The --workdir_root of the sweep (holds sweep.json).")
  flags.DEFINE_string("pretrain_dir", None, "Instead of a sweep: a pretraining workdir whose monitor.json "
                      "(monitor.every > 0) picks the pretraining checkpoint, e.g. --metric=knn/top1.")
  flags.DEFINE_string("metric", "top1", "Validation metric that picks the setting (and test metric reported); "
                      "with --pretrain_dir a monitor metric (knn/top1, knn/auc, probe/top1, probe/auc, "
                      "knn/mean_auc, probe/mean_auc).")
  flags.DEFINE_bool("lower_is_better", False, "Pick the lowest value of --metric instead of the highest.")
  flags.DEFINE_integer("repeats", 5, "Re-trainings of the chosen setting (seeds 1..repeats).")
  flags.DEFINE_enum("mode", "local", ("local", "print"),
                    "local: run the repeats one after another; print: print their commands.")


def select_pretraining(workdir: str, metric: str, higher_is_better: bool = True) -> dict:
  """The pretraining step with the best monitor `metric` (the earliest on a tie) and where its
  weights are: checkpoints_best/ (monitor.keep_best), or the workdir when it is its newest checkpoint.
  Writes <workdir>/selection.json; a UserError when that step's weights were not kept."""
  path = os.path.join(workdir, "monitor.json")
  if not _exists(path):
    raise UserError(f"{path} not found: pretrain with --config.monitor.every=N (N > 0) so that the run scores its "
                    f"checkpoints, then select")
  history = [{k: float("nan") if v is None else v for k, v in h.items()} for h in _load(path)]
  names = sorted({k for h in history for k in h if k != "step"})
  if metric not in names:
    raise UserError(f"--metric={metric!r}: {path} has {names}")
  sign = 1.0 if higher_is_better else -1.0
  scored = [(sign * h[metric], -h["step"]) for h in history if np.isfinite(h[metric])]
  if not scored:
    raise UserError(f"{path}: no finite {metric} to select by")
  step = -max(scored)[1]
  value = next(h[metric] for h in history if h["step"] == step)
  kept = {}
  for folder in ("checkpoints_best", "checkpoints"):
    root = epath.Path(workdir) / folder
    kept[folder] = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
  if step in kept["checkpoints_best"]:
    checkpoint = os.path.join(workdir, "checkpoints_best")
  elif kept["checkpoints"] and step == kept["checkpoints"][-1]:
    checkpoint = workdir
  else:
    checkpoint = None
  out = {"metric": metric, "step": int(step), "value": value, "checkpoint": checkpoint,
         "history": [{"step": h["step"], metric: h[metric]} for h in history]}
  lines = [f"| step | {metric} |", "|---:|---:|"]
  lines += [f"| {h['step']}{' (chosen)' if h['step'] == step else ''} | {h[metric]:.4f} |" for h in history]
  print("\n".join(lines))
  print(f"Chosen: step {step}, {metric} = {value:.4f}")
  if checkpoint is None:
    raise UserError(f"step {step} of {workdir} is not kept (checkpoints/ holds {kept['checkpoints']}, checkpoints_best/ "
                    f"{kept['checkpoints_best']}): re-run the pretraining with --config.monitor.keep_best={metric}")
  jsonio.write_text(epath.Path(workdir) / "selection.json", json.dumps(out, indent=2))
  print(f"Its weights: --config.train.init_checkpoint={checkpoint}")
  return out


def main(argv) -> int:
  del argv  # common.run refuses positional arguments
  if bool(FLAGS.sweep_dir) == bool(FLAGS.pretrain_dir):
    raise UserError("give one of --sweep_dir (a sweep's settings) or --pretrain_dir (a pretraining run's checkpoints)")
  if FLAGS.pretrain_dir:
    select_pretraining(FLAGS.pretrain_dir, FLAGS.metric, not FLAGS.lower_is_better)
    return 0
  sweep_dir, metric = FLAGS.sweep_dir, FLAGS.metric
  sweep_file = os.path.join(sweep_dir, "sweep.json")
  if not _exists(sweep_file):
    raise UserError(f"{sweep_file} not found: run `medssl-jax sweep` with --workdir_root={sweep_dir} first")
  sweep = _load(sweep_file)
  rows = validation_table(sweep, metric)
  best = choose(rows, not FLAGS.lower_is_better)
  print(f"Chosen on validation {metric} = {best[2]:.4f}: {best[1]}")
  seeds = list(range(1, FLAGS.repeats + 1))
  for argv_ in repeat_commands(sweep, best[1], sweep_dir, seeds):
    print("+ " + shlex.join(argv_), flush=True)
    if FLAGS.mode == "local":
      subprocess.run(argv_, check=True)
  summary = summarise(sweep_dir, rows, best, seeds, metric)
  out = epath.Path(sweep_dir)
  jsonio.write_text(out / "selection.json", json.dumps({k: v for k, v in summary.items() if k != "markdown"}, indent=2))
  jsonio.write_text(out / "selection.md", summary["markdown"])
  print(summary["markdown"])
  return 0


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main)
