"""The pretraining run of any registered method (`medssl_jax/methods/`): data, step, checkpoints,
metrics, results. Nothing here depends on the method: its state, step and settings come from
the method object (`methods.get(config.method)`), the pairs from `config.pairing`.

Workdir layout:
  config.json      the full config of the run
  checkpoints/     Orbax checkpoints, the last `train.keep_checkpoints` kept
  events.out.*     TensorBoard scalars (CLU metric writers), written by process 0 only
  results.json     final step, metrics, wall time, throughput, the input-wait fraction (the share of
                   the steady-state wall time the loop waited for its next batch), the aug.on_device
                   it ran with (and the linear probe, if on; the monitor's history, if on)
  monitor.json     with monitor.every > 0: kNN and linear-probe metrics every monitor.every steps
                   (runs/monitor.py); checkpoints_best/ with monitor.keep_best

`aug.on_device='auto'` (the default) is decided once, here, from `jax.default_backend()`: on for a
GPU or TPU, off on the CPU (`resolve_on_device`); the run's config.json holds the decision.

Re-running with the same workdir resumes from the latest checkpoint; the data stream is a
pure function of (seed, step), so a resumed run sees the batches an uninterrupted run would.
"""
import copy
import os
import time

from absl import logging
from etils import epath
import jax

from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax import methods
from medssl_jax.training import loop
from medssl_jax.training import optim
from medssl_jax.training import profiling
from medssl_jax.training import workdir as workdir_lib
from medssl_jax.runs import linear_probe
from medssl_jax.runs import monitor as monitor_lib
from medssl_jax.training.sharding import check_global_batch, make_mesh, prefetch_to_mesh
from medssl_jax import weights
from input_pipeline import augment_device
from input_pipeline import backends
from input_pipeline import sources


def _init_from(state, path: str, method, config, workdir: str | None = None):
  """Starts from another run's weights (MICLe from SimCLR), with a fresh optimiser and a fresh
  method state built from those weights (e.g. MoCo's key encoder starts equal to them); with
  `workdir`, records their path, step and fingerprint there (`ckpt_lib.restore_init_weights`)."""
  params, batch_stats, step, _ = ckpt_lib.restore_init_weights(
      path, bool(config.train.get("init_from_running", False)), workdir)
  where = f"train.init_checkpoint={path} (step {step})"
  weights.check_settings(path, config.model, where, data_cfg=config.data)
  if "head" not in params and "encoder" in params:  # an encoder without a projection head (import-weights,
    # a fine-tuning run): the encoder comes from it, the head starts as initialised
    params = dict(state.params, encoder=ckpt_lib.load_subtree(params, state.params, "encoder", where))
    batch_stats = dict(state.batch_stats, encoder=ckpt_lib.load_subtree(batch_stats, state.batch_stats, "encoder", where))
    logging.info("%s has no projection head: the head starts fresh", where)
  ckpt_lib.check_tree_shapes(params, state.params, where)
  ckpt_lib.check_tree_shapes(batch_stats, state.batch_stats, where)
  logging.info("Initialised from %s", where)
  params = jax.device_put(params, jax.tree_util.tree_map(lambda x: x.sharding, state.params))
  batch_stats = jax.device_put(batch_stats, jax.tree_util.tree_map(lambda x: x.sharding, state.batch_stats))
  extra = jax.jit(lambda p, b: method.init_extra(config, {"params": p, "batch_stats": b},
                                                  jax.random.fold_in(jax.random.key(config.seed), 1)))(params, batch_stats)
  return state.replace(params=params, batch_stats=batch_stats, opt_state=jax.jit(state.tx.init)(params), extra=extra)


def resolve_on_device(config, backend: str | None = None):
  """(config, on_device): `config` with aug.on_device decided for pretraining on `backend` (default
  `jax.default_backend()`; 'auto': on for a GPU or TPU, off on the CPU), a copy where it changes."""
  setting = config.aug.get("on_device", False)
  on = augment_device.resolve_on_device(setting, jax.default_backend() if backend is None else backend)
  if setting is on:
    return config, on
  config = copy.deepcopy(config)
  try:
    config.aug.on_device = on
  except TypeError:  # a field typed by a plain string value (a config rebuilt from JSON): replaced
    with config.unlocked():
      del config.aug["on_device"]
      config.aug.on_device = on
  return config, on


