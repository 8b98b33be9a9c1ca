"""Study C: DVME (Truong et al. 2021) vs its single encoders, on cached features.

  python -m benchmarks.dvme_study --scale=smoke --workdir=workdirs/benchmarks

Per data set (the scale's; PneumoniaMNIST and BreastMNIST at `small`):
1. The encoders: Study A's SimCLR and MoCo v2 pretraining runs (the same run folders; run here
   if absent) and a randomly initialised encoder of the same architecture (seeded).
2. Their frozen features of train / val / test (`medssl-jax features`, cached under the study).
3. Heads trained with Truong's protocol (`mode='dvme'`, medssl_jax/fusion.py) for each training
   regime (class-balanced Small / Medium subsets and Full, the scale's `train_sizes`) and fold
   (another draw of the subset): the same head on each single encoder (no attention, one
   source), on all encoders concatenated (`concat`, the paper's ablation) and DVME.
`--encoders=name=dir,...` adds encoders a user points at (a workdir of this project or a folder
written by `medssl-jax import-weights`, e.g. an ImageNet ResNet-50): each is benchmarked alone,
and `concat_all` / `dvme_all` fuse every encoder (the three above and these); their features are
taken with the encoder's own model settings and channels (its config.json) at the study's image
size. Finished runs are skipped on a re-run. Writes <workdir>/<scale>/dvme/study.json; `benchmarks.report`
turns it into its section (mean and std over folds, per-source attention).
"""
import argparse
import os
import time

import numpy as np

from benchmarks import common
from benchmarks import label_efficiency as study_a

MODULE = "benchmarks.dvme_study"
STUDY = "dvme"
ENCODERS = ("simclr", "moco_v2", "random")
SPLITS = ("train", "val", "test")
# Training regimes (0 = Full) and folds per scale; Small / Medium are Truong's Pneumonia CXR sizes
# (Table 1: 50 / 500), head sizes the paper's at small and full.
DVME_SCALES = {
    "smoke": dict(train_sizes=(20, 0), folds=1, epochs=2, proj_dim=16, heads=2),
    "small": dict(train_sizes=(50, 500, 0), folds=5, epochs=50, proj_dim=512, heads=8),
    "full": dict(train_sizes=(50, 500, 0), folds=5, epochs=50, proj_dim=512, heads=8),
}


def regime_name(size: int) -> str:
  return "full" if size == 0 else f"n{size}"


def feasible_sizes(train_labels, sizes) -> list:
  """(size asked, size used, note) per regime. A class-balanced subset holds at most about (classes x
  the smallest class's count) images (exactly: fusion.largest_balanced_size); a larger size is capped there and the note says so
  (BreastMNIST's training split has 147 malignant images: Medium's 500 becomes 294). Truong et
  al.'s Small / Medium counts are per data set (their Table 1); these are PneumoniaMNIST's."""
  from medssl_jax import fusion
  labels = np.asarray(train_labels).ravel()
  classes, counts = np.unique(labels, return_counts=True)
  cap = fusion.largest_balanced_size(labels)  # what fusion.training_subset can draw
  out = []
  for size in sizes:
    if size and size > cap:
      c = classes[int(np.argmin(counts))]
      out.append((size, cap, f"train_size {size} -> {cap}: class {c} has {counts.min()} training images"))
    else:
      out.append((size, size, ""))
  return out


def data_config(path: str, s: dict):
  """The data, architecture and evaluation preprocessing every encoder's features are taken with."""
  return study_a.eval_config(path, s, mode="linear_eval", init="random", checkpoint="", fraction=1.0, draw=0)


def random_encoder(path: str, s: dict, workdir: str, seed: int = 0) -> str:
  """A checkpoint of a randomly initialised encoder (seeded), made once."""
  import jax
  from medssl_jax import finetune
  from medssl_jax.training import checkpoint as ckpt_lib
  from medssl_jax.training.sharding import make_mesh
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  if ck.latest_step() is None:
    ck.save(0, finetune.create_state(data_config(path, s), make_mesh(), num_outputs=2, rng=jax.random.key(seed)))
  ck.close()
  return workdir


def cached_features(config, checkpoint: str, out_template: str) -> str:
  """Features of every split of `checkpoint` under `out_template` ('{split}'), extracted once."""
  from medssl_jax import features
  for split in SPLITS:
    out = out_template.format(split=split)
    if not os.path.isfile(out):
      features.save(out, features.extract(config, checkpoint, split), checkpoint=checkpoint, split=split,
                    config=config)
  return out_template


