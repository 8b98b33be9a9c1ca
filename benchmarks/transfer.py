"""Transfer benchmark: many encoders x tasks x N fine-tuning runs, t-tests against a reference, report.

  python -m benchmarks.transfer --scale=smoke --workdir=workdirs/benchmarks
  python -m benchmarks.transfer --scale=small --encoders=random,simclr=simclr:pneumoniamnist,\
imagenet=weights/resnet50_imagenet,imagenet_cxr=adapt:weights/resnet50_imagenet \
--tasks=pneumoniamnist,breastmnist --runs=10 --reference=random
  python -m benchmarks.transfer --scale=small --report_only      # the report from the result files

The protocol of Hosseinzadeh Taher et al. 2021 (papers/hosseinzadeh2021_transfer_benchmark.txt,
App. "Training parameters"; PROTOCOLS.md section 3): every layer fine-tuned, Adam (0.9, 0.999),
lr 2e-4 for X-ray classification and 1e-3 with cosine decay for segmentation, "early-stop mechanism
using the 10% of the training data as the validation set", N = 10 runs per (encoder, task), mean
and standard deviation, an independent two-sample t-test between models. What runs here:

* **Hold-out.** 10% of each task's training split (stratified by label, per case, with the
  project's `input_pipeline.fractions.sample_fraction`, draw 0) becomes the validation split
  'holdout'; the remaining 90% ('fit') is trained on; the test split is the task's own. One
  hold-out per task, the same for every encoder and run (reading: the paper does not say whether
  it redraws it per run). It is written once as a derived file under `<study>/data/` (an .npz
  with fit / holdout / test arrays, or a manifest CSV with the split column rewritten), whose md5
  the report lists. The task's own validation split (MedMNIST 'val') is not used. Segmentation on
  `data.source='seg_manifest'` (configs/lung_segmentation.py) already splits per patient with
  `seg.val_fraction=0.1` of the training patients as 'val': that split is used as it is.
* **Early stopping and ReduceLROnPlateau.** The fine-tuning loop scores the hold-out every
  `eval_every` steps (`finetune.eval_every`) and tests the state with the best hold-out metric
  (`finetune.select_metric`: AUC for classification, Dice for segmentation; results.json:
  `selected_step`). With the scale's `stop_patience` > 0 (`finetune.early_stop_patience`; segmentation
  `seg_stop_patience`) training ends after that many hold-out scores without improvement
  (medssl_jax/training/validation.py), and classification multiplies its lr by `PLATEAU_FACTOR`
  after `plateau_patience` such scores (`finetune.plateau_factor`; segmentation keeps the paper's
  cosine decay). The paper gives neither patience; `full` takes Truong et al.'s (lr 5, stop 10,
  factor 0.1), counted in hold-out scores, not epochs. `small` (a choice for a 2-core CPU, not
  the paper's): classification up to 300 steps (4.5 epochs of PneumoniaMNIST's fit images at batch
  64), hold-out every 20 steps, lr cut after 3 and stop after 6 scores without improvement (60 and
  120 steps: 0.9 and 1.8 PneumoniaMNIST epochs; a first try scoring every 10 steps cut the lr of a
  random-init run at step 40, in the noisy first hold-out scores); segmentation up to 120 steps,
  hold-out every 20, stop after 3. (Until 2026-11-27 `small` ran a fixed 100 steps at constant lr,
  hold-out every 25: the runs in docs/benchmarks/report.md; the current loop's: docs/benchmarks/transfer/.)
  "Steps (epochs) to early stop" in the report is the selected step, and that
  many steps x batch / fit images in epochs; the report says how many runs stopped early.
* **Encoders** (`--encoders`, comma-separated; `name=` sets the report's name):
  `random` (random init, the scale's ResNet-18); `name=random:<other encoder>` (random init with
  that encoder's architecture); `name=<dir>` (a workdir or checkpoint of this project, or one
  written by `medssl-jax import-weights`); `name=simclr:<pneumoniamnist|breastmnist>` (the SimCLR
  pretraining run that Study A shares, `common.pretrain_dir`, trained here when absent);
  the domain-adaptive arms, which start from the checkpoint `<dir>` (e.g. imported ImageNet weights),
  train on the chest X-rays of `--adapt_data` for the scale's `adapt_steps`, then are benchmarked
  like any other encoder: `name=adapt_supervised:<dir>` (the paper's arm, ImageNet -> CheXpert /
  ChestX-ray14 in its Table 2: supervised fine-tuning of all layers on the adapt data's labels, Adam
  at the classification lr, constant) and `name=adapt_ssl:<dir>` (SimCLR pretraining continued on
  the same images, labels unused; `adapt:<dir>` is its earlier spelling). The report names each
  encoder's kind. With the default adapt data (PneumoniaMNIST's train split) the supervised arm has
  seen the pneumoniamnist task's training labels: a run with both is refused (leave the task out). Each encoder
  brings its own `model.*` settings and channel count (read from its config.json), so an imported
  ResNet-50 is fine-tuned as a ResNet-50 with ImageNet input normalisation on 3-channel images.
* **Tasks** (`--tasks`): `pneumoniamnist`, `breastmnist` (classification, the npz files in
  `--data_dir`, 28 px, `configs/chexpert_finetune.py:local` augmentation) or
  `name=<config file>[:variant]` (separate the tasks with ';' when a variant has commas:
  `--tasks="pneumoniamnist;lungseg=configs/lung_segmentation.py:small,size=32"`) (any fine-tuning config, e.g. a segmentation config with
  `finetune.task='segmentation'`; its data, image size and augmentation are kept; the protocol's
  optimiser, length, hold-out and the encoder's architecture are set).
* **Runs**: run r has seed r (`config.seed`: head initialisation, batch order, augmentation);
  recorded in the manifest and in each results.json. Finished runs are skipped on a re-run and an
  interrupted one resumes from its checkpoint (`benchmarks.common.run_once`).

Writes `<workdir>/<scale>/transfer/study.json` and the report (`<out>/transfer_<scale>.md` and a
bar chart per task, mean with +- 1 standard deviation error bars) built only from the result files
by benchmarks/transfer_report.py, whose section `benchmarks.report` also puts into report.md.
"""
import argparse
import dataclasses
import importlib.util
import os
import time