def pretrain(config, workdir: str) -> dict:
  """Runs (or resumes) pretraining of `config.method` in `workdir`; returns the results dict."""
  setting = config.aug.get("on_device", False)
  config, on_device = resolve_on_device(config)
  logging.info("aug.on_device=%s on %s: %s", "'auto'" if isinstance(setting, str) else setting,
               jax.default_backend(), "the host crops and resizes, sends uint8 views, and flip, colour, grayscale and "
               "blur run in the train step" if on_device else "the host pipeline does the whole augmentation")

  pipeline = backends.get(config.data.pipeline, config.data.get("host_workers", 0))  # tf.data, NumPy or grain

  t_start = time.time()
  method = methods.get(config.method)
  method.validate(config)  # before anything is written
  monitor_lib.check_settings(config)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # gs:// too
  workdir_lib.save_config(workdir, config)  # refuses to resume a run made with other settings
  mesh = make_mesh()
  check_global_batch(config.train.batch_size, mesh)
  num_steps = int(config.train.num_steps)

  logging.info("Loading data: %s (%s), split %r", config.data.source, config.data.path or "embedded",
               config.data.train_split)
  source = sources.load_source(config.data, config.data.train_split)
  logging.info("Building the model (%s %s) and its optimiser state", config.model.arch, config.model.depth)
  state = methods.create_state(config, mesh, jax.random.key(config.seed), method)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state)
    logging.info("Resuming from checkpoint at step %d in %s", int(state.step), ckpt.directory)
  elif config.train.init_checkpoint:
    state = _init_from(state, config.train.init_checkpoint, method, config, workdir)
  start_step = int(state.step)

  writer = loop.make_writer(workdir)
  if start_step == 0:
    writer.write_hparams(loop.flatten(config.to_dict()))
  monitor = None
  if int(config.monitor.every):
    monitor = monitor_lib.PretrainMonitor(config, mesh, pipeline, sources, writer=writer, workdir=workdir,
                                          start_step=start_step, num_steps=num_steps)
    if start_step == 0:
      monitor(0, state)  # the weights the run starts from: the baseline of the curve
  batches = pipeline.pretrain_iterator(
      source, data_cfg=config.data, aug_cfg=config.aug, pairing=config.pairing,
      global_batch=config.train.batch_size, seed=config.seed, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count())
  logging.info("Pretraining (%s, %s pairs) for %d steps from step %d: global batch %d on %d devices",
               config.method, config.pairing, num_steps, start_step, config.train.batch_size, mesh.devices.size)
  try:
    out = loop.run(state, prefetch_to_mesh(batches, mesh, config.train.prefetch),
                   methods.jit_train_step(config, method), start_step=start_step, num_steps=num_steps,
                   images_per_step=method.images_per_step(config),
                   lr_fn=optim.learning_rate_schedule(config.optim, config.train.batch_size, num_steps),
                   writer=writer, ckpt=ckpt, log_every=config.train.log_every,
                   checkpoint_every=config.train.checkpoint_every, num_devices=mesh.devices.size,
                   profiler=profiling.StepProfiler(config.train.profile_steps, os.path.join(workdir, "profile")),
                   on_log=monitor, hook_every=monitor.every if monitor is not None else 0)
  except BaseException:
    if monitor is not None:
      loop.close_quietly(monitor.close, "the monitor's checkpointer")
    raise
  ckpt.close()

  results = {"mode": "pretrain", "method": config.method, "pairing": config.pairing, "final_step": out.step, "num_steps": num_steps,
             "completed": out.step >= num_steps, "loss_history": out.loss_history, "preempted": out.preempted, "metrics": out.metrics,
             "images_per_sec": out.images_per_sec, "input_wait_fraction": out.input_wait_fraction,
             "steady_state": {"steps": out.steady_steps, "seconds": out.steady_sec, "input_wait_sec": out.input_wait_sec,
                              "pairs_per_sec": (out.steady_steps * config.train.batch_size / out.steady_sec
                                                if out.steady_steps and out.steady_sec > 0 else None)},
             "aug_on_device": on_device, "aug_on_device_setting": setting if isinstance(setting, bool) else str(setting),
             "devices": mesh.devices.size, "platform": jax.devices()[0].platform,
             "host_pipeline": backends.short_name(pipeline), "workdir": ckpt_lib._abs(workdir),
             "init_checkpoint": ckpt_lib.read_init_record(workdir)}
  if monitor is not None:
    monitor.close()
    results.update(monitor.summary())
  results.update(workdir_lib.loss_history(workdir, start_step, out.loss_history))
  results.update(workdir_lib.wall_time(workdir, start_step, time.time() - t_start))
  if out.step >= num_steps and config.probe.enabled:
    logging.info("Linear probe on frozen features (at most %d training images)", config.probe.max_train_examples)
    results["linear_probe"] = linear_probe.probe_pretrained(config, out.state, mesh, sources, pipeline)
    writer.write_scalars(out.step, {f"probe/{encoder}/{metric}": v["value"] for encoder, r in results["linear_probe"].items()
                                    for metric, v in r.items() if isinstance(v, dict)})
  writer.flush()
  loop.write_json(os.path.join(workdir, "results.json"), results)
  logging.info("Wrote %s", os.path.join(workdir, "results.json"))
  return results
