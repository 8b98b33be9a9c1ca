"""Study A: label efficiency of SimCLR and MoCo v2 pretraining on PneumoniaMNIST and BreastMNIST.

  python -m benchmarks.label_efficiency --scale=smoke --workdir=workdirs/benchmarks

Per data set: SimCLR pretraining (configs/chexpert_simclr.py:local) and MoCo v2 pretraining
(configs/moco_v2.py:local) on the training images (labels unused), both at the scale's model,
batch and steps; then linear evaluation and fine-tuning at each label fraction (several draws
below 100%) from the SimCLR encoder, from the MoCo v2 encoder and from random initialisation
(arms 'simclr', 'moco_v2', 'random'; the same evaluation config, only the checkpoint differs);
`--arms=byol,barlow_twins,dino` (any of EXTRA_ARMS) adds arms pretrained with configs/<method>.py:local,
on the same data, encoder, batch and steps, each keeping its own projector / head; then random-init fine-tuning with the MedMNIST v2 recipe (the scale's 'recipe' list) to compare our pipeline with the published ResNet-18 (28) rows. Finished runs (completed results.json) are skipped on a re-run.
Writes <workdir>/<scale>/label_efficiency/study.json, which lists every run for the report
(benchmarks/label_efficiency_report.py, a section of `benchmarks.report`).
"""
import argparse
import importlib
import math
import os
import time

from benchmarks import common
from configs import chexpert_finetune
from configs import chexpert_simclr
from configs import moco_v2
from input_pipeline import sources
from medssl_jax import errors

MODULE = "benchmarks.label_efficiency"
STUDY = "label_efficiency"
FILES = {"pneumoniamnist": "pneumoniamnist.npz", "breastmnist": "breastmnist.npz"}
MODES = ("linear_eval", "finetune")
# Evaluation arms: (arm, finetune.init, which pretraining). The SimCLR arm keeps its run names
# ('<mode>_pretrained_...') so runs finished before the MoCo arm existed are found and skipped.
ARMS = (("simclr", "pretrained", "simclr"), ("random", "random", None), ("moco_v2", "pretrained", "moco_v2"))
RUN_LABEL = {"simclr": "pretrained", "random": "random", "moco_v2": "moco_v2"}
# Arms --arms can add: a method with configs/<method>.py:local (issue 30's method zoo); an arm's name,
# method and run label are the method's name.
EXTRA_ARMS = ("byol", "simsiam", "barlow_twins", "vicreg", "dino", "swav")
# MoCo v2 queue: configs/moco_v2.py:local's 1,024 keys, capped at a quarter of the training images
# (MoCo-CXR's 24,576 keys are 11% of CheXpert's), a multiple of the batch, at least one batch.
MOCO_QUEUE_FRACTION = 0.25


def method_pretrain_dir(workdir: str, scale: str, method: str, dataset: str) -> str:
  """The pretraining run of a data set by a method other than SimCLR (Study A only)."""
  return os.path.join(workdir, scale, f"pretrain_{method}_{dataset}")


def moco_pretrain_dir(workdir: str, scale: str, dataset: str) -> str:
  """The MoCo v2 pretraining run of a data set (Study A only)."""
  return method_pretrain_dir(workdir, scale, "moco_v2", dataset)


def parse_arms(spec: str) -> tuple:
  names = tuple(x for x in spec.split(",") if x)
  unknown = [n for n in names if n not in EXTRA_ARMS]
  if unknown or len(set(names)) != len(names):
    raise SystemExit(f"--arms={spec!r}: expected distinct names from {list(EXTRA_ARMS)}")
  return names


def moco_queue(num_train: int, batch: int, local_queue: int) -> int:
  cap = int(num_train * MOCO_QUEUE_FRACTION) // batch * batch
  return max(batch, min(local_queue, cap))


def _at_scale(c, data_path: str, s: dict, seed: int, keep_head: bool = False):
  """A pretraining config at the scale's model, batch and steps, on `data_path` (`keep_head`: the
  config's own projector depth and width, the rest of the model the scale's)."""
  with c.unlocked():
    c.seed = seed
    c.data.path = data_path
    head = (c.model.head_layers, c.model.head_dim)
    common.set_architecture(c, s["width"])
    if keep_head:
      c.model.head_layers, c.model.head_dim = head
    c.train.batch_size = s["batch"]
    common.set_steps(c, s["pretrain_steps"])
    c.probe.enabled = False
  return c


def pretrain_config(data_path: str, s: dict, seed: int = 0):
  return _at_scale(chexpert_simclr.get_config("local"), data_path, s, seed)


