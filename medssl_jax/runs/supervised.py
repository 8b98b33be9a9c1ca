"""What the supervised runs share: classification (`classify.py`) and segmentation (`segment.py`).

The initialisation (`finetune.init`: the encoder of a pretraining or fine-tuning checkpoint, or
random), a fresh replicated state, the run length, resume-or-load, the fine-tuning loop
(`training.loop.run` with the periodic validation hook of `training.validation`), and when a run
counts as finished. Each run module adds its model, loss, data and metrics.
"""
import math
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from medssl_jax import weights
from medssl_jax.errors import UserError
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training import loop
from medssl_jax.training import optim
from medssl_jax.training import profiling
from medssl_jax.training import validation as validation_lib
from medssl_jax.training.sharding import replicated
from medssl_jax.training.state import TrainState

INITS = ("pretrained", "supervised", "random")


def apply_uncertain_policy(labels: np.ndarray, policy: str) -> np.ndarray:
  """CheXpert's uncertain label (-1) -> 1 ('ones'), 0 ('zeros') or NaN = ignored ('ignore')."""
  if policy not in ("ones", "zeros", "ignore"):
    raise UserError(f"finetune.uncertain_policy={policy!r}: expected 'ones', 'zeros' or 'ignore'")
  labels = np.asarray(labels, np.float32).copy()
  labels[labels == -1] = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[policy]
  return labels


def check_init(config, data_cfg=None) -> None:
  """finetune.init is known, has the checkpoint it needs, and that checkpoint's model settings match."""
  if config.finetune.init not in INITS:
    raise UserError(f"finetune.init={config.finetune.init!r}: expected one of {INITS}")
  if config.finetune.init != "random" and not config.train.init_checkpoint:
    raise UserError(f"finetune.init={config.finetune.init!r} needs train.init_checkpoint (a workdir of a pretraining "
                    f"or fine-tuning run); use finetune.init='random' to start from scratch")
  if config.finetune.init != "random":  # weights made under other model.* settings (e.g. imported ones): refused
    weights.check_settings(config.train.init_checkpoint, config.model, f"train.init_checkpoint={config.train.init_checkpoint}",
                           data_cfg=data_cfg)


def check_subset(config) -> None:
  """finetune.train_size / fold: a size >= 0 (0: every image), a fold >= 0, not with a label fraction."""
  size, fold = int(config.finetune.train_size), int(config.finetune.fold)
  if size < 0 or fold < 0:
    raise UserError(f"finetune.train_size={size} / finetune.fold={fold} must be >= 0 (train_size 0: every image)")
  if size and float(config.finetune.label_fraction) < 1.0:
    raise UserError(f"finetune.train_size={size} and finetune.label_fraction={config.finetune.label_fraction:g} both "
                    f"choose the training images; set one of them (train_size=0 or label_fraction=1)")


def check_validation(config, has_val_split: bool) -> None:
  """finetune.eval_every is 0 or a multiple of train.log_every (or finetune.eval_every_epochs > 0
  instead), with a validation split to score."""
  eval_every, epochs = int(config.finetune.eval_every), float(config.finetune.eval_every_epochs)
  if epochs < 0 or float(config.finetune.min_epochs) < 0:
    raise UserError(f"finetune.eval_every_epochs={epochs:g} / finetune.min_epochs={config.finetune.min_epochs:g} "
                    f"must be >= 0 (0: off)")
  if epochs and eval_every:
    raise UserError(f"finetune.eval_every={eval_every} and finetune.eval_every_epochs={epochs:g} both set how often "
                    f"to validate; set one of them to 0")
  if epochs and not has_val_split:
    raise UserError(f"finetune.eval_every_epochs={epochs:g} validates on finetune.val_split, which is empty; set "
                    f"finetune.val_split to a split of the data, or finetune.eval_every_epochs=0")
  if eval_every < 0 or (eval_every and eval_every % int(config.train.log_every)):
    raise UserError(f"finetune.eval_every={eval_every} must be 0 (validate at the end only) or a positive multiple "
                    f"of train.log_every={config.train.log_every}; change one of them")
  if eval_every and not has_val_split:
    raise UserError(f"finetune.eval_every={eval_every} validates on finetune.val_split, which is empty; set "
                    f"finetune.val_split to a split of the data, or finetune.eval_every=0")
  validation_lib.check_settings(config.finetune)


