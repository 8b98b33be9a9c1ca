"""Segmentation fine-tuning: `mode='finetune'`, `finetune.task='segmentation'` (Hosseinzadeh Taher et
al. 2021, App. B: a U-Net whose encoder is the pretrained ResNet, every layer fine-tuned, Dice).

The supervised runs' shared machinery (`supervised.py`), for a U-Net (models/unet.py) with one sigmoid output:
- encoder init from `train.init_checkpoint` (finetune.init 'pretrained' / 'supervised': its 'encoder'
  subtree and batch statistics, `supervised.load_encoder`) or random (finetune.init='random'); the
  decoder and the 1x1 output layer always start random;
- loss seg.dice_weight x soft Dice + seg.bce_weight x pixel BCE (losses/dice.py);
- the same loop (`training.loop.run`: checkpoints, resume, preemption, TensorBoard scalars),
  the same multi-device data parallelism (the batch is sharded over the mesh, the state
  replicated; BN statistics are those of the global batch, as on one device) and the same
  optimiser settings (`optim.*`);
- data: `data.source='seg_manifest'` (input_pipeline/sources/seg_manifest.py), decoded once and
  augmented jointly on the host (input_pipeline/seg_pipeline.py, augment_seg.py; NumPy only);
- validation (`finetune.eval_every` = N > 0, on `finetune.val_split`; training/validation.py): every N
  steps and at the last one the mean Dice of the validation images; the best state (the earliest
  on a tie) is kept in checkpoints_best/ and is the one tested (results.json `selected_step`),
  the paper's early stopping on a 10% hold-out of train. With `finetune.early_stop_patience` = P > 0
  training also ends after P validations without improvement (results.json `stopped_early`,
  `early_stop_step`); `finetune.plateau_factor` reduces the lr on a validation plateau (the paper
  uses cosine decay for segmentation and the plateau for classification); `val_history` holds
  the curve;
- at the end, on `data.eval_split`: mean per-image Dice and IoU of the thresholded prediction
  (sigmoid >= seg.threshold) with 95% bootstrap intervals that resample PATIENTS (the case ids:
  images of one patient are not independent; evaluation/segmentation.py), in results.json
  `test` (and `val`), and `overlay_test.png`: the first seg.overlay_images test images with the
  true (green) and predicted (red) outlines. Metrics are computed at data.image_size, on the
  masks as the network sees them (resized by nearest neighbour).
"""
import functools
import os
import time

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline import seg_pipeline
from input_pipeline.sources import seg_manifest
from medssl_jax import jsonio
from medssl_jax.errors import UserError
from medssl_jax.evaluation import segmentation as seg_metrics
from medssl_jax.training.inference import batched_apply
from medssl_jax.losses.dice import dice_bce_loss, soft_dice_per_image
from medssl_jax.models.unet import decoder_widths, segmentation_from_config
from medssl_jax.runs import supervised
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training import loop
from medssl_jax.training import optim
from medssl_jax.training import provenance
from medssl_jax.training import validation as validation_lib
from medssl_jax.training import workdir as workdir_lib
from medssl_jax.training.sharding import check_global_batch, make_mesh, prefetch_to_mesh
from medssl_jax.training.state import TrainState

SELECT_METRIC = "dice"


def check_config(config) -> None:
  """One-line refusals of settings that segmentation does not have (before any work)."""
  if config.mode != "finetune":
    raise UserError(f"finetune.task='segmentation' runs in mode='finetune' (every layer trained), not mode={config.mode!r}")
  if config.data.source != "seg_manifest":
    raise UserError(f"finetune.task='segmentation' reads image + mask pairs: set data.source='seg_manifest' "
                    f"(got {config.data.source!r})")
  if config.data.pipeline not in ("auto", "numpy"):
    raise UserError(f"data.pipeline={config.data.pipeline!r}: segmentation has the NumPy host pipeline only; "
                    f"set data.pipeline='numpy' (or 'auto')")
  if int(config.data.get("host_workers", 0)):
    raise UserError("data.host_workers sets grain's workers; segmentation uses the NumPy pipeline: set it to 0")
  if config.aug.get("on_device", False):
    raise UserError("aug.on_device=True applies to pretraining only; set aug.on_device=False")
  if int(config.finetune.train_size) or bool(config.finetune.oversample):
    raise UserError(f"finetune.train_size={config.finetune.train_size} / finetune.oversample={config.finetune.oversample}"
                    f" balance classes, which segmentation has none of; set train_size=0, oversample=False")
  if float(config.finetune.label_fraction) != 1.0:
    raise UserError(f"finetune.label_fraction={config.finetune.label_fraction}: label fractions are not implemented for "
                    f"segmentation; set finetune.label_fraction=1.0")
  supervised.check_init(config)  # also refuses weights made under other model.* settings
  if not 0.0 < float(config.seg.threshold) < 1.0:
    raise UserError(f"seg.threshold={config.seg.threshold} must be in (0, 1)")
  supervised.check_validation(config, bool(config.finetune.val_split))