def moco_pretrain_config(data_path: str, s: dict, seed: int = 0):
  """configs/moco_v2.py:local at the scale's model, batch and steps (those of `pretrain_config`)."""
  c = _at_scale(moco_v2.get_config("local"), data_path, s, seed)
  n = len(sources.load_source(c.data, c.data.train_split).labels)
  with c.unlocked():
    c.moco.queue_size = moco_queue(n, c.train.batch_size, moco_v2.LOCAL_QUEUE)
  return c


def extra_pretrain_config(method: str, data_path: str, s: dict, seed: int = 0):
  """configs/<method>.py:local with the encoder, data, batch and steps of `pretrain_config`; the method's
  own heads; no monitor (the study evaluates the encoder afterwards)."""
  c = _at_scale(importlib.import_module(f"configs.{method}").get_config("local"), data_path, s, seed, keep_head=True)
  with c.unlocked():
    c.monitor.every = 0
  return c


def eval_config(data_path: str, s: dict, *, mode: str, init: str, checkpoint: str, fraction: float,
                draw: int, seed: int = 0):
  """chexpert_finetune:local on `data_path`; the batch shrinks to the labelled images if needed."""
  c = chexpert_finetune.get_config("local")
  with c.unlocked():
    c.seed = seed
    c.mode = mode
    c.data.path = data_path
    common.set_architecture(c, s["width"])
    common.set_steps(c, s["eval_steps"])
    c.finetune.init, c.train.init_checkpoint = init, checkpoint if init != "random" else ""
    c.finetune.feature_norm = common.LINEAR_FEATURE_NORM if mode == "linear_eval" else "none"
    c.finetune.label_fraction, c.finetune.fraction_seed = float(fraction), int(draw)
    c.eval.num_replicates = s["num_replicates"]
    c.finetune.val_split = s["val_split"]
    c.train.batch_size, labelled = common.labelled_batch(c.data, fraction, draw, s["batch"])
    c.finetune.repeat_to_fill_batch = c.train.batch_size > labelled
  return c


def recipe_config(data_path: str, s: dict, width: float, seed: int = 0):
  """Random-init fine-tuning with the MedMNIST v2 training recipe, on 100% of the labels.

  Yang et al. (Scientific Data 2023), experiments: ResNet-18, cross-entropy, Adam lr 0.001, batch 128,
  100 epochs, lr x0.1 after epochs 50 and 75; no augmentation. Our last step is evaluated (no epoch is
  picked on the validation split). The architecture is ours (small stem: 3x3 stride-1 conv, no max-pool).
  """
  c = chexpert_finetune.get_config("local")
  with c.unlocked():
    c.seed = seed
    c.mode = "finetune"
    c.data.path = data_path
    common.set_architecture(c, width)
    c.finetune.init, c.train.init_checkpoint, c.finetune.label_fraction = "random", "", 1.0
    c.eval.num_replicates, c.finetune.val_split = s["num_replicates"], s["val_split"]
    c.optim.name, c.optim.base_lr, c.optim.lr_scaling, c.optim.weight_decay = "adam", 1e-3, "none", 0.0
    c.optim.schedule, c.optim.decay_at, c.optim.decay_factor, c.optim.warmup_steps = "piecewise", (0.5, 0.75), 0.1, 0
    c.aug.crop = c.aug.flip = False
    c.aug.eval_crop_fraction = 1.0  # no crop in training: test on the whole image (the config's 0.875 is for crops)
    c.aug.rotation_degrees = c.aug.additive_brightness = c.aug.std_contrast = 0.0
    c.aug.color_prob = c.aug.grayscale_prob = c.aug.blur_prob = 0.0
    c.train.batch_size, n = common.labelled_batch(c.data, 1.0, 0, s["recipe_batch"])
    common.set_steps(c, max(1, math.ceil(s["recipe_epochs"] * n / c.train.batch_size)))
  return c


def draws_for(fraction: float, s: dict) -> range:
  return range(1 if fraction >= 1.0 else s["draws"])


