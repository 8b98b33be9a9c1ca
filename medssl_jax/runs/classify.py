"""Fine-tuning (end to end) and linear evaluation (frozen encoder, new linear head).

Azizi et al. 2021 Sec. 4.3: start from the pretrained encoder (its projection head dropped),
train with SGD + momentum 0.9 on a fraction of the labelled cases, and report the papers'
metrics on the test split with 1,000-replicate bootstrap 95% intervals (App. B.1.1).

Workdir: config.json, checkpoints/, TensorBoard scalars, and at the end
  results.json            every metric as {"value", "ci_low", "ci_high"} + the run's settings
  predictions_test.npz    test predictions with image and case ids (for `compare`)
  predictions_val.npz     validation predictions, when a validation split is configured

Periodic validation (`finetune.eval_every` = N > 0; training/validation.py): every N steps (a
multiple of train.log_every) and at the last step, the model is scored on `finetune.val_split` (the
test metrics' settings: case level, excluded classes); the values go to TensorBoard
(`val/<metric>`) and val_history.json, and the state with the best `finetune.select_metric` (default
top1 for multiclass, mean_auc for multilabel; the earliest step on a tie) is kept in
checkpoints_best/. The test metrics, the `val` metrics and predictions_*.npz are then those of
that state; results.json says which (`selected_step`, `select_metric`, `val_history`). N = 0:
evaluation of the final state only (`selected_step` = the last step). With validation on:
`finetune.plateau_factor` > 0 multiplies the lr by that factor after `finetune.plateau_patience`
validations without improvement (ReduceLROnPlateau; results.json `lr_reduced_at`), and
`finetune.early_stop_patience` = P > 0 ends training after P validations without improvement
(`stopped_early`, `early_stop_step`), as in the transfer benchmark's protocol (Hosseinzadeh
Taher et al. 2021).
"""
import dataclasses
import functools
import os
import time

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import optax

from input_pipeline import backends, fractions, sources, subsets
from medssl_jax.errors import UserError
from medssl_jax.evaluation import bootstrap, compare, metrics, subgroups
from medssl_jax.losses import masked_sigmoid_cross_entropy, softmax_cross_entropy
from medssl_jax.models import classifier_from_config
from medssl_jax.runs import supervised
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training import loop
from medssl_jax.training import optim
from medssl_jax.training import provenance
from medssl_jax.training import validation as validation_lib
from medssl_jax.training import workdir as workdir_lib
from medssl_jax.training.inference import batched_apply
from medssl_jax.training.sharding import check_global_batch, make_mesh, prefetch_to_mesh
from medssl_jax.training.state import TrainState

TASKS = ("multiclass", "multilabel")  # and 'segmentation' (segment.py)


def _prepare_source(source, config):
  task = config.finetune.task
  if task not in TASKS:
    raise UserError(f"finetune.task={task!r}: expected one of {TASKS}")
  if task == "multilabel":
    if source.labels.ndim != 2:
      raise UserError(f"finetune.task='multilabel' needs (N, L) labels; {source.name} has shape {source.labels.shape}")
    return dataclasses.replace(source, labels=supervised.apply_uncertain_policy(source.labels, config.finetune.uncertain_policy))
  if source.labels.ndim != 1:
    raise UserError(f"finetune.task='multiclass' needs (N,) integer labels; {source.name} has shape "
                     f"{source.labels.shape} (use finetune.task='multilabel')")
  if np.any(source.labels < 0):
    raise UserError(f"{source.name}: {int(np.sum(source.labels < 0))} images have no label (-1); "
                     f"fine-tuning needs labelled images")
  return source