def create_state(config, mesh, rng, num_steps: int) -> TrainState:
  """The U-Net's state (one output: binary segmentation); the schedule spans `num_steps`."""
  model = segmentation_from_config(config.model, 1, decoder_widths(config.seg.decoder_width))
  tx = validation_lib.optimizer(optim.make_optimizer(config.optim, config.train.batch_size, num_steps), config.finetune)
  return supervised.init_state(model, tx, config.data, mesh, rng)


def train_step(state: TrainState, batch: dict, *, dice_weight: float, bce_weight: float):
  """One optimiser step on Dice + BCE; metrics: loss and the batch's soft Dice."""

  def loss_fn(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    logits, updates = state.apply_fn(variables, batch["image"], train=True, mutable=["batch_stats"])
    loss = dice_bce_loss(logits, batch["mask"], dice_weight=dice_weight, bce_weight=bce_weight)
    return loss, (jnp.mean(soft_dice_per_image(logits, batch["mask"])), updates["batch_stats"])

  (loss, (dice, bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads, bs), {"loss": loss, "train_soft_dice": dice}


def predict(state: TrainState, images: np.ndarray, mesh, batch_size: int = 64) -> np.ndarray:
  """(N, H, W) foreground probabilities, eval-mode BN; images float32 (N, H, W, C) in [0, 1]."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  fn = jax.jit(lambda x: jax.nn.sigmoid(state.apply_fn(variables, x, train=False))[..., 0])
  return np.asarray(batched_apply(fn, images, mesh, batch_size), np.float32)


def _as_float(images: np.ndarray) -> np.ndarray:
  return np.asarray(images, np.float32) / 255.0


def evaluate(config, state, mesh, images, masks, source, name: str, workdir: str, overlay: bool = False) -> dict:
  """Dice and IoU with patient-bootstrap intervals on one split; saves predictions_<name>.npz
  (probabilities as float16) and, with `overlay`, overlay_<name>.png."""
  probs = predict(state, _as_float(images), mesh)
  out = seg_metrics.segmentation_metrics(masks, probs, threshold=float(config.seg.threshold),
                                         num_replicates=int(config.eval.num_replicates),
                                         seed=int(config.eval.bootstrap_seed), groups=source.case_ids)
  out.update(num_cases=int(len(np.unique(source.case_ids))), resampled="cases", threshold=float(config.seg.threshold))
  if jax.process_index() == 0:
    with jsonio.open_atomic(epath.Path(workdir, f"predictions_{name}.npz")) as f:
      np.savez_compressed(f, image_ids=source.image_ids, case_ids=source.case_ids, masks=masks,
                          probs=probs.astype(np.float16))
    n = min(int(config.seg.overlay_images), len(images))
    if overlay and n > 0:
      path = os.path.join(workdir, f"overlay_{name}.png")
      local = path if not path.startswith("gs://") else os.path.join("/tmp", os.path.basename(path))
      seg_metrics.overlay_png(_as_float(images[:n]), masks[:n], seg_metrics.binarize(probs[:n], config.seg.threshold),
                              local, max_images=n, titles=[os.path.basename(i) for i in source.image_ids[:n]])
      if local != path:
        jsonio.write_bytes(path, epath.Path(local).read_bytes())
      out["overlay"] = path
  return out


def validation_scorer(config, mesh, images, masks):
  """score(state) -> mean Dice and IoU of the thresholded predictions on the validation images (the
  hook of `training.validation` calls it every finetune.eval_every steps)."""
  images, threshold, compiled = _as_float(images), float(config.seg.threshold), {}

  def score(state):
    if "apply" not in compiled:  # one compiled function; the weights are its argument
      compiled["apply"] = jax.jit(lambda v, x: jax.nn.sigmoid(state.apply_fn(v, x, train=False))[..., 0])
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    pred = seg_metrics.binarize(np.asarray(batched_apply(lambda x: compiled["apply"](variables, x), images, mesh, 64)),
                                threshold)
    return {"dice": float(np.mean(seg_metrics.dice_per_image(masks, pred))),
            "iou": float(np.mean(seg_metrics.iou_per_image(masks, pred)))}

  return score


def finetune(config, workdir: str) -> dict:
  """Runs (or resumes) segmentation fine-tuning in `workdir`; returns the results."""

  t_start = time.time()
  check_config(config)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  workdir_lib.save_config(workdir, config)
  mesh = make_mesh()
  check_global_batch(config.train.batch_size, mesh)
  load = lambda split: seg_manifest.load(config.data, config.seg, split)
  train_src, test_src = load(config.data.train_split), load(config.data.eval_split)
  val_src = load(config.finetune.val_split) if config.finetune.val_split else None
  size, channels, thr = int(config.data.image_size), int(config.data.channels), float(config.seg.mask_threshold)
  arrays = lambda src: seg_pipeline.load_pairs(src, size, channels, thr)
  train_images, train_masks = arrays(train_src)
  num_steps = supervised.training_steps(config, len(train_src))

  state = create_state(config, mesh, jax.random.key(config.seed), num_steps)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints)
  state = supervised.resume_or_init(config, state, ckpt, workdir)
  start_step = int(state.step)

  batches = seg_pipeline.train_iterator(
      train_images, train_masks, seg_cfg=config.seg, global_batch=config.train.batch_size, seed=config.seed,
      start_step=start_step, process_index=jax.process_index(), process_count=jax.process_count(),
      repeat_to_fill=config.finetune.repeat_to_fill_batch)
  batches = (dict(image=b["image"], mask=b["mask"]) for b in batches)
  writer = loop.make_writer(workdir)
  step_fn = jax.jit(functools.partial(train_step, dice_weight=float(config.seg.dice_weight),
                                      bce_weight=float(config.seg.bce_weight)), donate_argnums=(0,))
  val_arrays = arrays(val_src) if val_src is not None else None
  eval_every, min_steps = supervised.validation_steps(config, len(train_src))
  validation = (validation_lib.from_config(config.finetune, validation_scorer(config, mesh, *val_arrays), SELECT_METRIC,
                                           num_steps, writer, workdir, start_step, eval_every, min_steps)
                if eval_every else None)
  logging.info("segmentation fine-tuning from %s init on %d training images (%d cases), %d steps",
               config.finetune.init, len(train_src), len(np.unique(train_src.case_ids)), num_steps)
  out = supervised.run_loop(config, state, prefetch_to_mesh(batches, mesh, config.train.prefetch), step_fn, validation,
                            start_step, num_steps, writer, ckpt, mesh, workdir)
  ckpt.close()

  steps_per_epoch = max(1, len(train_src) // int(config.train.batch_size))
  results = {"mode": config.mode, "task": "segmentation", "init": config.finetune.init,
             "checkpoint": config.train.init_checkpoint, "num_train_images": len(train_src),
             "num_train_cases": int(len(np.unique(train_src.case_ids))),
             "num_val_images": len(val_src) if val_src is not None else 0, "num_test_images": len(test_src),
             "final_step": out.step, "num_steps": num_steps, "completed": supervised.finished(out, num_steps),
             "steps_per_epoch": steps_per_epoch, "loss_history": out.loss_history, "train_metrics": out.metrics,
             "images_per_sec": out.images_per_sec, "base_lr": config.optim.base_lr, "optimizer": config.optim.name,
             "input_wait_fraction": out.input_wait_fraction,
             "seed": config.seed, "host_pipeline": "numpy", "mask_threshold": thr,
             "metric_note": "Dice / IoU of thresholded predictions at data.image_size, mean over images; "
                            "95% bootstrap intervals resample cases (patients)",
             "data_note": config.seg.data_note, "workdir": ckpt_lib._abs(workdir),
             "init_checkpoint": ckpt_lib.read_init_record(workdir)}
  if supervised.finished(out, num_steps):
    final = out.state
    results.update(select_metric=SELECT_METRIC, selected_step=out.step)
    if validation is not None:
      final = validation.best_state(out.state)
      results.update(selected_step=int(final.step), **validation.summary())
    results["epochs_to_selected"] = results["selected_step"] / steps_per_epoch
    test_images, test_masks = arrays(test_src)
    results["test"] = evaluate(config, final, mesh, test_images, test_masks, test_src, "test", workdir, overlay=True)
    if val_arrays is not None:
      results["val"] = evaluate(config, final, mesh, *val_arrays, val_src, "val", workdir)
    writer.write_scalars(out.step, {f"test/{k}": results["test"][k]["value"] for k in ("dice", "iou")})
  if validation is not None:
    validation.close()
  writer.flush()
  results.update(workdir_lib.loss_history(workdir, start_step, out.loss_history))
  results.update(workdir_lib.wall_time(workdir, start_step, time.time() - t_start))
  results["provenance"] = provenance.collect(t_start, time.time())
  loop.write_json(os.path.join(workdir, "results.json"), results)
  return results
