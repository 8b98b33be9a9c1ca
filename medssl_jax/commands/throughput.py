"""`medssl-jax throughput`: the train step's rate, the host pipeline's, and the real pretraining loop's.

  medssl-jax throughput --config=configs/demo.py [--steps=20] [--input_batches=20] \
      [--end_to_end [--workdir=DIR]] [--config.train.batch_size=256 ...]

A benchmark, not a test. It prints one JSON object: `train_step`, the jitted step on one batch
already on the devices (an upper bound for a run: no input, no transfer); `input_pipeline`, the
config's host pipeline alone (`data.pipeline`, its source and augmentation; 0 --input_batches skips
it); and with --end_to_end, `end_to_end`: the real pretraining run (`runs/pretrain.py`: the config's
data source, files or records, its host pipeline, its augmentation and aug.on_device, the device
prefetch and the step loop) for --steps steps in a temporary workdir (or --workdir, which must hold
no run), with the loop's pairs/s over its steady-state steps (all but the first, whose time is
compilation) beside the step-only rate, and the share of the loop's wall time spent waiting for
the next batch (`input_wait_fraction`: near 1, the run is input-bound). `aug.on_device='auto'` is
resolved as the pretraining run resolves it (on for a GPU or TPU), for all three parts.
"""
import copy
import json
import os
import platform
import shutil
import tempfile
import time

from absl import flags
from ml_collections import config_flags
import jax
import numpy as np

from medssl_jax import methods
from medssl_jax.commands import common
from medssl_jax.errors import UserError
from medssl_jax.runs import pretrain
from medssl_jax.training import workdir as workdir_lib
from medssl_jax.training.sharding import check_global_batch, make_mesh, to_global
from input_pipeline import backends
from input_pipeline import sources

FLAGS = flags.FLAGS


def _define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
  flags.DEFINE_integer("steps", 20, "Timed train steps (after 2 warm-up steps); with --end_to_end also the "
                       "steps of the pretraining run (the first, compilation, is not timed).", lower_bound=1)
  flags.DEFINE_integer("input_batches", 20, "Timed input-pipeline batches (0 = skip).", lower_bound=0)
  flags.DEFINE_bool("end_to_end", False, "Also run the real pretraining loop for --steps steps and report its "
                    "pairs/s and input-wait fraction.")
  flags.DEFINE_string("workdir", "", "--end_to_end: the run's workdir (kept; it must hold no run). Default: a "
                      "temporary folder, removed afterwards.")
  flags.mark_flags_as_required(["config"])


def time_step(config, steps: int) -> dict:
  mesh = make_mesh()
  check_global_batch(config.train.batch_size, mesh)
  state = methods.create_state(config, mesh, jax.random.key(0))
  step = methods.jit_train_step(config)
  batch = to_global(methods.synthetic_batch(config, np.random.default_rng(0)), mesh)
  t0 = time.perf_counter()
  for _ in range(2):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  dt = time.perf_counter() - t0
  images = 2 * config.train.batch_size * steps  # two views per pair
  return {"steps": steps, "seconds": dt, "compile_and_warmup_seconds": compile_s,
          "steps_per_sec": steps / dt, "images_per_sec": images / dt,
          "images_per_sec_per_device": images / dt / mesh.devices.size,
          "loss_finite": bool(np.isfinite(float(metrics["loss"])))}


def time_input(config, batches: int) -> dict:
  pipeline = backends.get(config.data.pipeline, config.data.get("host_workers", 0))
  source = sources.load_source(config.data, config.data.train_split)
  it = pipeline.pretrain_iterator(source, data_cfg=config.data, aug_cfg=config.aug, pairing=config.pairing,
                                  global_batch=config.train.batch_size, seed=config.seed,
                                  process_index=jax.process_index(), process_count=jax.process_count())
  next(it)  # builds the graph and fills the prefetch buffer
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  dt = time.perf_counter() - t0
  images = 2 * config.train.batch_size // jax.process_count() * batches
  cores = os.cpu_count() or 1
  return {"host_pipeline": backends.short_name(pipeline), "batches": batches, "seconds": dt,
          "images_per_sec": images / dt,
          "host_cores": cores, "images_per_sec_per_core": images / dt / cores}