import numpy as np
import pandas as pd

from benchmarks import common
from benchmarks import label_efficiency
from benchmarks import transfer_report  # the command writes its report after the runs (it imports nothing of this)
from configs import chexpert_finetune
from input_pipeline import fractions
from input_pipeline import sources
from medssl_jax import errors
from medssl_jax import weights
from medssl_jax.errors import UserError
from medssl_jax.training import checkpoint as ckpt_lib

MODULE = "benchmarks.transfer"
STUDY = "transfer"
FILES = {"pneumoniamnist": "pneumoniamnist.npz", "breastmnist": "breastmnist.npz"}
# Scale settings of this study; width, pretraining batch and bootstrap replicates are common.SCALES'.
# Classification runs: `steps` of batch `finetune_batch`, hold-out scored every `eval_every` steps;
# segmentation runs: `seg_steps` of the task config's own batch, scored every `seg_eval_every`.
# small is sized for a 2-core CPU (at most ~5.5 min a classification run, 1.1 s a step at batch 64,
# stop 25's timing): the paper's lengths are for a GPU ('full').
SCALES = {
    "smoke": dict(runs=2, steps=4, eval_every=2, finetune_batch=16, seg_steps=4, seg_eval_every=2,
                  tasks=("breastmnist",), adapt_steps=4, plateau_patience=1, stop_patience=1, seg_stop_patience=1),
    "small": dict(runs=10, steps=300, eval_every=20, finetune_batch=64, seg_steps=120, seg_eval_every=20,
                  tasks=("pneumoniamnist", "breastmnist"), adapt_steps=100, plateau_patience=3, stop_patience=6,
                  seg_stop_patience=3),
    "full": dict(runs=10, steps=2000, eval_every=100, finetune_batch=512, seg_steps=900, seg_eval_every=40,
                 tasks=("pneumoniamnist", "breastmnist"), adapt_steps=2000, plateau_patience=5, stop_patience=10,
                 seg_stop_patience=10),
}
DEFAULT_ENCODERS = "random,simclr=simclr:pneumoniamnist"
HOLDOUT_FRACTION, HOLDOUT_SEED = 0.1, 0   # "10% of the training data as the validation set"
PLATEAU_FACTOR = 0.1   # ReduceLROnPlateau's factor: PyTorch's default and Truong et al.'s (the paper gives none)
HOLDOUT, FIT = "holdout", "fit"
CLASSIFICATION_LR, SEGMENTATION_LR = 2e-4, 1e-3
# The model settings an encoder's weights fix (copied from its config.json into every run).
MODEL_KEYS = ("arch", "depth", "width", "stem", "downsample_padding", "bottleneck_width", "input_norm")