def run_name(mode, init, fraction, draw) -> str:
  """`init`: 'pretrained' (the SimCLR arm), 'random' or 'moco_v2' (RUN_LABEL of the arm)."""
  return f"{mode}_{init}_f{fraction:g}_d{draw}"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  common.add_common_flags(p)
  p.add_argument("--datasets", default="", help="comma-separated subset (default: the scale's)")
  p.add_argument("--arms", default="", help=f"extra pretraining arms, comma-separated, from {', '.join(EXTRA_ARMS)} "
                 "(default: none)")
  p.add_argument("--recipe", default=None, help="MedMNIST-recipe runs as dataset:width,... (default: the "
                 "scale's; '' for none), e.g. breastmnist:0.25,breastmnist:1")
  a = p.parse_args(argv)
  extra = parse_arms(a.arms)
  arms = ARMS + tuple((m, "pretrained", m) for m in extra)
  s = dict(common.SCALES[a.scale])
  if a.datasets:
    s["datasets"] = tuple(a.datasets.split(","))
  if a.recipe is not None:
    s["recipe"] = tuple((d, float(w)) for d, w in (item.split(":") for item in a.recipe.split(",") if item))
    unknown = sorted({d for d, _ in s["recipe"]} - set(FILES))
    if unknown:
      raise SystemExit(f"--recipe: unknown data set(s) {unknown}; expected some of {sorted(FILES)}")
  s["extra_arms"] = list(extra)
  t0, run = time.time(), not a.only_finished
  root = common.study_dir(a.workdir, a.scale, STUDY)
  manifest = {"study": STUDY, "scale": a.scale, "command": common.command_line(MODULE, argv),
              "machine": common.machine_record(), "settings": s, "runs": [],
              "data": [common.data_record(os.path.join(a.data_dir, FILES[d])) for d in s["datasets"]]}
  for dataset in s["datasets"]:
    path = os.path.join(a.data_dir, FILES[dataset])
    pre_dir = common.pretrain_dir(a.workdir, a.scale, dataset)
    print(f"[{STUDY}] {dataset}: SimCLR pretraining")
    done = common.run_once(pretrain_config(path, s), pre_dir, run=run)
    common.add_run(manifest, {"role": "pretrain", "method": "simclr", "dataset": dataset,
                              "workdir": os.path.abspath(pre_dir)}, done)
    moco_dir = moco_pretrain_dir(a.workdir, a.scale, dataset)
    print(f"[{STUDY}] {dataset}: MoCo v2 pretraining")
    done = common.run_once(moco_pretrain_config(path, s), moco_dir, run=run)
    common.add_run(manifest, {"role": "pretrain", "method": "moco_v2", "dataset": dataset,
                              "workdir": os.path.abspath(moco_dir)}, done)
    checkpoints = {"simclr": pre_dir, "moco_v2": moco_dir, None: pre_dir}
    for method in extra:
      checkpoints[method] = method_pretrain_dir(a.workdir, a.scale, method, dataset)
      print(f"[{STUDY}] {dataset}: {method} pretraining")
      done = common.run_once(extra_pretrain_config(method, path, s), checkpoints[method], run=run)
      common.add_run(manifest, {"role": "pretrain", "method": method, "dataset": dataset,
                                "workdir": os.path.abspath(checkpoints[method])}, done)
    for mode in MODES:
      for fraction in s["fractions"]:
        for draw in draws_for(fraction, s):
          for arm, init, pretraining in arms:
            wd = os.path.join(root, dataset, run_name(mode, RUN_LABEL.get(arm, arm), fraction, draw))
            print(f"[{STUDY}] {dataset}: {mode} from {arm}, fraction {fraction:g}, draw {draw}")
            ckpt = checkpoints[pretraining]
            c = eval_config(path, s, mode=mode, init=init, checkpoint=ckpt, fraction=fraction, draw=draw)
            done = common.run_once(c, wd, run=run)
            common.add_run(manifest, {"role": "eval", "dataset": dataset, "mode": mode, "init": init, "arm": arm,
                                      "fraction": fraction, "draw": draw, "batch": c.train.batch_size,
                                      "pretrain": os.path.abspath(ckpt), "workdir": os.path.abspath(wd)}, done)
  for dataset, width in s["recipe"]:
    if dataset not in s["datasets"]:
      continue
    wd = os.path.join(root, dataset, f"finetune_random_medmnist_recipe_w{width:g}")
    print(f"[{STUDY}] {dataset}: MedMNIST v2 recipe from random init, width {width:g}")
    c = recipe_config(os.path.join(a.data_dir, FILES[dataset]), s, width)
    done = common.run_once(c, wd, run=run)
    common.add_run(manifest, {"role": "recipe", "dataset": dataset, "mode": "finetune", "init": "random",
                              "fraction": 1.0, "draw": 0, "width": width, "batch": c.train.batch_size,
                              "steps": c.train.num_steps, "workdir": os.path.abspath(wd)}, done)
  return common.finish_study(root, manifest, t0, STUDY)


if __name__ == "__main__":
  raise SystemExit(errors.guard(main)())  # a UserError: one line `error: ...`, exit 2
