"""Fine-tuning (end to end) and linear evaluation (frozen encoder, new linear head).

Azizi et al. 2021 Sec. 4.3: start from the pretrained encoder (its projection head dropped),
train with SGD + momentum 0.9 on a fraction of the labelled cases, and report the papers'
metrics on the test split with 1,000-replicate bootstrap 95% intervals (App. B.1.1).

Workdir: config.json, checkpoints/, TensorBoard scalars, and at the end
  results.json            every metric as {"value", "ci_low", "ci_high"} + the run's settings
  predictions_test.npz    test predictions with image and case ids (for `compare`)
  predictions_val.npz     validation predictions, when a validation split is configured
"""
import dataclasses
import functools
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from medssl_jax import checkpoint as ckpt_lib
from medssl_jax import loop
from medssl_jax import optim
from medssl_jax import workdir as workdir_lib
from medssl_jax.inference import batched_apply
from medssl_jax.losses import masked_sigmoid_cross_entropy, softmax_cross_entropy
from medssl_jax.models import classifier_from_config
from medssl_jax.sharding import check_global_batch, make_mesh, prefetch_to_mesh, replicated
from medssl_jax.train_state import TrainState

INITS = ("pretrained", "supervised", "random")
TASKS = ("multiclass", "multilabel")


def apply_uncertain_policy(labels: np.ndarray, policy: str) -> np.ndarray:
  """CheXpert's uncertain label (-1) -> 1 ('ones'), 0 ('zeros') or NaN = ignored ('ignore')."""
  if policy not in ("ones", "zeros", "ignore"):
    raise ValueError(f"eval.uncertain_policy={policy!r}: expected 'ones', 'zeros' or 'ignore'")
  labels = np.asarray(labels, np.float32).copy()
  labels[labels == -1] = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[policy]
  return labels


def _prepare_source(source, config):
  task = config.eval.task
  if task not in TASKS:
    raise ValueError(f"eval.task={task!r}: expected one of {TASKS}")
  if task == "multilabel":
    if source.labels.ndim != 2:
      raise ValueError(f"eval.task='multilabel' needs (N, L) labels; {source.name} has shape {source.labels.shape}")
    return dataclasses.replace(source, labels=apply_uncertain_policy(source.labels, config.eval.uncertain_policy))
  if source.labels.ndim != 1:
    raise ValueError(f"eval.task='multiclass' needs (N,) integer labels; {source.name} has shape "
                     f"{source.labels.shape} (use eval.task='multilabel')")
  if np.any(source.labels < 0):
    raise ValueError(f"{source.name}: {int(np.sum(source.labels < 0))} images have no label (-1); "
                     f"fine-tuning needs labelled images")
  return source


def create_state(config, mesh, num_outputs: int, rng) -> TrainState:
  linear = config.mode == "linear_eval"
  model = classifier_from_config(config.model, num_outputs, frozen_encoder=linear,
                                 feature_norm=config.eval.feature_norm, head_init=config.eval.head_init)
  tx = optim.make_optimizer(config.optim, config.train.batch_size, config.train.num_steps)
  if linear:  # only the new head learns; the encoder's updates are zero.
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               lambda p: {k: ("frozen" if k == "encoder" else "train") for k in p})
  shape = (2, config.data.image_size, config.data.image_size, config.data.channels)

  def init(rng):
    variables = model.init(rng, jnp.zeros(shape, jnp.float32), train=False)
    return TrainState(step=jnp.int32(0), params=variables["params"], batch_stats=variables["batch_stats"],
                      opt_state=tx.init(variables["params"]), apply_fn=model.apply, tx=tx)

  return jax.jit(init, out_shardings=replicated(mesh))(rng)


def load_encoder(state: TrainState, path: str) -> TrainState:
  """Replaces the encoder weights with those of a checkpoint (pretraining or fine-tuning)."""
  params, batch_stats, step = ckpt_lib.restore_weights(path)
  where = f"eval.checkpoint={path} (step {step})"
  enc = ckpt_lib.load_subtree(params, state.params, "encoder", where)
  enc_bs = ckpt_lib.load_subtree(batch_stats, state.batch_stats, "encoder", where)
  put = lambda new, old: jax.device_put(new, jax.tree_util.tree_map(lambda x: x.sharding, old))
  new_params = dict(state.params, encoder=put(enc, state.params["encoder"]))
  new_bs = dict(state.batch_stats, encoder=put(enc_bs, state.batch_stats["encoder"]))
  logging.info("Encoder loaded from %s", where)
  return state.replace(params=new_params, batch_stats=new_bs, opt_state=jax.jit(state.tx.init)(new_params))


