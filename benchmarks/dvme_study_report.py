"""Study C's report (benchmarks/dvme_study.py runs it): DVME vs its single encoders on cached
features, mean and std over folds, and the attention DVME gives each source."""
import os
import shutil

import numpy as np

from benchmarks import report_lib
from medssl_jax.evaluation import attention_plot


def section(m: dict, manifest_path: str, ctx: report_lib.Context) -> list:
  """The report's Markdown for a study.json of this study: per data set and regime, each arm's
  test AUC and accuracy as mean and std over folds (and the folds' bootstrap intervals when one
  fold), and DVME's mean attention per source. With `ctx.out_dir`, also per data set and regime a heat
  map of DVME's attention per class and source, averaged over folds (Truong et al. App. F, drawn from
  the runs' results.json), and per data set the t-SNE PNG of the DVME embedding that its
  largest regime's first fold wrote (copied, its run folder named)."""
  lines = ["## Study C: DVME vs single encoders on cached features", ""] + report_lib.header_lines(m, manifest_path)
  d = m["settings"]["dvme"]
  lines += [f"- Heads: Truong et al.'s protocol (Adam 1e-3, batch 64, plateau 0.1 / 5, early stopping 10 on "
            f"the validation loss, at most {d['epochs']} epochs), projection width {d['proj_dim']}, {d['heads']} "
            f"heads. Single encoders: the paper's baseline (Table 4 against Table 2), each encoder's linear "
            f"evaluation on the images of the same subset (`linear_<encoder>`, Truong's App. B.1 loop, one "
            f"validation per epoch); and, an extra column not in the paper, the DVME head without attention on "
            f"its features alone (`<encoder>_mlp`)"]
  lines += [f"- Class-balanced subset capped by the data: {note}" for note in m.get("capped", [])] + [""]
  runs = report_lib.finished_runs(m)
  out_dir = ctx.out_dir
  for dataset in sorted({r["dataset"] for r in runs}):
    for regime in [x for x in dict.fromkeys(r["regime"] for r in runs if r["dataset"] == dataset)]:
      cell = [r for r in runs if r["dataset"] == dataset and r["regime"] == regime]
      folds = sorted({r["fold"] for r in cell})
      lines += [f"### {dataset}, training set {regime} ({len(folds)} fold(s))", "",
                "| arm | test AUC | test top-1 | length run (best) |", "| --- | --- | --- | --- |"]
      for arm in sorted(dict.fromkeys(r["arm"] for r in cell), key=_arm_order):
        rs = [r["results"] for r in cell if r["arm"] == arm]
        lines.append(f"| {arm} | {_agg(rs, 'auc')} | {_agg(rs, 'top1')} | " + ", ".join(map(_length, rs)) + " |")
      for fused in [a for a in dict.fromkeys(r["arm"] for r in cell) if a in ("dvme", "dvme_all")]:
        att = [r["results"]["attention_by_class"] for r in cell if r["arm"] == fused
               and "attention_by_class" in r["results"]]
        if not att:
          continue
        mean = np.mean([a["mean"] for a in att], axis=0)
        lines += ["", f"{'DVME' if fused == 'dvme' else 'DVME over all encoders'} attention received per source "
                  "(test mean over folds): " + ", ".join(f"{n} {w:.3f}" for n, w in zip(att[0]["sources"], mean))]
        if out_dir:
          png = f"{m['scale']}_{fused}_attention_{dataset}_{regime}.png"
          attention_png(att, os.path.join(out_dir, png))
          lines += ["", f"![{fused} attention per class, {dataset} {regime}]({png})"]
      lines.append("")
    if out_dir:
      lines += tsne_lines(m, [r for r in runs if r["dataset"] == dataset], dataset, out_dir)
  return lines


def attention_png(att: list, path: str) -> None:
  """The heat map of medssl_jax.evaluation.attention_plot for the folds' attention_by_class, averaged
  (each fold's rows sum to 1, so their mean does too; a class without test images in a fold is NaN)."""
  import matplotlib.pyplot as plt  # here, as medssl_jax.evaluation's plots: only drawing needs it
  mean = {"sources": att[0]["sources"], "classes": att[0].get("classes"),
          "weights": np.mean([a["weights"] for a in att], axis=0).tolist(),
          "mean": np.mean([a["mean"] for a in att], axis=0).tolist()}
  fig = attention_plot.attention_figure({"attention_by_class": mean})
  fig.axes[0].set_title(f"attention each source receives, mean per class over {len(att)} fold(s)", fontsize=9)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def tsne_lines(m: dict, runs: list, dataset: str, out_dir: str) -> list:
  """The DVME embedding's t-SNE of the data set's largest regime, fold 0 (a PNG the run drew)."""
  dv = [r for r in runs if r["arm"] == "dvme" and r["fold"] == 0
        and os.path.isfile(os.path.join(r["workdir"], "tsne_dvme.png"))]
  if not dv:
    return []
  run = max(dv, key=lambda r: r["train_size"] or float("inf"))  # train_size 0 = Full
  png = f"{m['scale']}_dvme_tsne_{dataset}.png"
  shutil.copyfile(os.path.join(run["workdir"], "tsne_dvme.png"), os.path.join(out_dir, png))
  return [f"t-SNE of the DVME embedding of the test images, coloured by class ({run['regime']}, fold 0; drawn by "
          f"that run, `{run['workdir']}/tsne_dvme.png`; each source's own t-SNE is beside it):", "",
          f"![t-SNE DVME {dataset}]({png})", ""]


def _arm_order(arm: str) -> tuple:
  """The paper's baseline (linear evaluation) first, then the fusions, then the extra MLP heads."""
  return (0 if arm.startswith("linear_") else 2 if arm.endswith("_mlp") else 1, arm)


def _length(r: dict) -> str:
  """A head's epochs run (best epoch); a linear evaluation's steps run (selected step)."""
  if "epochs_run" in r:
    return f"{r['epochs_run']} ({r['best_epoch']})"
  return f"{r['final_step']} steps ({r.get('selected_step', r['final_step'])})"


def _agg(results: list, metric: str) -> str:
  vals = [r["test"][metric]["value"] for r in results if metric in r["test"]]
  if not vals:
    return "n/a"
  if len(vals) == 1:  # one fold: its bootstrap interval
    m = results[0]["test"][metric]
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
  return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"
