"""Study B on NIH ChestX-ray14: MICLe vs SimCLR (and MoCo v2 with case pairs) on 264 patients.

  python -m benchmarks.nih_study_b --scale=smoke --workdir=workdirs/benchmarks

Data: ../shared/data/nih_cxr14_kcr1000_64px (data.source='nih'): 1,000 thumbnails of 264
patients, 136 of them with 2+ images; the seeded patient-disjoint re-split (data.nih_split_seed 0,
60 / 20 / 20% of the images) gives 165 / 45 / 54 train / val / test patients.
1. SimCLR pretraining on the training patients' images (labels unused): the start ('base').
2. From that checkpoint, the same number of further steps on the same images with
   'micle' (SimCLR objective, pairing='case': two images of one patient, at most
   data.max_bag_size = 6 of a patient's images considered, Azizi et al. 2021 Sec. 4.2 "up to 6
   images per patient case"), 'simclr' (pairing='views') and 'moco_case' (MoCo v2 objective,
   pairing='case'; its own optimiser, configs/moco_v2.py:local's, as in Study A; its MLP head has
   no batch norm, unlike SimCLR's, so it starts from the SimCLR encoder alone, with a fresh head,
   through an encoder-only copy of the start, `encoder_only`). Each continued
   encoder's distance from the start (relative L2 over the encoder weights) is recorded.
3. Linear evaluation and fine-tuning of the four encoders on the binary target (No Finding vs
   any finding; softmax, top1 / AUC) and the 14-finding multi-label target (sigmoid; mean AUC
   over the findings with at least MIN_POSITIVES positive test images, listed in each run's
   results.json `mean_over_labels`), on 10% (several draws, data.nih_train_patients) and 100% of
   the training patients; metrics by view (PA / AP) and sex in results.json `test_subgroups`.
The report (benchmarks/nih_study_b_report.py, a section of `benchmarks.report`) pairs the arms on
the same test images (paired bootstrap resampling patients).
Finished runs are skipped on a re-run. Writes <workdir>/<scale>/nih_study_b/study.json.

Scales (the architecture is ResNet-18 with the small stem, 1 grey channel, at every scale):
- smoke: a CI plumbing check, numbers meaningless: 4 pretrainings and 8 evaluations of 2 steps at
  width 0.125, only 100% of the patients and two (task, mode) cells (binary linear evaluation,
  multi-label fine-tuning) with all four arms, the NumPy host pipeline
  (tests/benchmarks/test_nih_study_b.py runs it and builds the report).
- small: 32 px (the 64 px thumbnails halved: a quarter of the 64 px compute, close to the 28 px of
  Study A), width 0.25, 400 SimCLR steps at batch 64 (about 43 epochs of the 592 training images),
  300 continued steps at batch 32 (58 epochs over the 165 training patients for the case arms),
  200-step evaluations, 2 draws at 10%: 4 pretraining and 48 evaluation runs, estimated 3-4 hours
  on a 2-core CPU from Study A/B's small-scale timings (not yet measured on this study).
- full: 64 px (native), width 1, for a GPU.
"""
import argparse
import os
import time

import numpy as np

from benchmarks import common
from benchmarks import label_efficiency as study_a
from benchmarks import micle_vs_simclr as covid_b
from configs import chexpert_finetune
from configs import chexpert_simclr
from configs import covid_cxr_micle
from configs import moco_v2
from input_pipeline import indexing
from input_pipeline import sources
from medssl_jax import errors
from medssl_jax import weights
from medssl_jax.training import checkpoint as ckpt_lib

MODULE = "benchmarks.nih_study_b"
STUDY = "nih_study_b"
FOLDER = "nih_cxr14_kcr1000_64px"
# Continued arms: (method, pairing).
CONTINUED = {"micle": ("simclr", "case"), "simclr": ("simclr", "views"), "moco_case": ("moco_v2", "case")}
EVAL_ARMS = ("base",) + tuple(CONTINUED)
TASKS = {"binary": "multiclass", "multilabel": "multilabel"}  # data.nih_target -> finetune.task
MODES = ("linear_eval", "finetune")
# Multi-label mean AUC: findings with at least this many positive test images (a reading; an AUC
# from fewer positives, often one or two patients' series, has an interval too wide to read).
MIN_POSITIVES = 10
DEPTH, STEM, CHANNELS = 18, "small", 1

