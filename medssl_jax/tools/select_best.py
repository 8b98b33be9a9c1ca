"""Model selection after a sweep (Azizi et al. 2021 Sec. 4.3): pick the trial with the best
validation metric, re-train that setting k times with other seeds, evaluate each on test, and
write a summary table.

  medssl-jax sweep --config=configs/derm_finetune.py:local --workdir_root=DIR \
      --preset azizi_finetune --mode local
  medssl-jax select-best --sweep_dir=DIR --metric=top1 --repeats=5 [--mode local|print]

Reads DIR/sweep.json (written by `medssl-jax sweep`) and every trial's results.json (its "val" metrics:
the trials need a validation split, `eval.val_split`; with `eval.eval_every` > 0 they are those
of the trial's best state during training, at its `selected_step`; CheXpert: `--metric=mean_auc`
on the `resplit_val` part of the patient re-split). Writes DIR/selection.json and
DIR/selection.md: the validation metric of every trial, the chosen overrides, and for each of
the k repeats (workdirs DIR/repeat_<seed>, `--config.seed=<seed>`) its test metrics with 95%
bootstrap intervals, plus their mean and standard deviation. Azizi et al. repeat 5 times (Derm)
or 10 times (CXR).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

import numpy as np
from etils import epath

from medssl_jax.errors import UserError


def _load(path):
  return json.loads(epath.Path(path).read_text())


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
                         f"(eval.val_split) so that a setting can be selected")
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
    argv = [sys.executable, "-m", "medssl_jax.main", f"--config={sweep['config']}",
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


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sweep_dir", required=True)
  p.add_argument("--metric", default="top1")
  p.add_argument("--lower_is_better", action="store_true")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--mode", choices=("local", "print"), default="local",
                 help="local: run the repeats one after another; print: print their commands")
  a = p.parse_args(argv)
  sweep_file = os.path.join(a.sweep_dir, "sweep.json")
  if not _exists(sweep_file):
    p.error(f"{sweep_file} not found: run `medssl-jax sweep` with --workdir_root={a.sweep_dir} first")
  sweep = _load(sweep_file)
  rows = validation_table(sweep, a.metric)
  best = choose(rows, not a.lower_is_better)
  print(f"Chosen on validation {a.metric} = {best[2]:.4f}: {best[1]}")
  seeds = list(range(1, a.repeats + 1))
  for argv_ in repeat_commands(sweep, best[1], a.sweep_dir, seeds):
    print("+ " + shlex.join(argv_), flush=True)
    if a.mode == "local":
      subprocess.run(argv_, check=True)
  summary = summarise(a.sweep_dir, rows, best, seeds, a.metric)
  out = epath.Path(a.sweep_dir)
  (out / "selection.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "markdown"}, indent=2))
  (out / "selection.md").write_text(summary["markdown"])
  print(summary["markdown"])
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