def validation_steps(config, num_labelled: int) -> tuple:
  """(steps between validations, steps before early stopping may end training): finetune.eval_every,
  or finetune.eval_every_epochs epochs over the labelled images (ceil(epochs x labelled / batch));
  finetune.min_epochs in steps the same way."""
  batch = int(config.train.batch_size)
  every = int(config.finetune.eval_every)
  epochs = float(config.finetune.eval_every_epochs)
  if epochs:
    every = max(1, math.ceil(epochs * num_labelled / batch))
    logging.info("validating every %d steps (finetune.eval_every_epochs=%g over %d labelled images at batch %d)",
                 every, epochs, num_labelled, batch)
  return every, math.ceil(float(config.finetune.min_epochs) * num_labelled / batch)


def training_steps(config, num_labelled: int) -> int:
  """train.num_steps; or, with finetune.num_epochs > 0, that many epochs over the labelled images
  (ceil(epochs x labelled / batch)), for protocols that scale the length with the label fraction."""
  epochs = float(config.finetune.num_epochs)
  if epochs < 0:
    raise UserError(f"finetune.num_epochs={epochs:g} must be >= 0 (0: train.num_steps sets the length)")
  if not epochs:
    return int(config.train.num_steps)
  return max(1, math.ceil(epochs * num_labelled / int(config.train.batch_size)))


def init_state(model, tx, data_cfg, mesh, rng) -> TrainState:
  """A fresh TrainState of `model` (initialised on a batch of 2 images of the data's size) and the
  optimiser `tx`, replicated over `mesh`."""
  shape = (2, data_cfg.image_size, data_cfg.image_size, data_cfg.channels)

  def init(rng):
    variables = model.init(rng, jnp.zeros(shape, jnp.float32), train=False)
    return TrainState(step=jnp.int32(0), params=variables["params"], batch_stats=variables["batch_stats"],
                      opt_state=tx.init(variables["params"]), apply_fn=model.apply, tx=tx)

  return jax.jit(init, out_shardings=replicated(mesh))(rng)


def load_encoder(state: TrainState, path: str, workdir: str | None = None, allow_running: bool = False) -> TrainState:
  """Replaces the encoder weights with those of a checkpoint (pretraining or fine-tuning); with `workdir`,
  records their path, step and fingerprint there (`ckpt_lib.restore_init_weights`)."""
  params, batch_stats, step, _ = ckpt_lib.restore_init_weights(path, allow_running, workdir)
  where = f"train.init_checkpoint={path} (step {step})"
  enc = ckpt_lib.load_subtree(params, state.params, "encoder", where)
  enc_bs = ckpt_lib.load_subtree(batch_stats, state.batch_stats, "encoder", where)
  put = lambda new, old: jax.device_put(new, jax.tree_util.tree_map(lambda x: x.sharding, old))
  new_params = dict(state.params, encoder=put(enc, state.params["encoder"]))
  new_bs = dict(state.batch_stats, encoder=put(enc_bs, state.batch_stats["encoder"]))
  logging.info("Encoder loaded from %s", where)
  return state.replace(params=new_params, batch_stats=new_bs, opt_state=jax.jit(state.tx.init)(new_params))


def resume_or_init(config, state: TrainState, ckpt, workdir: str | None = None) -> TrainState:
  """The workdir's latest checkpoint (a resumed run), else the configured encoder init."""
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state)
    logging.info("Resuming from checkpoint at step %d", int(state.step))
  elif config.finetune.init != "random":
    state = load_encoder(state, config.train.init_checkpoint, workdir,
                         allow_running=bool(config.train.get("init_from_running", False)))
  return state


def finished(out, num_steps: int) -> bool:
  """Training is over: all steps run, or stopped early (not a preemption)."""
  return out.step >= num_steps or out.stopped_early


def run_loop(config, state, batches, step_fn, validation, start_step, num_steps, writer, ckpt, mesh, workdir):
  """`loop.run` with the fine-tuning loops' settings; the logged lr includes the plateau scale. A
  run that had stopped early before a crash is not trained further (its batches are closed unread)."""
  schedule = optim.learning_rate_schedule(config.optim, config.train.batch_size, num_steps)
  if validation is not None and validation.start(state):
    logging.info("Training stopped early at step %d before this restart; evaluating", start_step)
    if hasattr(batches, "close"):
      batches.close()
    return loop.LoopResult(state, start_step, {}, float("nan"), preempted=False, loss_history=[], stopped_early=True)
  lr_fn = schedule if validation is None else (lambda step: schedule(step) * validation.scale)
  return loop.run(state, batches, step_fn, start_step=start_step, num_steps=num_steps,
                  images_per_step=config.train.batch_size, lr_fn=lr_fn, writer=writer, ckpt=ckpt,
                  log_every=config.train.log_every, checkpoint_every=config.train.checkpoint_every,
                  num_devices=mesh.devices.size,
                  profiler=profiling.StepProfiler(config.train.profile_steps, os.path.join(workdir, "profile")),
                  on_log=validation, hook_every=validation.every if validation is not None else 0)