@dataclasses.dataclass
class Encoder:
  name: str
  kind: str        # 'random' | 'checkpoint' | 'simclr' | 'adapt_ssl' | 'adapt_supervised'
  source: str = ""  # random: the encoder whose architecture it takes; checkpoint/adapt_*: a dir; simclr: a data set
  path: str = ""    # the checkpoint the runs load (resolved)
  model: dict = dataclasses.field(default_factory=dict)
  channels: int = common.CHANNELS


@dataclasses.dataclass
class Task:
  name: str
  kind: str        # 'medmnist' | 'config'
  source: str      # data set name, or 'file.py[:variant]'


def parse_encoders(spec: str) -> list:
  out = []
  for item in [x.strip() for x in spec.split(",") if x.strip()]:
    name, _, value = item.partition("=") if "=" in item else (item, "", item)
    kind, _, arg = value.partition(":")
    kind = "adapt_ssl" if kind == "adapt" else kind  # the SSL arm's earlier spelling
    if value == "random":
      out.append(Encoder(name, "random"))
    elif kind in ("random", "simclr", "adapt_ssl", "adapt_supervised") and arg:
      if kind == "simclr" and arg not in FILES:
        raise SystemExit(f"--encoders: {item!r}: simclr:<data set> takes one of {sorted(FILES)}")
      out.append(Encoder(name, kind, arg))
    else:
      out.append(Encoder(name, "checkpoint", value))
  names = [e.name for e in out]
  if not out or len(set(names)) != len(names):
    raise SystemExit(f"--encoders={spec!r}: give at least one encoder, each name once (got {names})")
  for e in out:
    if e.kind == "random" and e.source and e.source not in names:
      raise SystemExit(f"--encoders: {e.name}=random:{e.source} names no encoder of the list {names}")
  return out


def check_supervised_adapt_data(encoders: list, tasks: list, adapt_data: str, data_dir: str) -> None:
  """Refuses a supervised domain-adaptive encoder whose adapt data is a task's own file: it has been
  trained on that task's training labels, so its row there would not be a transfer."""
  sup = [e.name for e in encoders if e.kind == "adapt_supervised"]
  same = [t.name for t in tasks if t.kind == "medmnist"
          and os.path.realpath(os.path.join(data_dir, FILES[t.source])) == os.path.realpath(adapt_data)]
  if sup and same:
    raise UserError(f"encoder(s) {', '.join(sup)} (adapt_supervised) train on the labels of {adapt_data}, the file of "
                    f"task(s) {', '.join(same)}: not a transfer there; leave those tasks out (--tasks) or set "
                    f"--adapt_data to other chest X-rays")


def parse_tasks(spec) -> list:
  """Comma-separated tasks, or ';'-separated when a config variant itself has commas."""
  items = spec.split(";" if ";" in spec else ",") if isinstance(spec, str) else list(spec)
  out = []
  for item in [x.strip() for x in items if x.strip()]:
    if item in FILES:
      out.append(Task(item, "medmnist", item))
    elif "=" in item:
      name, _, source = item.partition("=")
      out.append(Task(name, "config", source))
    else:
      raise SystemExit(f"--tasks: {item!r}: use one of {sorted(FILES)} or name=<config file>[:variant]")
  if len({t.name for t in out}) != len(out):
    raise SystemExit(f"--tasks={spec!r}: each task name once")
  return out


