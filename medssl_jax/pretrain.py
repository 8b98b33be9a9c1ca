"""The pretraining run of any registered method (`medssl_jax/methods/`): data, step, checkpoints,
metrics, results. Nothing here depends on the method: its state, step and settings come from
the method object (`methods.get(config.method)`), the pairs from `config.pairing`.

Workdir layout:
  config.json      the full config of the run
  checkpoints/     Orbax checkpoints, the last `train.keep_checkpoints` kept
  events.out.*     TensorBoard scalars (CLU metric writers), written by process 0 only
  results.json     final step, metrics, wall time, throughput (and the linear probe, if on)

Re-running with the same workdir resumes from the latest checkpoint; the data stream is a
pure function of (seed, step), so a resumed run sees the batches an uninterrupted run would.
"""
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
from medssl_jax.training.sharding import check_global_batch, make_mesh, prefetch_to_mesh


def _init_from(state, path: str, method, config):
  """Starts from another run's weights (MICLe from SimCLR), with a fresh optimiser and a fresh
  method state built from those weights (e.g. MoCo's key encoder starts equal to them)."""
  from medssl_jax import weights
  params, batch_stats, step = ckpt_lib.restore_weights(path)
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


def pretrain(config, workdir: str) -> dict:
  """Runs (or resumes) pretraining of `config.method` in `workdir`; returns the results dict."""
  from input_pipeline import backends, sources

  pipeline = backends.get(config.data.pipeline, config.data.get("host_workers", 0))  # tf.data, NumPy or grain

  t_start = time.time()
  method = methods.get(config.method)
  method.validate(config)  # before anything is written
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # gs:// too
  workdir_lib.save_config(workdir, config)  # refuses to resume a run made with other settings
  mesh = make_mesh()
  check_global_batch(config.train.batch_size, mesh)
  num_steps = int(config.train.num_steps)

  source = sources.load_source(config.data, config.data.train_split)
  state = methods.create_state(config, mesh, jax.random.key(config.seed), method)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state)
    logging.info("Resuming from checkpoint at step %d in %s", int(state.step), ckpt.directory)
  elif config.train.init_checkpoint:
    state = _init_from(state, config.train.init_checkpoint, method, config)
  start_step = int(state.step)

  batches = pipeline.pretrain_iterator(
      source, data_cfg=config.data, aug_cfg=config.aug, pairing=config.pairing,
      global_batch=config.train.batch_size, seed=config.seed, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count())
  writer = loop.make_writer(workdir)
  if start_step == 0:
    writer.write_hparams(loop.flatten(config.to_dict()))
  logging.info("Pretraining (%s, %s pairs) for %d steps from step %d: global batch %d on %d devices",
               config.method, config.pairing, num_steps, start_step, config.train.batch_size, mesh.devices.size)
  out = loop.run(state, prefetch_to_mesh(batches, mesh, config.train.prefetch),
                 methods.jit_train_step(config, method), start_step=start_step, num_steps=num_steps,
                 images_per_step=method.images_per_step(config),
                 lr_fn=optim.learning_rate_schedule(config.optim, config.train.batch_size, num_steps),
                 writer=writer, ckpt=ckpt, log_every=config.train.log_every,
                 checkpoint_every=config.train.checkpoint_every, num_devices=mesh.devices.size,
                 profiler=profiling.StepProfiler(config.train.profile_steps, os.path.join(workdir, "profile")))
  ckpt.close()
  writer.flush()

  results = {"mode": "pretrain", "method": config.method, "pairing": config.pairing, "final_step": out.step, "num_steps": num_steps,
             "completed": out.step >= num_steps, "loss_history": out.loss_history, "preempted": out.preempted, "metrics": out.metrics,
             "images_per_sec": out.images_per_sec,
             "devices": mesh.devices.size, "platform": jax.devices()[0].platform,
             "host_pipeline": backends.short_name(pipeline), "workdir": ckpt_lib._abs(workdir)}
  results.update(workdir_lib.wall_time(workdir, start_step, time.time() - t_start))
  if out.step >= num_steps and config.probe.enabled:
    from medssl_jax.evaluation import linear_probe
    results["linear_probe"] = linear_probe.probe_pretrained(config, out.state, mesh, sources, pipeline)
  loop.write_json(os.path.join(workdir, "results.json"), results)
  return results