def create_state(config, mesh, num_outputs: int, rng, num_steps: int | None = None) -> TrainState:
  """The classifier's state; the optimiser's schedule spans `num_steps` (default train.num_steps)."""
  linear = config.mode == "linear_eval"
  model = classifier_from_config(config.model, num_outputs, frozen_encoder=linear,
                                 feature_norm=config.finetune.feature_norm, head_init=config.finetune.head_init)
  tx = optim.make_optimizer(config.optim, config.train.batch_size,
                            config.train.num_steps if num_steps is None else num_steps)
  if linear:  # only the new head learns; the encoder's updates are zero.
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               lambda p: {k: ("frozen" if k == "encoder" else "train") for k in p})
  tx = validation_lib.optimizer(tx, config.finetune)  # x the plateau scale with finetune.plateau_factor > 0
  return supervised.init_state(model, tx, config.data, mesh, rng)


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
  spec = tuple(config.eval.exclude_classes)
  if spec and config.finetune.task != "multiclass":
    raise UserError(f"eval.exclude_classes={spec} applies to the multi-class top-k sensitivity only; "
                     f"set it to () for finetune.task={config.finetune.task!r}")
  return metrics.resolve_classes(spec, source.class_names, source.num_classes)


def sparse_labels(config, test_source) -> tuple:
  """Multi-label: indices of the labels with fewer than `eval.min_positives` positive images in the
  test split, left out of mean_auc / mean_auprc (passed on as excluded classes, so `compare` and
  validation score the same mean). () for multiclass or min_positives 0."""
  need = int(config.eval.get("min_positives", 0))
  if need < 0:
    raise UserError(f"eval.min_positives={need} must be >= 0 (0: every label with both classes present counts)")
  if config.finetune.task != "multilabel" or not need:
    return ()
  positives = np.nansum(np.asarray(test_source.labels, np.float64) > 0.5, axis=0)
  return tuple(int(j) for j in np.flatnonzero(positives < need))


def label_summary(config, test_source, exclude) -> dict:
  """results.json entries of a multi-label run: positives per label in the test split, the
  minimum, and the labels the means are taken over."""
  names = test_source.class_names or tuple(str(j) for j in range(test_source.labels.shape[1]))
  positives = np.nansum(np.asarray(test_source.labels, np.float64) > 0.5, axis=0)
  return {"min_positives": int(config.eval.get("min_positives", 0)),
          "test_positives": {n: int(v) for n, v in zip(names, positives)},
          "mean_over_labels": [n for j, n in enumerate(names) if j not in set(exclude)]}


def evaluate(config, state, mesh, source, pipeline, name: str, workdir: str, exclude_classes=(),
             subgroup_out: dict | None = None) -> dict:
  """Metrics with bootstrap intervals on one split; saves its predictions next to results.json,
  with the settings that define the metric (so that `compare` scores them the same way). With
  `subgroup_out` and a source that has subgroup columns (`Source.subgroups`), the headline
  metrics per subgroup value go into `subgroup_out` (`evaluation.subgroups`)."""
  images, labels = pipeline.make_eval_arrays(source, config.data.image_size, config.data.channels,
                                             crop_fraction=config.aug.eval_crop_fraction)
  labels = np.asarray(source.labels)  # the policy-applied labels of the prepared source
  probs = np.asarray(predict(state, images, mesh, config.finetune.task), np.float32)  # as saved: scored == stored
  if jax.process_index() == 0:
    compare.save_predictions(os.path.join(workdir, f"predictions_{name}.npz"), image_ids=source.image_ids,
                             case_ids=source.case_ids, labels=labels, probs=probs, task=config.finetune.task,
                             case_level=config.eval.case_level, exclude_classes=exclude_classes,
                             class_names=source.class_names)
  if subgroup_out is not None and source.subgroups:
      subgroup_out.update(subgroups.subgroup_metrics(
        labels, probs, config.finetune.task, source.subgroups, case_ids=source.case_ids,
        case_level=config.eval.case_level, exclude_classes=tuple(exclude_classes),
        num_replicates=config.eval.num_replicates, seed=config.eval.bootstrap_seed))
  case_ids = source.case_ids
  if config.eval.case_level:
    case_ids, labels, probs = metrics.aggregate_by_case(source.case_ids, labels, probs)
  return bootstrap.bootstrap_all(labels, probs, config.finetune.task, num_replicates=config.eval.num_replicates,
                                 seed=config.eval.bootstrap_seed, exclude_classes=tuple(exclude_classes))