def train_step(state: TrainState, batch: dict, *, task: str):
  """One SGD step. In linear evaluation the classifier runs its frozen encoder in inference mode
  itself, so its batch statistics come back unchanged; only a feature norm's statistics move."""
  def loss_fn(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    logits, updates = state.apply_fn(variables, batch["image"], train=True, mutable=["batch_stats"])
    bs = updates["batch_stats"]
    if task == "multiclass":
      loss = softmax_cross_entropy(logits, batch["label"])
      acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    else:
      loss = masked_sigmoid_cross_entropy(logits, batch["label"])
      present = ~jnp.isnan(batch["label"])
      acc = jnp.sum(jnp.where(present, (logits > 0) == (batch["label"] > 0.5), False)) / jnp.maximum(jnp.sum(present), 1)
    return loss, (acc, bs)

  (loss, (acc, bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads, bs), {"loss": loss, "train_acc": acc}


def predict(state: TrainState, images: np.ndarray, mesh, task: str, batch_size: int = 256) -> np.ndarray:
  """Class probabilities (softmax) or per-label probabilities (sigmoid), eval-mode BN."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  act = jax.nn.softmax if task == "multiclass" else jax.nn.sigmoid
  fn = jax.jit(lambda x: act(state.apply_fn(variables, x, train=False)))
  return batched_apply(fn, images, mesh, batch_size)


def excluded_classes(config, source) -> tuple:
  """`eval.exclude_classes` (class names and/or indices) as class indices of `source`."""
  from medssl_jax.evaluation import metrics
  spec = tuple(config.eval.exclude_classes)
  if spec and config.eval.task != "multiclass":
    raise ValueError(f"eval.exclude_classes={spec} applies to the multi-class top-k sensitivity only; "
                     f"set it to () for eval.task={config.eval.task!r}")
  return metrics.resolve_classes(spec, source.class_names, source.num_classes)


def evaluate(config, state, mesh, source, pipeline, name: str, workdir: str, exclude_classes=()) -> dict:
  """Metrics with bootstrap intervals on one split; saves its predictions next to results.json,
  with the settings that define the metric (so that `compare` scores them the same way)."""
  from medssl_jax.evaluation import bootstrap, compare, metrics
  images, labels = pipeline.make_eval_arrays(source, config.data.image_size, config.data.channels,
                                             crop_fraction=config.aug.eval_crop_fraction)
  labels = np.asarray(source.labels)  # the policy-applied labels of the prepared source
  probs = np.asarray(predict(state, images, mesh, config.eval.task), np.float32)  # as saved: scored == stored
  if jax.process_index() == 0:
    compare.save_predictions(os.path.join(workdir, f"predictions_{name}.npz"), image_ids=source.image_ids,
                             case_ids=source.case_ids, labels=labels, probs=probs, task=config.eval.task,
                             case_level=config.eval.case_level, exclude_classes=exclude_classes,
                             class_names=source.class_names)
  case_ids = source.case_ids
  if config.eval.case_level:
    case_ids, labels, probs = metrics.aggregate_by_case(source.case_ids, labels, probs)
  return bootstrap.bootstrap_all(labels, probs, config.eval.task, num_replicates=config.eval.num_replicates,
                                 seed=config.eval.bootstrap_seed, exclude_classes=tuple(exclude_classes))


def finetune(config, workdir: str) -> dict:
  """Runs (or resumes) fine-tuning or linear evaluation in `workdir`; returns the results."""
  from input_pipeline import backends, fractions, sources

  pipeline = backends.get(config.data.pipeline)  # tf.data, or NumPy where TensorFlow is absent

  t_start = time.time()
  if config.eval.init not in INITS:
    raise ValueError(f"eval.init={config.eval.init!r}: expected one of {INITS}")
  if config.eval.init != "random" and not config.eval.checkpoint:
    raise ValueError(f"eval.init={config.eval.init!r} needs eval.checkpoint (a workdir of a pretraining "
                     f"or fine-tuning run); use eval.init='random' to start from scratch")
  os.makedirs(workdir, exist_ok=True)
  workdir_lib.save_config(workdir, config)  # refuses to resume a run made with other settings
  mesh = make_mesh()
  check_global_batch(config.train.batch_size, mesh)
  num_steps = int(config.train.num_steps)

  train_src = _prepare_source(sources.load_source(config.data, config.data.train_split), config)
  test_src = _prepare_source(sources.load_source(config.data, config.data.eval_split), config)
  val_src = (_prepare_source(sources.load_source(config.data, config.eval.val_split), config)
             if config.eval.val_split else None)
  indices = np.arange(len(train_src))
  if config.eval.label_fraction < 1.0:
    indices = fractions.sample_fraction(train_src.labels, train_src.case_ids, config.eval.label_fraction,
                                        config.eval.fraction_seed)
  num_outputs = train_src.num_classes if config.eval.task == "multiclass" else train_src.labels.shape[1]
  exclude = excluded_classes(config, train_src)  # before training: an unknown class fails early

  state = create_state(config, mesh, num_outputs, jax.random.key(config.seed))
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state)
    logging.info("Resuming from checkpoint at step %d", int(state.step))
  elif config.eval.init != "random":
    state = load_encoder(state, config.eval.checkpoint)
  start_step = int(state.step)

  batches = pipeline.supervised_iterator(
      train_src, aug_cfg=config.aug, image_size=config.data.image_size, channels=config.data.channels,
      global_batch=config.train.batch_size, seed=config.seed, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count(), indices=indices,
      repeat_to_fill=config.eval.repeat_to_fill_batch)
  batches = (dict(image=b["image"], label=b["label"]) for b in batches)
  writer = loop.make_writer(workdir)
  step_fn = jax.jit(functools.partial(train_step, task=config.eval.task), donate_argnums=(0,))
  logging.info("%s from %s init on %d of %d training images (fraction %g, draw %d), %d steps",
               config.mode, config.eval.init, len(indices), len(train_src), config.eval.label_fraction,
               config.eval.fraction_seed, num_steps)
  out = loop.run(state, prefetch_to_mesh(batches, mesh, config.train.prefetch), step_fn,
                 start_step=start_step, num_steps=num_steps, images_per_step=config.train.batch_size,
                 lr_fn=optim.learning_rate_schedule(config.optim, config.train.batch_size, num_steps),
                 writer=writer, ckpt=ckpt, log_every=config.train.log_every,
                 checkpoint_every=config.train.checkpoint_every, num_devices=mesh.devices.size)
  ckpt.close()

  results = {"mode": config.mode, "init": config.eval.init, "checkpoint": config.eval.checkpoint,
             "task": config.eval.task, "label_fraction": config.eval.label_fraction,
             "fraction_seed": config.eval.fraction_seed, "num_train_images": int(len(indices)),
             "num_train_cases": int(len(np.unique(train_src.case_ids[indices]))),
             "final_step": out.step, "num_steps": num_steps, "completed": out.step >= num_steps, "loss_history": out.loss_history,
             "train_metrics": out.metrics, "images_per_sec": out.images_per_sec,
             "base_lr": config.optim.base_lr, "weight_decay": config.optim.weight_decay,
             "feature_norm": config.eval.feature_norm, "head_init": config.eval.head_init,
             "seed": config.seed, "host_pipeline": backends.short_name(pipeline),
             "case_level": bool(config.eval.case_level), "exclude_classes": list(exclude),
             "excluded_class_names": [train_src.class_names[i] for i in exclude] if train_src.class_names else [],
             "workdir": os.path.abspath(workdir)}
  if out.step >= num_steps:
    results["test"] = evaluate(config, out.state, mesh, test_src, pipeline, "test", workdir, exclude)
    if val_src is not None:
      results["val"] = evaluate(config, out.state, mesh, val_src, pipeline, "val", workdir, exclude)
    scalars = {f"test/{k}": v["value"] for k, v in results["test"].items() if isinstance(v, dict)}
    writer.write_scalars(out.step, scalars)
  writer.flush()
  results.update(workdir_lib.wall_time(workdir, start_step, time.time() - t_start))
  loop.write_json(os.path.join(workdir, "results.json"), results)
  return results
