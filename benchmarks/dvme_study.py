"""Study C: DVME (Truong et al. 2021) vs its single encoders, on cached features.

  python -m benchmarks.dvme_study --scale=smoke --workdir=workdirs/benchmarks

Per data set (the scale's; PneumoniaMNIST and BreastMNIST at `small`):
1. The encoders: Study A's SimCLR and MoCo v2 pretraining runs (the same run folders; run here
   if absent) and a randomly initialised encoder of the same architecture (seeded).
2. Their frozen features of train / val / test (`medssl-jax features`, cached under the study).
3. Heads trained with Truong's protocol (`mode='dvme'`, medssl_jax/runs/dvme.py) for each training
   regime (class-balanced Small / Medium subsets and Full, the scale's `train_sizes`) and fold
   (another draw of the subset): on all encoders concatenated (`concat`, the paper's ablation) and
   DVME, and, as an extra column, the DVME head without attention on each single encoder
   (`<encoder>_mlp`: an MLP on its features alone).
4. The paper's single-encoder baseline (Table 4 compares DVME with Table 2's linear evaluation):
   each encoder's linear evaluation on the images (`linear_<encoder>`, mode='linear_eval', Truong's
   App. B.1 loop: Adam 1e-3, batch 64 or the subset, one validation per epoch on the loss,
   ReduceLROnPlateau 0.1 / 5, early stop 10, not before min(30, epochs) epochs; at a scale without a
   validation split the fixed length) on the same subset and fold (finetune.train_size / fold draw
   the same rows as the heads).
`--encoders=name=dir,...` adds encoders a user points at (a workdir of this project or a folder
written by `medssl-jax import-weights`, e.g. an ImageNet ResNet-50): each is benchmarked alone,
and `concat_all` / `dvme_all` fuse every encoder (the three above and these); their features are
taken with the encoder's own model settings and channels (its config.json) at the study's image
size. Finished runs are skipped on a re-run. Writes <workdir>/<scale>/dvme/study.json; `benchmarks.report`
turns it into its section (benchmarks/dvme_study_report.py: mean and std over folds, per-source attention).
"""
import argparse
import os
import time

import jax
import numpy as np

from benchmarks import common
from benchmarks import label_efficiency as study_a
from benchmarks import transfer
from configs import truong_dvme
from medssl_jax import errors
from medssl_jax.commands import features
from medssl_jax.runs import classify
from input_pipeline import subsets
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training.sharding import make_mesh

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
  the smallest class's count) images (exactly: subsets.largest_balanced_size); a larger size is capped there and the note says so
  (BreastMNIST's training split has 147 malignant images: Medium's 500 becomes 294). Truong et
  al.'s Small / Medium counts are per data set (their Table 1); these are PneumoniaMNIST's."""
  labels = np.asarray(train_labels).ravel()
  classes, counts = np.unique(labels, return_counts=True)
  cap = subsets.largest_balanced_size(labels)  # what subsets.training_subset can draw
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
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  if ck.latest_step() is None:
    ck.save(0, classify.create_state(data_config(path, s), make_mesh(), num_outputs=2, rng=jax.random.key(seed)))
  ck.close()
  return workdir


def cached_features(config, checkpoint: str, out_template: str) -> str:
  """Features of every split of `checkpoint` under `out_template` ('{split}'), extracted once."""
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
  arms = [(f"{name}_mlp", f"{name}={spec[name]}", False) for name in list(ENCODERS) + list(extras)]
  three = ",".join(f"{n}={spec[n]}" for n in ENCODERS)
  arms += [("concat", three, False), ("dvme", three, True)]
  if extras:
    every = ",".join(f"{n}={spec[n]}" for n in list(ENCODERS) + list(extras))
    arms += [("concat_all", every, False), ("dvme_all", every, True)]
  return arms


def encoder_data_config(path: str, s: dict, folder: str):
  """data_config with the model settings and channels stored with the checkpoint at `folder`."""
  model, channels = transfer.encoder_settings(folder)
  c = data_config(path, s)
  with c.unlocked():
    for k, v in model.items():
      c.model[k] = v
    c.data.channels = channels
  return c


def linear_config(path: str, s: dict, d: dict, checkpoint: str, size: int, fold: int):
  """Truong et al.'s linear evaluation (App. B.1) of the encoder at `checkpoint` on the images of the
  class-balanced subset (`size`, `fold`; 0: Full) the heads train on; batch 64 or less where the
  subset cannot fill it (common.labelled_batch's rule)."""
  c = data_config(path, s)
  with c.unlocked():
    c.finetune.init, c.train.init_checkpoint = "pretrained", os.path.abspath(checkpoint)
    c.finetune.train_size, c.finetune.fold = size, fold
    c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "adam", 1e-3, "none"
    c.optim.schedule, c.optim.weight_decay, c.optim.warmup_steps = "constant", 0.0, 0
    labelled = size or common.labelled_batch(c.data, 1.0, 0, 64)[1]
    c.train.batch_size = min(64, max(labelled // common.num_devices(), 1) * common.num_devices())
    c.finetune.repeat_to_fill_batch = c.train.batch_size > labelled
    c.finetune.num_epochs, c.finetune.eval_every, c.finetune.eval_every_epochs = float(d["epochs"]), 0, 1.0
    c.finetune.min_epochs = float(min(30, d["epochs"]))
    c.finetune.plateau_factor, c.finetune.plateau_patience, c.finetune.early_stop_patience = 0.1, 5, 10
    c.finetune.select_metric = "loss"
    if not c.finetune.val_split:  # a scale without a validation split: the fixed length, the last state
      c.finetune.eval_every_epochs, c.finetune.min_epochs, c.finetune.select_metric = 0.0, 0.0, ""
      c.finetune.plateau_factor, c.finetune.early_stop_patience = 0.0, 0
  return c


def head_config(spec: str, attention: bool, size: int, fold: int, d: dict, s: dict):
  c = truong_dvme.get_config("" if attention else "concat")
  with c.unlocked():
    c.dvme.features = spec
    c.finetune.train_size, c.finetune.fold, c.dvme.epochs = size, fold, d["epochs"]
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
        runs = [(f"linear_{name}", linear_config(path, s, d, ready.get(name) or extras[name], size, fold))
                for name in list(ENCODERS) + list(extras)]
        runs += [(arm, head_config(sources, attention, size, fold, d, s)) for arm, sources, attention in arms]
        for arm, c in runs:
          wd = os.path.join(root, dataset, regime_name(size), f"fold{fold}", arm)
          print(f"[{STUDY}] {dataset}: {arm}, {regime_name(size)}, fold {fold}")
          done = common.run_once(c, wd, run=run)
          common.add_run(manifest, {"role": "eval", "dataset": dataset, "arm": arm, "regime": regime_name(size),
                                    "train_size": size, "fold": fold, "workdir": os.path.abspath(wd)}, done)
  return common.finish_study(root, manifest, t0, STUDY)


if __name__ == "__main__":
  raise SystemExit(errors.guard(main)())  # a UserError: one line `error: ...`, exit 2
