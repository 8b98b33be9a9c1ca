"""Study B's report (benchmarks/micle_vs_simclr.py runs it): MICLe vs SimCLR continued from one
SimCLR checkpoint on the multi-image chest X-rays, evaluated on PneumoniaMNIST."""
import os

from benchmarks import report_lib


def section(m: dict, manifest_path: str, ctx: report_lib.Context) -> list:
  """Study B's Markdown: the bag set, the pretraining runs, MICLe vs SimCLR (and the start) in linear
  evaluation with paired differences, and the label-efficiency plots (PNGs in `ctx.out_dir`)."""
  reps = m["settings"]["num_replicates"]
  bags = m["bags"]
  lines = [f"## Study B: MICLe vs SimCLR on multi-image chest X-rays ({m['scale']})", ""]
  lines += report_lib.header_lines(m, manifest_path)
  lines += [f"- **The bag set is small**: covid_cxr_multi has {bags['patients_all_splits']} patients over all splits; "
            f"continued pretraining used the `{bags['split']}` split, {bags['patients']} patients "
            f"({bags['patients_with_2plus_images']} with 2+ images) and {bags['images']} images. "
            "Differences between the arms are expected to be small and uncertain.", ""]
  for r in m["runs"]:
    if r["role"] == "pretrain":
      res = report_lib.load_json(os.path.join(r["workdir"], "results.json"))
      name = {"base": "SimCLR on PneumoniaMNIST train images (shared starting point)",
              "micle": "continued with MICLe on covid_cxr_multi",
              "simclr": "continued with SimCLR on covid_cxr_multi"}[r["arm"]]
      extra = res.get("metrics", {}).get("distinct_pairs")
      line = report_lib.pretrain_line(name, res) + (f", distinct_pairs {extra:.3f}" if extra is not None else "")
      if r["arm"] != "base":  # the continued run's optimiser, from its own config.json
        cfg = report_lib.load_json(os.path.join(r["workdir"], "config.json"))
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
                f"MICLe {k} | SimCLR {k} | Δ {k} | start {k}" for k in report_lib.METRICS)
            + " | wall time (s) |",
            "| --- | --- | --- | " + " | ".join(["---"] * 4 * len(report_lib.METRICS)) + " | --- |"]
  runs = report_lib.finished_runs(m)
  keyed = {(r["arm"], r["fraction"], r["draw"]): r for r in runs}
  for (arm, fraction, draw), mi in sorted(keyed.items()):
    if arm != "micle" or ("simclr", fraction, draw) not in keyed:
      continue
    si = keyed[("simclr", fraction, draw)]
    diff = report_lib.paired(mi, si, reps)
    cells = []
    base = keyed.get(("base", fraction, draw))
    for k in report_lib.METRICS:
      cells += [report_lib.fmt_ci(mi["results"]["test"][k]), report_lib.fmt_ci(si["results"]["test"][k]),
                report_lib.fmt_diff(diff[k]), report_lib.fmt_ci(base["results"]["test"][k]) if base else "n/a"]
    lines.append(f"| {fraction:g} | {draw} | {mi['results']['num_train_images']} | " + " | ".join(cells)
                 + f" | {report_lib.fmt_wall(mi['results'])} / {report_lib.fmt_wall(si['results'])} |")
  lines.append("")
  for k in report_lib.METRICS:
    png = f"{m['scale']}_micle_vs_simclr_{k}.png"
    title = f"MICLe vs SimCLR ({m['scale']}): linear eval {k}"
    table = report_lib.plot_lines(runs, k, os.path.join(ctx.out_dir, png), title,
                                  lambda r: f"linear_eval / {r['arm']}")
    lines += [f"Mean over draws ({k}):", "", table, f"![MICLe vs SimCLR {k}]({png})", ""]
  return lines