def selection_metric(config, num_outputs: int) -> str:
  """The validation metric that picks the checkpoint: finetune.select_metric, or the task's default."""
  name = config.finetune.select_metric or ("top1" if config.finetune.task == "multiclass" else "mean_auc")
  known = list(metrics.metric_functions(config.finetune.task, num_outputs)) + ["loss"]
  if name not in known:
    raise UserError(f"finetune.select_metric={name!r} is not a metric of finetune.task={config.finetune.task!r}; "
                     f"use one of {known}")
  return name


def validation_scorer(config, mesh, source, pipeline, exclude):
  """score(state) -> the validation metrics of a classifier state, with the test metrics' settings
  (case level, excluded classes); the hook of `training.validation` calls it every finetune.eval_every steps."""
  images, _ = pipeline.make_eval_arrays(source, config.data.image_size, config.data.channels,
                                        crop_fraction=config.aug.eval_crop_fraction)
  labels, case_ids, task = np.asarray(source.labels), source.case_ids, config.finetune.task
  act = jax.nn.softmax if task == "multiclass" else jax.nn.sigmoid
  compiled = {}

  def score(state):
    if "apply" not in compiled:  # one compiled function; the weights are its argument, not constants
      compiled["apply"] = jax.jit(lambda v, x: act(state.apply_fn(v, x, train=False)))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    probs = np.asarray(batched_apply(lambda x: compiled["apply"](variables, x), images, mesh, 256), np.float32)
    y = labels
    loss = metrics.log_loss(labels, probs, task)  # per image, as the training loss
    if config.eval.case_level:
      _, y, probs = metrics.aggregate_by_case(case_ids, y, probs)
    return metrics.compute_metrics(y, probs, task, tuple(exclude)) | {"loss": loss}

  return score


