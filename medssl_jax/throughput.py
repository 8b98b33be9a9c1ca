"""Throughput benchmark (a benchmark, not a test).

  python -m medssl_jax.throughput --config=configs/demo.py [--steps=20] [--input_batches=20] \
      [--config.train.batch_size=256 ...]

Times (1) the jitted train step on batches already on the devices and (2) the host input
pipeline alone, and prints one JSON object: images/s per device for the step, input images/s
per host core, and the machine it ran on. The step part needs only JAX/Flax/optax; the input
part times `data.pipeline` ('auto': tf.data, or the NumPy pipeline where TensorFlow is absent).
"""
import json
import os
import platform
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import jax
import numpy as np

from medssl_jax import methods
from medssl_jax.training.sharding import check_global_batch, make_mesh, to_global

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("steps", 20, "Timed train steps (after 2 warm-up steps).")
flags.DEFINE_integer("input_batches", 20, "Timed input-pipeline batches (0 = skip).")
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
  from input_pipeline import backends, sources
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


def machine() -> dict:
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind, "device_count": jax.device_count(),
          "process_count": jax.process_count(), "host_cores": os.cpu_count(),
          "hostname": platform.node(), "processor": platform.processor() or platform.machine(),
          "jax": jax.__version__}


def main(argv):
  del argv
  c = FLAGS.config
  out = {"config": {"depth": c.model.depth, "width": c.model.width, "image_size": c.data.image_size,
                    "batch_size": c.train.batch_size, "dtype": c.model.dtype, "method": c.method},
         "machine": machine(), "train_step": time_step(c, FLAGS.steps)}
  if FLAGS.input_batches > 0:
    out["input_pipeline"] = time_input(c, FLAGS.input_batches)
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  app.run(main)
