"""Label-efficiency plot: a test metric against the label fraction, one line per initialisation.

  medssl-jax label-efficiency --metric=top1 --out=label_efficiency.png \
      workdirs/ft_*/results.json

Each results.json of a fine-tuning / linear-evaluation run contributes one point (its
`label_fraction`, its test metric with the bootstrap 95% interval). Runs are grouped into lines
by "<mode> / <init>" (or by --group_by); several draws of one fraction are averaged and the
interval drawn is the mean of the draws' intervals. A Markdown table with the same numbers is
written beside the PNG.
"""
import collections
import io
from typing import Sequence

import numpy as np

from medssl_jax import jsonio


def load_points(paths: Sequence[str], metric: str, group_by: str = "") -> dict:
  """{line label: {fraction: [(value, ci_low, ci_high), ...]}} from results.json files."""
  lines = collections.defaultdict(lambda: collections.defaultdict(list))
  for path in paths:
    r = jsonio.read_json(path)
    if "test" not in r:
      raise ValueError(f"{path} has no test metrics (is it a finished fine-tuning/linear-eval run?)")
    if metric not in r["test"]:
      raise ValueError(f"{path}: no test metric {metric!r}; it has {sorted(r['test'])}")
    m = r["test"][metric]
    label = str(r.get(group_by)) if group_by else f"{r.get('mode')} / {r.get('init')}"
    lines[label][float(r["label_fraction"])].append((m["value"], m["ci_low"], m["ci_high"]))
  return {k: dict(v) for k, v in lines.items()}


def summarise(points: dict) -> dict:
  """{label: [(fraction, n_draws, mean value, mean ci_low, mean ci_high), ...]} sorted by fraction."""
  out = {}
  for label, by_fraction in points.items():
    rows = []
    for fraction in sorted(by_fraction):
      arr = np.asarray(by_fraction[fraction], np.float64)
      rows.append((fraction, len(arr), *arr.mean(axis=0)))
    out[label] = rows
  return out


def markdown_table(summary: dict, metric: str) -> str:
  lines = [f"| initialisation | label fraction | draws | {metric} | 95% CI |", "| --- | --- | --- | --- | --- |"]
  for label, rows in summary.items():
    for fraction, n, value, lo, hi in rows:
      lines.append(f"| {label} | {fraction:g} | {n} | {value:.4f} | [{lo:.4f}, {hi:.4f}] |")
  return "\n".join(lines) + "\n"


def plot(summary: dict, metric: str, out_png: str, title: str = "") -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for label, rows in summary.items():
    f, _, v, lo, hi = (np.array(c) for c in zip(*rows))
    ax.errorbar(f * 100, v, yerr=[v - lo, hi - v], marker="o", capsize=3, label=label)
  ax.set_xscale("log")
  ax.set_xlabel("labelled training data (%)")
  ax.set_ylabel(f"test {metric} (95% bootstrap CI)")
  ax.set_title(title or f"Label efficiency: {metric}")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  plt.close(fig)
  jsonio.write_bytes(out_png, buf.getvalue())