def parse_extra_encoders(spec: str) -> dict:
  """{name: folder} of `--encoders` ('name=dir,...'); names must not clash with the study's own."""
  out = {}
  for item in filter(None, (x.strip() for x in spec.split(","))):
    name, sep, folder = item.partition("=")
    if not sep or not name or not folder:
      raise SystemExit(f"--encoders: {item!r}: use name=<checkpoint folder>")
    if name in ENCODERS or name in ("concat", "dvme", "concat_all", "dvme_all") or name in out:
      raise SystemExit(f"--encoders: name {name!r} is taken; choose another")
    out[name] = folder
  return out


def plan_arms(spec: dict, extras: list) -> list:
  """(arm, dvme.features, attention) per head: each encoder alone, then the study's three encoders
  concatenated and fused ('concat', 'dvme'), and with extra encoders all of them ('concat_all',
  'dvme_all'), so the three-encoder arms stay what they are whatever is added."""
  arms = [(name, f"{name}={spec[name]}", False) for name in list(ENCODERS) + list(extras)]
  three = ",".join(f"{n}={spec[n]}" for n in ENCODERS)
  arms += [("concat", three, False), ("dvme", three, True)]
  if extras:
    every = ",".join(f"{n}={spec[n]}" for n in list(ENCODERS) + list(extras))
    arms += [("concat_all", every, False), ("dvme_all", every, True)]
  return arms


def encoder_data_config(path: str, s: dict, folder: str):
  """data_config with the model settings and channels stored with the checkpoint at `folder`."""
  from benchmarks import transfer
  model, channels = transfer.encoder_settings(folder)
  c = data_config(path, s)
  with c.unlocked():
    for k, v in model.items():
      c.model[k] = v
    c.data.channels = channels
  return c


def head_config(spec: str, attention: bool, size: int, fold: int, d: dict, s: dict):
  from configs import truong_dvme
  c = truong_dvme.get_config("" if attention else "concat")
  with c.unlocked():
    c.dvme.features = spec
    c.dvme.train_size, c.dvme.fold, c.dvme.epochs = size, fold, d["epochs"]
    c.dvme.proj_dim = c.dvme.hidden_dim = d["proj_dim"]
    c.dvme.num_heads = d["heads"]
    # t-SNE maps only on fold 0 of the Full subset: they are for looking at, and cost more than the head
    c.dvme.tsne = fold == 0 and size == 0
    c.eval.num_replicates = s["num_replicates"]
  return c


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  common.add_common_flags(p)
  p.add_argument("--datasets", default="", help="comma-separated subset (default: the scale's)")
  p.add_argument("--encoders", default="", help="extra encoders, name=<checkpoint folder>,... (module docstring)")
  a = p.parse_args(argv)
  extras = parse_extra_encoders(a.encoders)
  s = dict(common.SCALES[a.scale])
  d = DVME_SCALES[a.scale]
  if a.datasets:
    s["datasets"] = tuple(a.datasets.split(","))
  t0, run = time.time(), not a.only_finished
  root = common.study_dir(a.workdir, a.scale, STUDY)
  manifest = {"study": STUDY, "scale": a.scale, "command": common.command_line(MODULE, argv),
              "machine": common.machine_record(), "settings": dict(s, dvme=d), "runs": [],
              "extra_encoders": {n: os.path.abspath(f) for n, f in extras.items()},
              "data": [common.data_record(os.path.join(a.data_dir, study_a.FILES[x])) for x in s["datasets"]]}
  for dataset in s["datasets"]:
    path = os.path.join(a.data_dir, study_a.FILES[dataset])
    print(f"[{STUDY}] {dataset}: encoders")
    pre = {"simclr": common.pretrain_dir(a.workdir, a.scale, dataset),
           "moco_v2": study_a.moco_pretrain_dir(a.workdir, a.scale, dataset)}
    ready = {}
    for name, cfg in (("simclr", study_a.pretrain_config(path, s)), ("moco_v2", study_a.moco_pretrain_config(path, s))):
      done = common.run_once(cfg, pre[name], run=run)
      common.add_run(manifest, {"role": "pretrain", "method": name, "dataset": dataset,
                                "workdir": os.path.abspath(pre[name])}, done)
      if done is not None:
        ready[name] = pre[name]
    if run:
      ready["random"] = random_encoder(path, s, os.path.join(root, dataset, "random_init"))
    if set(ready) != set(ENCODERS):
      manifest.setdefault("missing", []).append(f"{dataset}: encoders {sorted(set(ENCODERS) - set(ready))}")
      continue
    config = data_config(path, s)
    spec = {}
    for name in ENCODERS:
      print(f"[{STUDY}] {dataset}: features of {name}")
      spec[name] = cached_features(config, os.path.abspath(ready[name]),
                                   os.path.join(root, dataset, "features", f"{name}_{{split}}.npz"))
    for name, folder in extras.items():
      print(f"[{STUDY}] {dataset}: features of {name} ({folder})")
      spec[name] = cached_features(encoder_data_config(path, s, folder), os.path.abspath(folder),
                                   os.path.join(root, dataset, "features", f"{name}_{{split}}.npz"))
    arms = plan_arms(spec, list(extras))
    with np.load(path) as f:
      sizes = feasible_sizes(f["train_labels"], d["train_sizes"])
    for _, size, note in sizes:
      if note:
        print(f"[{STUDY}] {dataset}: {note}")
        manifest.setdefault("capped", []).append(f"{dataset}: {note}")
      for fold in range(d["folds"] if size else 1):
        for arm, sources, attention in arms:
          wd = os.path.join(root, dataset, regime_name(size), f"fold{fold}", arm)
          print(f"[{STUDY}] {dataset}: {arm}, {regime_name(size)}, fold {fold}")
          c = head_config(sources, attention, size, fold, d, s)
          done = common.run_once(c, wd, run=run)
          common.add_run(manifest, {"role": "eval", "dataset": dataset, "arm": arm, "regime": regime_name(size),
                                    "train_size": size, "fold": fold, "workdir": os.path.abspath(wd)}, done)
  return common.finish_study(root, manifest, t0, STUDY)