def check_workdir(workdir: str) -> None:
  if workdir and workdir_lib.has_checkpoint(workdir):
    raise UserError(f"--workdir={workdir} holds a run (checkpoints/): --end_to_end times a fresh run; give an "
                    f"empty or new folder, or leave --workdir out for a temporary one")


def end_to_end(config, steps: int, workdir: str = "", step_pairs_per_sec: float | None = None) -> dict:
  """`steps` steps of the real pretraining run of `config` (`pretrain.pretrain`) in `workdir` (default a
  temporary folder, removed afterwards): its steady-state pairs/s and input-wait fraction, over all
  timed steps and over the second half. No checkpoint before the end; no linear probe, profile or
  init; the warm-up shortened to fit the steps."""
  c = copy.deepcopy(config)
  # Two logs (the loop's only host syncs): half-way and at the end, so the second half's rate is also
  # known (host buffers filled during the compilation are drained by then, on a long enough run).
  c.train.num_steps, c.train.log_every, c.train.checkpoint_every = steps, max(1, steps // 2), steps
  c.train.profile_steps, c.train.init_checkpoint, c.probe.enabled = (0, 0), "", False
  c.optim.warmup_steps = min(int(c.optim.warmup_steps), steps - 1)  # the schedule's shape costs nothing
  check_workdir(workdir)
  folder = workdir or tempfile.mkdtemp(prefix="medssl-jax-throughput-")
  try:
    results = pretrain.pretrain(c, folder)
  finally:
    if not workdir:
      shutil.rmtree(folder, ignore_errors=True)
  steady = results["steady_state"]
  pairs = steady["pairs_per_sec"]
  out = {"steps": steps, "timed_steps": steady["steps"], "seconds": steady["seconds"], "pairs_per_sec": pairs,
         "images_per_sec": None if pairs is None else 2 * pairs,
         "input_wait_fraction": results["input_wait_fraction"], "input_wait_seconds": steady["input_wait_sec"],
         "second_half": {"steps": steps - max(1, steps // 2) if steps > 1 else 0,
                         "pairs_per_sec": results["metrics"].get("steps_per_sec", 0.0) * int(c.train.batch_size),
                         "input_wait_fraction": results["metrics"].get("input_wait_fraction")},
         "step_only_pairs_per_sec": step_pairs_per_sec,
         "of_step_rate": pairs / step_pairs_per_sec if pairs and step_pairs_per_sec else None,
         "data_source": c.data.source, "data_path": c.data.path, "host_pipeline": results["host_pipeline"],
         "host_workers": int(c.data.get("host_workers", 0)), "aug_on_device": results["aug_on_device"],
         "batch_size": int(c.train.batch_size), "image_size": int(c.data.image_size),
         "run_wall_seconds": results["wall_time_this_invocation_sec"], "workdir": workdir or None}
  return out


def machine() -> dict:
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind, "device_count": jax.device_count(),
          "process_count": jax.process_count(), "host_cores": os.cpu_count(),
          "hostname": platform.node(), "processor": platform.processor() or platform.machine(),
          "jax": jax.__version__}


def main(argv):
  del argv  # common.run refuses positional arguments
  if FLAGS.end_to_end:
    check_workdir(FLAGS.workdir)  # before the step is timed
  c, on_device = pretrain.resolve_on_device(FLAGS.config)  # 'auto' as the pretraining run decides it
  out = {"config": {"depth": c.model.depth, "width": c.model.width, "image_size": c.data.image_size,
                    "batch_size": c.train.batch_size, "dtype": c.model.dtype, "method": c.method,
                    "aug_on_device": on_device},
         "machine": machine(), "train_step": time_step(c, FLAGS.steps)}
  if FLAGS.input_batches > 0:
    out["input_pipeline"] = time_input(c, FLAGS.input_batches)
  if FLAGS.end_to_end:
    out["end_to_end"] = end_to_end(c, FLAGS.steps, FLAGS.workdir, out["train_step"]["images_per_sec"] / 2)
  print(json.dumps(out, indent=2), flush=True)


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main)