SCALES = {
    # smoke: every code path once (4 pretrainings; both tasks, both modes, all four arms, 100% so the
    # subgroup rows exist) in 8 evaluations: two (task, mode) cells, not four. Host pipeline 'numpy'
    # (the same batches as tf.data, input_pipeline/backends.py): tracing the tf.data maps took about
    # a fifth of a 2-step evaluation run (cProfile); the other scales keep data.pipeline='auto'.
    "smoke": dict(image_size=32, width=0.125, pretrain_batch=16, pretrain_steps=2, continue_batch=16,
                  continue_steps=2, eval_batch=16, eval_steps=2, draws=1, fractions=(1.0,), num_replicates=10,
                  cells=(("binary", "linear_eval"), ("multilabel", "finetune")), pipeline="numpy"),
    "small": dict(image_size=32, width=0.25, pretrain_batch=64, pretrain_steps=400, continue_batch=32,
                  continue_steps=300, eval_batch=64, eval_steps=200, draws=2, fractions=(0.1, 1.0),
                  num_replicates=1000),
    "full": dict(image_size=64, width=1.0, pretrain_batch=256, pretrain_steps=5000, continue_batch=64,
                 continue_steps=2000, eval_batch=128, eval_steps=1000, draws=5, fractions=(0.1, 1.0),
                 num_replicates=1000),
}


def _on_nih(c, nih_dir: str, s: dict, seed: int = 0):
  """The scale's data, model and seed on a config (labels unused by pretraining)."""
  c.seed = seed
  c.data.source, c.data.path = "nih", nih_dir
  c.data.image_size, c.data.channels = s["image_size"], CHANNELS
  c.data.pipeline = s.get("pipeline", c.data.pipeline)
  c.data.max_bag_size = 6  # Azizi et al. 2021 Sec. 4.2 (the settings default; covid_cxr_micle sets 8)
  c.model.depth, c.model.width, c.model.stem, c.model.dtype = DEPTH, s["width"], STEM, "float32"
  c.model.head_layers, c.model.head_dim = common.HEAD_LAYERS, common.HEAD_DIM
  c.probe.enabled = False
  return c


def pretrain_config(nih_dir: str, s: dict, seed: int = 0):
  """configs/chexpert_simclr.py:local (its augmentation and LARS 0.075 x sqrt(batch)) on NIH."""
  c = chexpert_simclr.get_config("local")
  with c.unlocked():
    _on_nih(c, nih_dir, s, seed)
    c.train.batch_size = s["pretrain_batch"]
    common.set_steps(c, s["pretrain_steps"])
  return c