def load_config_file(source: str):
  """get_config(variant) of a config file given as 'path.py[:variant]'."""
  path, _, variant = source.partition(":")
  if not os.path.isfile(path):
    raise SystemExit(f"--tasks: config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"_transfer_task_{abs(hash(path))}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant)


def base_task_config(task: Task, data_dir: str):
  if task.kind == "medmnist":
    c = chexpert_finetune.get_config("local")
    with c.unlocked():
      c.data.path = os.path.join(data_dir, FILES[task.name])
      c.data.image_size = common.IMAGE_SIZE
    return c
  return load_config_file(task.source)


def task_metric(config) -> str:
  """The test metric reported (and the hold-out metric that selects the model)."""
  if config.finetune.select_metric:
    return config.finetune.select_metric
  return {"multiclass": "auc", "multilabel": "mean_auc", "segmentation": "dice"}.get(config.finetune.task, "auc")


# ---- hold-out ---------------------------------------------------------------------------------------

def holdout_indices(labels, case_ids) -> np.ndarray:
  """Indices (into the training split) of the 10% hold-out: whole cases, stratified by label."""
  return fractions.sample_fraction(labels, case_ids, HOLDOUT_FRACTION, HOLDOUT_SEED)


def make_holdout(config, out_dir: str, name: str) -> dict:
  """Writes (once) the task's data with the training split cut into 'fit' and 'holdout'. Returns
  {"data": data.* settings that read it, "train_split", "val_split", "path": the file to checksum,
  "how": a line for the report}. npz: a new .npz with fit / holdout / test arrays; manifest: the
  CSV with its split column rewritten (image paths resolved against the original folder);
  'seg_manifest' (configs/lung_segmentation.py): its own patient-level split already holds out
  `seg.val_fraction` of the training patients as 'val', which is used as it is."""
  d = config.data
  if d.source == "seg_manifest":
    return {"data": {}, "train_split": d.train_split, "val_split": config.finetune.val_split, "path": d.path,
            "how": f"the config's own split: `{config.finetune.val_split}` = {100 * config.seg.val_fraction:g}% of the "
                   f"training patients (seg.val_fraction, seed seg.split_seed={config.seg.split_seed})"}
  return {**_write_holdout(config, out_dir, name), "train_split": FIT, "val_split": HOLDOUT,
          "how": f"{100 * HOLDOUT_FRACTION:g}% of `{d.train_split}` (stratified by label, whole cases, draw "
                 f"{HOLDOUT_SEED}) as `{HOLDOUT}`, the rest as `{FIT}`"}


def _write_holdout(config, out_dir: str, name: str) -> dict:
  d = config.data
  os.makedirs(out_dir, exist_ok=True)
  if d.source == "npz":
    out = os.path.join(out_dir, f"{name}_holdout.npz")
    if not os.path.isfile(out):
      src = sources.load_source(d, d.train_split)
      hold = holdout_indices(src.labels, src.case_ids)
      fit = np.setdiff1d(np.arange(len(src.labels)), hold)
      with np.load(d.path) as f:
        imgs, labs = f[f"{d.train_split}_images"], f[f"{d.train_split}_labels"]
        arrays = {f"{FIT}_images": imgs[fit], f"{FIT}_labels": labs[fit],
                  f"{HOLDOUT}_images": imgs[hold], f"{HOLDOUT}_labels": labs[hold],
                  f"{d.eval_split}_images": f[f"{d.eval_split}_images"],
                  f"{d.eval_split}_labels": f[f"{d.eval_split}_labels"]}
      tmp = out + ".tmp.npz"
      np.savez(tmp, **arrays)
      os.replace(tmp, out)
    return {"path": out, "data": {"path": out}}
  if d.source == "manifest" and os.path.isfile(d.path):
    out = os.path.join(out_dir, f"{name}_holdout.csv")
    image_dir = os.path.abspath(os.path.expanduser(d.image_dir)) if d.image_dir else os.path.dirname(os.path.abspath(d.path))
    if not os.path.isfile(out):
      table = pd.read_csv(d.path, dtype=str, keep_default_na=False)
      train = table[d.split_column].str.strip() == d.train_split
      cases = np.asarray(table.loc[train, d.case_column].str.strip())
      labels = (np.asarray(table.loc[train, d.label_column]) if d.label_column in table.columns
                else np.zeros(len(cases), np.int64))
      hold_cases = set(cases[holdout_indices(labels, cases)].tolist())
      split = table[d.split_column].copy()
      split[train] = [HOLDOUT if c in hold_cases else FIT for c in cases]
      table[d.split_column] = split
      table.to_csv(out + ".tmp", index=False)
      os.replace(out + ".tmp", out)
    return {"path": out, "data": {"path": out, "image_dir": image_dir}}
  raise UserError(f"task {name}: a 10% hold-out of train is made for data.source 'npz', 'seg_manifest' or a manifest CSV; "
                  f"data.source={d.source!r} (path {d.path!r}) is neither: give the task such data")