def section(m: dict, manifest_path: str, out_dir: str = "") -> list:
  """The report's Markdown for a study.json of this study: per data set and regime, each arm's
  test AUC and accuracy as mean and std over folds (and the folds' bootstrap intervals when one
  fold), and DVME's mean attention per source. With `out_dir`, also per data set and regime a heat
  map of DVME's attention per class and source, averaged over folds (Truong et al. App. F, drawn from
  the runs' results.json), and per data set the t-SNE PNG of the DVME embedding that its
  largest regime's first fold wrote (copied, its run folder named)."""
  from benchmarks import report
  lines = ["## Study C: DVME vs single encoders on cached features", ""] + report.header_lines(m, manifest_path)
  d = m["settings"]["dvme"]
  lines += [f"- Heads: Truong et al.'s protocol (Adam 1e-3, batch 64, plateau 0.1 / 5, early stopping 10 on "
            f"the validation loss, at most {d['epochs']} epochs), projection width {d['proj_dim']}, {d['heads']} "
            f"heads; single encoders train the same head without attention on their features alone"]
  lines += [f"- Class-balanced subset capped by the data: {note}" for note in m.get("capped", [])] + [""]
  runs = report.finished_runs(m)
  for dataset in sorted({r["dataset"] for r in runs}):
    for regime in [x for x in dict.fromkeys(r["regime"] for r in runs if r["dataset"] == dataset)]:
      cell = [r for r in runs if r["dataset"] == dataset and r["regime"] == regime]
      folds = sorted({r["fold"] for r in cell})
      lines += [f"### {dataset}, training set {regime} ({len(folds)} fold(s))", "",
                "| arm | test AUC | test top-1 | epochs run (best) |", "| --- | --- | --- | --- |"]
      for arm in dict.fromkeys(r["arm"] for r in cell):
        rs = [r["results"] for r in cell if r["arm"] == arm]
        lines.append(f"| {arm} | {_agg(rs, 'auc')} | {_agg(rs, 'top1')} | "
                     + ", ".join(f"{r['epochs_run']} ({r['best_epoch']})" for r in rs) + " |")
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
  import matplotlib.pyplot as plt
  from medssl_jax.evaluation import attention_plot
  mean = {"sources": att[0]["sources"], "classes": att[0].get("classes"),
          "weights": np.mean([a["weights"] for a in att], axis=0).tolist(),
          "mean": np.mean([a["mean"] for a in att], axis=0).tolist()}
  fig = attention_plot.attention_figure({"attention_by_class": mean})
  fig.axes[0].set_title(f"attention each source receives, mean per class over {len(att)} fold(s)", fontsize=9)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def tsne_lines(m: dict, runs: list, dataset: str, out_dir: str) -> list:
  """The DVME embedding's t-SNE of the data set's largest regime, fold 0 (a PNG the run drew)."""
  import shutil
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


def _agg(results: list, metric: str) -> str:
  vals = [r["test"][metric]["value"] for r in results if metric in r["test"]]
  if not vals:
    return "n/a"
  if len(vals) == 1:  # one fold: its bootstrap interval
    m = results[0]["test"][metric]
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
  return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"


if __name__ == "__main__":
  from medssl_jax import errors
  raise SystemExit(errors.guard(main)())  # a UserError: one line `error: ...`, exit 2
