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
  flags.DEFINE_string("metric", "top1", "Validation metric that picks the setting (and test metric reported).")
  flags.DEFINE_bool("lower_is_better", False, "Pick the lowest value of --metric instead of the highest.")
  flags.DEFINE_integer("repeats", 5, "Re-trainings of the chosen setting (seeds 1..repeats).")
  flags.DEFINE_enum("mode", "local", ("local", "print"),
                    "local: run the repeats one after another; print: print their commands.")
  flags.mark_flags_as_required(["sweep_dir"])


def main(argv) -> int:
  del argv  # common.run refuses positional arguments
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