# ---- encoders ---------------------------------------------------------------------------------------

def encoder_settings(path: str) -> tuple:
  """(model settings, channels) stored with a checkpoint (its config.json)."""
  saved = weights.stored_config(path)
  if saved is None:
    raise UserError(f"encoder {path}: no checkpoint with a config.json there, so its model settings are "
                    f"unknown; give a workdir of this project or a folder written by medssl-jax import-weights")
  model = {k: saved["model"][k] for k in MODEL_KEYS if k in saved.get("model", {})}
  return model, int(saved.get("data", {}).get("channels", 3))


def scale_model(s: dict) -> dict:
  return {"arch": "resnet", "depth": common.DEPTH, "width": s["width"], "stem": common.STEM}


def adapt_config(enc: Encoder, data_path: str, s: dict, ts: dict):
  """Continued SimCLR pretraining from `enc.source` (e.g. imported ImageNet weights) on chest X-rays."""
  model, channels = encoder_settings(enc.source)
  c = label_efficiency.pretrain_config(data_path, s)
  with c.unlocked():
    for k, v in model.items():
      c.model[k] = v
    c.data.channels = channels
    c.train.init_checkpoint = os.path.abspath(enc.source)
    common.set_steps(c, ts["adapt_steps"])
  return c


def adapt_supervised_config(enc: Encoder, data_path: str, s: dict, ts: dict):
  """Supervised fine-tuning of every layer from `enc.source` on the labels of the adapt data (the
  paper's domain-adaptive step); its encoder is then benchmarked."""
  model, channels = encoder_settings(enc.source)
  c = chexpert_finetune.get_config("local")
  with c.unlocked():
    c.mode, c.finetune.init = "finetune", "pretrained"
    c.data.path, c.data.image_size, c.data.channels = data_path, common.IMAGE_SIZE, channels
    for k, v in model.items():
      c.model[k] = v
    c.model.dtype = "float32"
    c.train.init_checkpoint = os.path.abspath(enc.source)
    c.finetune.val_split, c.finetune.eval_every = "", 0  # a fixed length: no selection, no stopping
    c.finetune.label_fraction, c.finetune.num_epochs = 1.0, 0.0
    c.optim.name, c.optim.lr_scaling, c.optim.weight_decay, c.optim.warmup_steps = "adam", "none", 0.0, 0
    c.optim.base_lr, c.optim.schedule = CLASSIFICATION_LR, "constant"
    c.train.batch_size = ts["finetune_batch"]
    c.eval.num_replicates = s["num_replicates"]
    common.set_steps(c, ts["adapt_steps"])
  return c


ADAPT_CONFIGS = {"adapt_ssl": adapt_config, "adapt_supervised": adapt_supervised_config}
ADAPT_WORDS = {"adapt_ssl": "SimCLR continued", "adapt_supervised": "supervised fine-tuning on the labels"}