def finetune(config, workdir: str) -> dict:
  """Runs (or resumes) fine-tuning or linear evaluation in `workdir`; returns the results."""
  pipeline = backends.get(config.data.pipeline, config.data.get("host_workers", 0))  # tf.data, NumPy or grain

  t_start = time.time()
  if config.aug.get("on_device", False):
    raise UserError(f"aug.on_device=True applies to pretraining only; fine-tuning and linear evaluation "
                    f"augment on the host: set aug.on_device=False for mode={config.mode!r}")
  supervised.check_init(config, data_cfg=config.data)
  supervised.check_subset(config)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # gs:// too
  workdir_lib.save_config(workdir, config)  # refuses to resume a run made with other settings
  mesh = make_mesh()
  check_global_batch(config.train.batch_size, mesh)
  train_src = _prepare_source(sources.load_source(config.data, config.data.train_split), config)
  test_src = _prepare_source(sources.load_source(config.data, config.data.eval_split), config)
  val_src = (_prepare_source(sources.load_source(config.data, config.finetune.val_split), config)
             if config.finetune.val_split else None)
  indices = np.arange(len(train_src))
  if config.finetune.label_fraction < 1.0:
    indices = fractions.sample_fraction(train_src.labels, train_src.case_ids, config.finetune.label_fraction,
                                        config.finetune.fraction_seed)
  size = int(config.finetune.train_size)
  if size > len(train_src):
    raise UserError(f"finetune.train_size={size} is more than the {len(train_src)} training images; use a smaller "
                    f"size, or 0 for all of them")
  if size:  # Truong's class-balanced Small / Medium subsets, the same rows as mode='dvme' draws
    indices = indices[subsets.training_subset(np.asarray(train_src.labels), size, int(config.finetune.fold),
                                              config.seed)]
  num_steps = supervised.training_steps(config, len(indices))
  num_outputs = train_src.num_classes if config.finetune.task == "multiclass" else train_src.labels.shape[1]
  exclude = excluded_classes(config, train_src)  # before training: an unknown class fails early
  exclude = tuple(sorted(set(exclude) | set(sparse_labels(config, test_src))))  # eval.min_positives
  supervised.check_validation(config, val_src is not None)
  eval_every, min_steps = supervised.validation_steps(config, len(indices))
  select_metric = selection_metric(config, num_outputs)

  state = create_state(config, mesh, num_outputs, jax.random.key(config.seed), num_steps)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints)
  state = supervised.resume_or_init(config, state, ckpt, workdir)
  start_step = int(state.step)

  batches = pipeline.supervised_iterator(
      train_src, aug_cfg=config.aug, image_size=config.data.image_size, channels=config.data.channels,
      global_batch=config.train.batch_size, seed=config.seed, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count(), indices=indices,
      repeat_to_fill=config.finetune.repeat_to_fill_batch, oversample=bool(config.finetune.oversample),
      **({"num_workers": int(config.data.host_workers)} if backends.short_name(pipeline) == "grain" else {}))
  batches = (dict(image=b["image"], label=b["label"]) for b in batches)
  writer = loop.make_writer(workdir)
  step_fn = jax.jit(functools.partial(train_step, task=config.finetune.task), donate_argnums=(0,))
  logging.info("%s from %s init on %d of %d training images (fraction %g, draw %d), %d steps",
               config.mode, config.finetune.init, len(indices), len(train_src), config.finetune.label_fraction,
               config.finetune.fraction_seed, num_steps)
  validation = (validation_lib.from_config(config.finetune, validation_scorer(config, mesh, val_src, pipeline, exclude),
                                           select_metric, num_steps, writer, workdir, start_step, eval_every, min_steps)
                if eval_every else None)
  out = supervised.run_loop(config, state, prefetch_to_mesh(batches, mesh, config.train.prefetch), step_fn, validation,
                            start_step, num_steps, writer, ckpt, mesh, workdir)
  ckpt.close()

  results = {"mode": config.mode, "init": config.finetune.init, "checkpoint": config.train.init_checkpoint,
             "task": config.finetune.task, "label_fraction": config.finetune.label_fraction,
             "fraction_seed": config.finetune.fraction_seed, "num_train_images": int(len(indices)),
             "train_size": int(config.finetune.train_size), "fold": int(config.finetune.fold),
             "oversample": bool(config.finetune.oversample),
             "num_train_cases": int(len(np.unique(train_src.case_ids[indices]))),
             "final_step": out.step, "num_steps": num_steps, "completed": supervised.finished(out, num_steps),
             "loss_history": out.loss_history,
             "train_metrics": out.metrics, "images_per_sec": out.images_per_sec,
             "input_wait_fraction": out.input_wait_fraction,
             "base_lr": config.optim.base_lr, "weight_decay": config.optim.weight_decay,
             "feature_norm": config.finetune.feature_norm, "head_init": config.finetune.head_init,
             "seed": config.seed, "host_pipeline": backends.short_name(pipeline),
             "case_level": bool(config.eval.case_level), "exclude_classes": list(exclude),
             "excluded_class_names": [train_src.class_names[i] for i in exclude] if train_src.class_names else [],
             "workdir": ckpt_lib._abs(workdir), "init_checkpoint": ckpt_lib.read_init_record(workdir)}
  if config.finetune.task == "multilabel":
    results.update(label_summary(config, test_src, exclude))
  if supervised.finished(out, num_steps):
    final = out.state
    results.update(select_metric=select_metric, selected_step=out.step)
    if validation is not None:  # the best-on-validation state, not the last one
      final = validation.best_state(out.state)
      results.update(selected_step=int(final.step), **validation.summary())
    by_subgroup = {}
    results["test"] = evaluate(config, final, mesh, test_src, pipeline, "test", workdir, exclude, by_subgroup)
    if by_subgroup:
      results["test_subgroups"] = by_subgroup
    if val_src is not None:
      results["val"] = evaluate(config, final, mesh, val_src, pipeline, "val", workdir, exclude)
    scalars = {f"test/{k}": v["value"] for k, v in results["test"].items() if isinstance(v, dict)}
    writer.write_scalars(out.step, scalars)
  if validation is not None:
    validation.close()
  writer.flush()
  results.update(workdir_lib.loss_history(workdir, start_step, out.loss_history))
  results.update(workdir_lib.wall_time(workdir, start_step, time.time() - t_start))
  results["provenance"] = provenance.collect(t_start, time.time())
  loop.write_json(os.path.join(workdir, "results.json"), results)
  return results