def continue_config(nih_dir: str, init_checkpoint: str, arm: str, s: dict, seed: int = 0):
  """An arm's continued pretraining from `init_checkpoint`, the same steps and batch for every arm.

  MICLe and SimCLR: configs/covid_cxr_micle.py (the CheXpert pretraining augmentation) with the
  step size of the run they continue (see benchmarks/micle_vs_simclr.continue_config). MoCo v2:
  configs/moco_v2.py:local's objective and optimiser (SGD 0.03 x batch/256, temperature 0.2,
  shuffled BN), queue sized as in Study A, from the same encoder."""
  method, pairing = CONTINUED[arm]
  if method == "simclr":
    c = covid_cxr_micle.get_config("")
  else:
    c = moco_v2.get_config("local")
  with c.unlocked():
    _on_nih(c, nih_dir, s, seed)
    c.method, c.pairing = method, pairing
    c.train.batch_size = s["continue_batch"]
    common.set_steps(c, s["continue_steps"])
    c.train.init_checkpoint = init_checkpoint
    if method == "simclr":
      pre = pretrain_config(nih_dir, s)
      c.optim.base_lr, c.optim.lr_scaling = pre.optim.base_lr, pre.optim.lr_scaling
    else:
      n = len(sources.load_source(c.data, c.data.train_split))
      c.moco.queue_size = study_a.moco_queue(n, c.train.batch_size, moco_v2.LOCAL_QUEUE)
      c.moco.bn_groups = min(c.moco.bn_groups, max(1, c.train.batch_size // 2))
  return c


def encoder_only(start_dir: str, out_dir: str, c) -> str:
  """`out_dir`: the encoder of `start_dir`'s checkpoint without its projection head (written once),
  for an arm whose head differs (MoCo v2's). Returns out_dir."""
  if os.path.isdir(os.path.join(out_dir, "checkpoints")) and os.listdir(os.path.join(out_dir, "checkpoints")):
    return out_dir
  params, batch_stats, step = ckpt_lib.restore_weights(start_dir)
  settings = {k: c.model[k] for k in ("arch", "depth", "width", "stem", "head_layers", "head_dim")}
  weights.write_checkpoint(out_dir, {"encoder": params["encoder"]}, {"encoder": batch_stats["encoder"]}, settings,
                           {"encoder_of": os.path.abspath(start_dir), "step": int(step)})
  return out_dir


def eval_config(nih_dir: str, s: dict, *, target: str, mode: str, checkpoint: str, fraction: float, draw: int,
                seed: int = 0):
  """configs/chexpert_finetune.py:local's evaluation on an NIH target and share of training patients."""
  c = chexpert_finetune.get_config("local")
  with c.unlocked():
    _on_nih(c, nih_dir, s, seed)
    c.mode = mode
    c.data.nih_target = target
    c.data.nih_train_patients, c.data.nih_train_draw = float(fraction), int(draw)
    c.finetune.task = TASKS[target]
    c.eval.min_positives = MIN_POSITIVES if target == "multilabel" else 0
    c.finetune.init, c.train.init_checkpoint = "pretrained", checkpoint
    c.finetune.feature_norm = common.LINEAR_FEATURE_NORM if mode == "linear_eval" else "none"
    c.finetune.label_fraction, c.finetune.fraction_seed = 1.0, 0  # the share is taken by the source (per patient)
    c.eval.num_replicates = s["num_replicates"]
    c.finetune.val_split = ""  # the last step is evaluated: no model selection
    common.set_steps(c, s["eval_steps"])
    c.train.batch_size, labelled = common.labelled_batch(c.data, 1.0, 0, s["eval_batch"])
    c.finetune.repeat_to_fill_batch = c.train.batch_size > labelled
  return c


def cells(s: dict) -> list:
  """The (task, mode) pairs a scale evaluates: its 'cells', or every task x mode."""
  return [tuple(x) for x in s.get("cells", [(t, m) for t in TASKS for m in MODES])]


def draws_for(fraction: float, s: dict) -> range:
  return range(1 if fraction >= 1.0 else s["draws"])


def run_name(target, mode, arm, fraction, draw) -> str:
  return f"{target}_{mode}_{arm}_f{fraction:g}_d{draw}"


def bag_counts(c) -> dict:
  """Patients and images of each split, multi-image patients, and what the MICLe cap leaves."""
  out = {"max_bag_size": int(c.data.max_bag_size), "splits": {}}
  for split in ("train", "val", "test"):
    src = sources.load_source(c.data, split)
    _, sizes = np.unique(src.case_ids, return_counts=True)
    out["splits"][split] = {"patients": int(len(sizes)), "images": int(sizes.sum()),
                            "patients_with_2plus_images": int((sizes >= 2).sum())}
    if split == "train":
      capped = indexing.bag_table(src, int(c.data.max_bag_size))[2]
      out["train_images_in_capped_bags"] = int(capped.sum())
      out["train_largest_series"] = int(sizes.max())
  out["patients_all_splits"] = sum(v["patients"] for v in out["splits"].values())
  out["images_all_splits"] = sum(v["images"] for v in out["splits"].values())
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  common.add_common_flags(p)
  a = p.parse_args(argv)
  s = dict(SCALES[a.scale])
  t0, run = time.time(), not a.only_finished
  root = common.study_dir(a.workdir, a.scale, STUDY)
  nih = os.path.abspath(os.path.join(a.data_dir, FOLDER))
  manifest = {"study": STUDY, "scale": a.scale, "command": common.command_line(MODULE, argv),
              "machine": common.machine_record(), "settings": s, "runs": [], "min_positives": MIN_POSITIVES,
              "data": [common.data_record(nih)]}
  base = os.path.join(root, "pretrain_simclr_nih")
  c = pretrain_config(nih, s)
  manifest["bags"] = bag_counts(c)
  print(f"[{STUDY}] SimCLR pretraining on the NIH training patients' images")
  done = common.run_once(c, base, run=run)
  common.add_run(manifest, {"role": "pretrain", "arm": "base", "workdir": os.path.abspath(base)}, done)
  arm_dirs = {"base": base}
  for arm in CONTINUED:
    arm_dirs[arm] = os.path.join(root, f"continue_{arm}_nih")
    print(f"[{STUDY}] continued pretraining: {arm} (method, pairing = {CONTINUED[arm]})")
    start = os.path.abspath(base)
    if CONTINUED[arm][0] == "moco_v2":  # the start's encoder alone (MoCo's head differs)
      start = os.path.abspath(os.path.join(root, "start_encoder_only"))
      if run:
        encoder_only(base, start, c)
    done = common.run_once(continue_config(nih, start, arm, s), arm_dirs[arm], run=run)
    entry = {"role": "pretrain", "arm": arm, "workdir": os.path.abspath(arm_dirs[arm]), "init_checkpoint": start}
    if common.is_done(done):
      entry["encoder_change"] = covid_b.encoder_change(base, arm_dirs[arm])
    common.add_run(manifest, entry, done)
  for target, mode in cells(s):
    for fraction in s["fractions"]:
      for draw in draws_for(fraction, s):
        for arm in EVAL_ARMS:
          wd = os.path.join(root, run_name(target, mode, arm, fraction, draw))
          print(f"[{STUDY}] {target} {mode} of {arm}, {fraction:g} of the training patients, draw {draw}")
          c = eval_config(nih, s, target=target, mode=mode, checkpoint=os.path.abspath(arm_dirs[arm]),
                          fraction=fraction, draw=draw)
          done = common.run_once(c, wd, run=run)
          common.add_run(manifest, {"role": "eval", "arm": arm, "target": target, "mode": mode,
                                    "fraction": fraction, "draw": draw, "batch": c.train.batch_size,
                                    "pretrain": os.path.abspath(arm_dirs[arm]), "workdir": os.path.abspath(wd)},
                         done)
  return common.finish_study(root, manifest, t0, STUDY)


if __name__ == "__main__":
  raise SystemExit(errors.guard(main)())  # a UserError: one line `error: ...`, exit 2