def resolve_encoders(encoders: list, a, s: dict, ts: dict, root: str, manifest: dict, run: bool) -> list:
  """Fills each encoder's checkpoint and model settings, training the simclr / adapt ones if needed.
  Returns the encoders that can be benchmarked now (all of them unless run=False left one out)."""
  ready = []
  for e in encoders:
    if e.kind == "simclr":
      e.path = os.path.abspath(common.pretrain_dir(a.workdir, a.scale, e.source))
      print(f"[{STUDY}] encoder {e.name}: SimCLR pretraining on {e.source}")
      done = common.run_once(label_efficiency.pretrain_config(os.path.join(a.data_dir, FILES[e.source]), s), e.path, run=run)
    elif e.kind in ADAPT_CONFIGS:
      e.path = os.path.abspath(os.path.join(root, "encoders", e.name))
      print(f"[{STUDY}] encoder {e.name}: {ADAPT_WORDS[e.kind]} from {e.source} on {a.adapt_data}")
      done = common.run_once(ADAPT_CONFIGS[e.kind](e, a.adapt_data, s, ts), e.path, run=run)
    elif e.kind == "checkpoint":
      e.path, done = os.path.abspath(e.source), True
    else:
      done = True
    if done is None:
      manifest.setdefault("missing", []).append(e.path)
      continue
    if e.kind != "random":
      e.model, e.channels = encoder_settings(e.path)
    ready.append(e)
  for e in ready:
    if e.kind == "random" and not e.source:
      e.model, e.channels = scale_model(s), common.CHANNELS
  by_name = {e.name: e for e in ready}
  for e in ready:
    if e.kind == "random" and e.source and e.source in by_name:
      like = by_name[e.source]
      e.model, e.channels = dict(like.model), like.channels
  # random:<other> whose template is not finished yet (only with --only_finished) waits for it
  return [e for e in ready if not (e.kind == "random" and e.source and e.source not in by_name)]


def encoder_record(e: Encoder) -> dict:
  r = {"name": e.name, "kind": e.kind, "source": e.source, "checkpoint": e.path, "model": e.model,
       "channels": e.channels}
  if e.path:
    r["checkpoint_md5"] = common.data_record(ckpt_lib.checkpoint_dir(e.path))
  return r


# ---- runs -------------------------------------------------------------------------------------------

def run_config(task: Task, enc: Encoder, holdout: dict, s: dict, ts: dict, seed: int, data_dir: str):
  """One fine-tuning run of `enc` on `task` under the paper's protocol (module docstring)."""
  c = base_task_config(task, data_dir)
  segmentation = c.finetune.task == "segmentation"
  with c.unlocked():
    c.seed = int(seed)
    c.mode = "finetune"
    for k, v in enc.model.items():
      c.model[k] = v
    c.model.dtype = "float32" if task.kind == "medmnist" else c.model.dtype
    c.data.channels = enc.channels
    for k, v in holdout["data"].items():
      c.data[k] = v
    c.data.train_split, c.finetune.val_split = holdout["train_split"], holdout["val_split"]
    c.finetune.init = "random" if enc.kind == "random" else "pretrained"
    c.train.init_checkpoint = enc.path if enc.kind != "random" else ""
    c.finetune.label_fraction, c.finetune.fraction_seed, c.finetune.num_epochs = 1.0, 0, 0.0
    c.eval.num_replicates = s["num_replicates"]
    c.finetune.select_metric = task_metric(c)
    c.optim.name, c.optim.lr_scaling, c.optim.weight_decay, c.optim.warmup_steps = "adam", "none", 0.0, 0
    c.optim.base_lr = SEGMENTATION_LR if segmentation else CLASSIFICATION_LR
    c.optim.schedule = "cosine" if segmentation else "constant"
    steps, every = (ts["seg_steps"], ts["seg_eval_every"]) if segmentation else (ts["steps"], ts["eval_every"])
    if not segmentation:  # a segmentation config keeps its own batch
      c.train.batch_size = ts["finetune_batch"]
    c.train.num_steps = steps
    c.train.log_every, c.train.checkpoint_every = every, steps
    c.finetune.eval_every = every
    c.finetune.early_stop_patience = ts["seg_stop_patience"] if segmentation else ts["stop_patience"]
    plateau = 0 if segmentation else ts["plateau_patience"]   # segmentation: cosine decay
    c.finetune.plateau_factor = PLATEAU_FACTOR if plateau else 0.0
    c.finetune.plateau_patience = plateau or 5
  return c


def run_dir(root: str, task: str, encoder: str, r: int) -> str:
  return os.path.join(root, task, encoder, f"run{r}")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  common.add_common_flags(p)
  p.add_argument("--encoders", default=DEFAULT_ENCODERS, help="comma-separated encoder specs (module docstring)")
  p.add_argument("--tasks", default="", help="comma-separated tasks (default: the scale's)")
  p.add_argument("--runs", type=int, default=0, help="runs per (encoder, task) (default: the scale's, 10 beyond smoke)")
  p.add_argument("--reference", default="", help="encoder the others are t-tested against (default: the first)")
  p.add_argument("--adapt_data", default="", help="npz of chest X-rays for the adapt_ssl: / adapt_supervised: "
                 "encoders (default: <data_dir>/pneumoniamnist.npz, train split)")
  p.add_argument("--out", default=os.path.join("benchmarks", "results"), help="folder of the report")
  p.add_argument("--report_only", action="store_true", help="run nothing: the report from the study.json")
  a = p.parse_args(argv)
  root = common.study_dir(a.workdir, a.scale, STUDY)
  if a.report_only:
    return transfer_report.write_report(os.path.join(root, common.MANIFEST), a.out)
  s, ts = dict(common.SCALES[a.scale]), dict(SCALES[a.scale])
  if a.runs:
    ts["runs"] = a.runs
  a.adapt_data = a.adapt_data or os.path.join(a.data_dir, FILES["pneumoniamnist"])
  encoders, tasks = parse_encoders(a.encoders), parse_tasks(a.tasks or ts["tasks"])
  check_supervised_adapt_data(encoders, tasks, a.adapt_data, a.data_dir)
  reference = a.reference or encoders[0].name
  if reference not in [e.name for e in encoders]:
    raise SystemExit(f"--reference={reference!r} is not one of the encoders {[e.name for e in encoders]}")
  t0, run = time.time(), not a.only_finished
  manifest = {"study": STUDY, "scale": a.scale, "command": common.command_line(MODULE, argv),
              "machine": common.machine_record(), "settings": {**s, **ts, "tasks": [t.name for t in tasks]},
              "reference": reference, "holdout": {"fraction": HOLDOUT_FRACTION, "seed": HOLDOUT_SEED},
              "runs": [], "data": [], "encoders": []}
  ready = resolve_encoders(encoders, a, s, ts, root, manifest, run)
  manifest["encoders"] = [encoder_record(e) for e in ready]
  for task in tasks:
    base = base_task_config(task, a.data_dir)
    holdout = make_holdout(base, os.path.join(root, "data"), task.name)
    manifest["data"] += [dict(common.data_record(base.data.path), task=task.name, role="original"),
                         dict(common.data_record(holdout["path"]), task=task.name, role="as trained",
                              holdout=holdout["how"])]
    if base.data.source == "seg_manifest":  # the masks are part of the data
      manifest["data"].append(dict(common.data_record(base.seg.mask_dir), task=task.name, role="masks"))
    for e in ready:
      for r in range(ts["runs"]):
        wd = run_dir(root, task.name, e.name, r)
        c = run_config(task, e, holdout, s, ts, seed=r, data_dir=a.data_dir)
        print(f"[{STUDY}] {task.name}: {e.name}, run {r} (seed {c.seed})")
        done = common.run_once(c, wd, run=run)
        common.add_run(manifest, {"role": "eval", "task": task.name, "task_kind": c.finetune.task,
                                  "encoder": e.name, "run": r, "seed": c.seed, "metric": c.finetune.select_metric,
                                  "batch": c.train.batch_size, "data_path": c.data.path,
                                  "data_note": c.seg.get("data_note", "") if c.get("seg") is not None else "",
                                  "workdir": os.path.abspath(wd)}, done)
  common.finish_study(root, manifest, t0, STUDY)
  return transfer_report.write_report(os.path.join(root, common.MANIFEST), a.out)


if __name__ == "__main__":
  raise SystemExit(errors.guard(main)())  # a UserError: one line `error: ...`, exit 2
