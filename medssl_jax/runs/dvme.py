"""Training a DVME head (or its no-attention ablation) on cached features of several frozen encoders:
`mode='dvme'` of `medssl_jax.main` (configs/truong_dvme.py).

Truong et al. 2021 (Sec. 4, 5.6, App. C, E; PROTOCOLS.md section 2): Adam, lr 1e-3, batch 64,
ReduceLROnPlateau (factor 0.1, patience 5) and early stopping (patience 10) on the validation split,
at most 30-50 epochs, the best-on-validation weights evaluated on test. The validation quantity is
the validation loss (the paper does not say which; a reading, `dvme.monitor='loss'`).

Input: `dvme.features` names the sources, `name=path_{split}.npz,...` (files of `medssl-jax features`,
read and checked by `feature_cache.py`) for data.train_split, finetune.val_split and data.eval_split.
`finetune.train_size` > 0 trains on a class-balanced subset of that many training
images (Truong's Small / Medium / Full regimes), drawn anew for each `finetune.fold`
(`input_pipeline/subsets.py`, the same draw as linear evaluation and fine-tuning make). An epoch visits
every training row once in a seeded order (`finetune.oversample`: N rows drawn with replacement so that
every class is equally frequent, `subsets.oversample_rows`, Truong's NIH setting); the last, partial batch
is padded with rows of weight 0, so every step has the same shape. Batches are sharded over the
mesh's data axis.

Output in the workdir: results.json (test metrics with bootstrap intervals, the validation history,
the best epoch, the per-source attention weights averaged per class on the test set, the
sources' fingerprints, `plots`: the figures below), predictions_test.npz (scored by
`medssl-jax compare` like any run's), attention_by_class.png (App. F: a heat map of those weights,
drawn from results.json by `evaluation/attention_plot.py`) and, unless `dvme.tsne=False`, t-SNE
maps of the test split coloured by class (Fig. 2, App. D; `evaluation/tsne.py`):
tsne_source_<name>.png per source's features, tsne_dvme.png of the DVME embedding (the
`hidden_dim` vector before the classifier, of the best-on-validation weights), and tsne_test.npz
with their coordinates; at most `dvme.tsne_max_points` test images (a seeded draw).
"""
import functools
import json
import os
import time

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import optax

from input_pipeline import subsets
from medssl_jax import jsonio
from medssl_jax.errors import UserError
from medssl_jax.evaluation import attention_plot, bootstrap, compare, tsne
from medssl_jax.losses.classification import masked_sigmoid_cross_entropy, softmax_cross_entropy
from medssl_jax.models import dvme as dvme_lib
from medssl_jax.runs import feature_cache
from medssl_jax.runs.supervised import apply_uncertain_policy
from medssl_jax.training import loop
from medssl_jax.training import provenance
from medssl_jax.training import workdir as workdir_lib
from medssl_jax.training.inference import batched_apply, shard_host_array
from medssl_jax.training.plateau import PlateauSchedule
from medssl_jax.training.sharding import check_global_batch, make_mesh, replicated

MONITORS = ("loss",)


def make_model(config, num_outputs: int) -> dvme_lib.DVME:
  d = config.dvme
  return dvme_lib.DVME(num_classes=num_outputs, proj_dim=int(d.proj_dim), hidden_dim=int(d.hidden_dim),
                       dropout_rate=float(d.dropout_rate), attention=bool(d.attention), tokens=d.tokens,
                       block=d.block, num_heads=int(d.num_heads))


def _labels(split: feature_cache.SplitFeatures, config) -> np.ndarray:
  if config.finetune.task == "multiclass":
    if split.labels.ndim != 1:
      raise UserError(f"finetune.task='multiclass' needs (N,) class labels; the features hold {split.labels.shape} "
                      f"labels: set finetune.task='multilabel'")
    if np.any(split.labels < 0):
      raise UserError(f"{int(np.sum(split.labels < 0))} images have no label (-1); DVME needs labelled images")
    return split.labels.astype(np.int32)
  if split.labels.ndim != 2:
    raise UserError("finetune.task='multilabel' needs (N, L) labels; set finetune.task='multiclass'")
  return apply_uncertain_policy(split.labels, config.finetune.uncertain_policy).astype(np.float32)


def loss_fn(logits, labels, weights, task: str):
  if task == "multiclass":
    return softmax_cross_entropy(logits, labels, weights)
  return masked_sigmoid_cross_entropy(logits, jnp.where(weights[:, None] > 0, labels, jnp.nan))


def train_step(params, opt_state, feats, labels, weights, rng, lr, *, model, tx, task):
  def objective(p):
    logits = model.apply({"params": p}, list(feats), deterministic=False, rngs={"dropout": rng})
    return loss_fn(logits, labels, weights, task)
  loss, grads = jax.value_and_grad(objective)(params)
  opt_state.hyperparams["learning_rate"] = lr
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def forward(params, feats, *, model):
  """(logits, per-source attention weights or None) in inference mode."""
  logits, inter = model.apply({"params": params}, list(feats), deterministic=True, mutable=["intermediates"])
  probs = inter["intermediates"].get("attention")
  if probs is None:
    return logits, None
  tokens_per_source = 1 if model.tokens == "source" else model.proj_dim
  return logits, dvme_lib.source_attention(probs[0], tokens_per_source)


def embed(params, feats, *, model):
  """The DVME embedding (N, hidden_dim): the vector after the ReLU, before dropout and the
  classifier (sown by the model as `intermediates/embedding`), in inference mode."""
  _, inter = model.apply({"params": params}, list(feats), deterministic=True, mutable=["intermediates"])
  return inter["intermediates"]["embedding"][0]


def _batches(order: np.ndarray, batch: int):
  n = len(order)
  for i in range(0, n, batch):
    rows = order[i:i + batch]
    yield np.concatenate([rows, np.zeros(batch - len(rows), rows.dtype)]), np.arange(batch) < len(rows)


def evaluate(params, split, labels, config, fwd, mesh, batch: int):
  """(mean loss, probabilities, attention weights (N, S) or None) over a whole split; `fwd` is the
  jitted `forward` (made once per run, so evaluating every epoch does not recompile it)."""
  n = len(labels)
  width = [f.shape[1] for f in split.features]
  packed = np.concatenate(split.features, axis=1)  # one host array, so batched_apply pads and shards it
  cuts = np.cumsum(width)[:-1]

  def fn(x):  # one pass: logits and (if any) attention side by side, split on the host
    logits, att = fwd(params, tuple(jnp.split(x, cuts, axis=1)))
    return logits if att is None else jnp.concatenate([logits, att], axis=1)
  out = batched_apply(fn, packed, mesh, batch)
  k = out.shape[1] - (len(width) if config.dvme.attention else 0)
  logits, att = out[:, :k], (out[:, k:] if config.dvme.attention else None)
  logits_j, labels_j = jnp.asarray(logits), jnp.asarray(labels)
  loss = float(loss_fn(logits_j, labels_j, jnp.ones(n), config.finetune.task))
  act = jax.nn.softmax if config.finetune.task == "multiclass" else jax.nn.sigmoid
  return loss, np.asarray(act(logits_j), np.float32), att


def tsne_rows(n: int, max_points: int, seed: int) -> np.ndarray:
  """The test rows in the t-SNE maps: all, or a seeded draw of `max_points` (sorted)."""
  if max_points <= 0 or n <= max_points:
    return np.arange(n)
  return np.sort(np.random.default_rng([int(seed), 0x75E]).choice(n, int(max_points), replace=False))


def tsne_inputs(params, split, rows, model, mesh, batch: int) -> dict:
  """{panel: (len(rows), d)}: each source's features of `rows` (by source name) and, under 'dvme',
  the DVME embedding of those images computed with `params` (same on every process)."""
  cuts = np.cumsum([f.shape[1] for f in split.features])[:-1]
  fn = jax.jit(lambda p, x: embed(p, jnp.split(x, cuts, axis=1), model=model))
  packed = np.concatenate([f[rows] for f in split.features], axis=1)
  out = {name: f[rows] for name, f in zip(split.names, split.features)}
  out["dvme"] = batched_apply(lambda x: fn(params, x), packed, mesh, batch)
  return out


def _file_name(name: str) -> str:
  return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def write_tsne(inputs: dict, labels, image_ids, task: str, class_names, seed: int, out, concat: bool) -> dict:
  """t-SNE PNGs of every panel of `tsne_inputs` and `tsne_test.npz` (the images' ids, their colour
  groups, each panel's 2-D coordinates) in the folder `out`; returns what results.json records."""
  groups, names = tsne.class_groups(labels, task, class_names)
  files, coords = {}, {}
  for panel, x in inputs.items():
    coords[panel] = tsne.tsne_2d(x, seed)
    if panel == "dvme":
      fname, title = "tsne_dvme.png", f"DVME{' w/o self-attention' if concat else ''} embedding ({x.shape[1]}-d)"
    else:
      fname, title = f"tsne_source_{_file_name(panel)}.png", f"source '{panel}' ({x.shape[1]}-d features)"
    tsne.write_png(coords[panel], groups, names, title + ", test split", out / fname)
    files[panel] = fname
  with jsonio.open_atomic(out / "tsne_test.npz") as f:
    np.savez(f, image_ids=np.asarray(image_ids), groups=groups, group_names=np.asarray(names),
             panels=np.asarray(list(coords)),
             **{f"coords_{i}": c for i, c in enumerate(coords.values())})
  n = len(groups)
  return {"files": files, "coordinates": "tsne_test.npz", "points": n, "perplexity": tsne.perplexity_for(n),
          "seed": int(seed), "split": "test"}


def check_settings(workdir: str, config) -> None:
  """A workdir that holds a DVME run made with other settings is refused, as a resume would be in
  the other modes (results are replaced only by a run of the same settings)."""
  path = epath.Path(workdir) / "config.json"
  if not path.is_file():
    return
  diffs = workdir_lib.config_differences(json.loads(path.read_text()), config)
  if diffs and not config.train.resume_with_changes:
    raise UserError(f"{workdir} holds a DVME run made with other settings ({'; '.join(diffs)}); its results would "
                    f"be replaced. Use a new --workdir, restore the settings, or set "
                    f"--config.train.resume_with_changes=True to replace them")


def run(config, workdir: str) -> dict:
  t_start = time.time()
  d, f = config.dvme, config.finetune
  if d.monitor not in MONITORS:
    raise UserError(f"dvme.monitor={d.monitor!r}: expected one of {MONITORS}")
  if int(d.tsne_max_points) < 0:
    raise UserError(f"dvme.tsne_max_points={d.tsne_max_points} must be >= 0 (0 = every test image)")
  if int(d.epochs) < 1 or int(d.batch_size) < 1:
    raise UserError(f"dvme.epochs={d.epochs} and dvme.batch_size={d.batch_size} must be >= 1")
  if not config.finetune.val_split:
    raise UserError("DVME selects its epoch on the validation split: set finetune.val_split")
  check_settings(workdir, config)  # before any work: a finished run is not overwritten under other settings
  names = {"train": config.data.train_split, "val": config.finetune.val_split, "test": config.data.eval_split}
  splits = feature_cache.load(d.features, list(dict.fromkeys(names.values())))
  train, val, test = (splits[names[k]] for k in ("train", "val", "test"))
  y = {k: _labels(s, config) for k, s in (("train", train), ("val", val), ("test", test))}
  subset = subsets.training_subset(y["train"], int(f.train_size), int(f.fold), config.seed)
  train_feats, y["train"] = tuple(f[subset] for f in train.features), y["train"][subset]
  num_outputs = (int(max(y["train"].max(), y["val"].max(), y["test"].max())) + 1
                 if config.finetune.task == "multiclass" else y["train"].shape[1])
  if train.class_names and config.finetune.task == "multiclass":
    num_outputs = max(num_outputs, len(train.class_names))
  mesh = make_mesh()
  batch = check_global_batch(int(d.batch_size), mesh, "dvme.batch_size")
  model = make_model(config, num_outputs)
  rng = jax.random.key(config.seed)
  init_feats = [jnp.zeros((1, f.shape[1]), jnp.float32) for f in train.features]
  params = jax.jit(lambda r: model.init(r, init_feats)["params"], out_shardings=replicated(mesh))(rng)
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=float(d.lr))
  opt_state = jax.jit(tx.init, out_shardings=replicated(mesh))(params)
  fwd = jax.jit(functools.partial(forward, model=model))
  step = jax.jit(functools.partial(train_step, model=model, tx=tx, task=config.finetune.task), donate_argnums=(0, 1))
  schedule = PlateauSchedule(base_lr=float(d.lr), mode="min", factor=float(d.plateau_factor),
                             lr_patience=int(d.lr_patience), stop_patience=int(d.stop_patience))
  history, best = [], None
  host_rng = np.random.default_rng(config.seed)
  for epoch in range(int(d.epochs)):
    losses = []
    order = (subsets.oversample_rows(y["train"], config.seed, epoch) if f.oversample
             else host_rng.permutation(len(y["train"])))
    for rows, keep in _batches(order, batch):
      feats = tuple(shard_host_array(f[rows], mesh) for f in train_feats)
      rng, sub = jax.random.split(rng)
      params, opt_state, loss = step(params, opt_state, feats, shard_host_array(y["train"][rows], mesh),
                                     shard_host_array(keep.astype(np.float32), mesh), sub,
                                     jnp.float32(schedule.learning_rate))
      losses.append(loss)
    val_loss = evaluate(params, val, y["val"], config, fwd, mesh, batch)[0]
    decision = schedule.step(val_loss, epoch)
    history.append({"epoch": epoch, "train_loss": float(np.mean(jax.device_get(losses))), "val_loss": val_loss,
                    "lr": float(decision.lr_scale * float(d.lr))})
    logging.info("epoch %d: train loss %.4f, val loss %.4f, lr %.2g%s", epoch, history[-1]["train_loss"],
                 val_loss, history[-1]["lr"], " (best)" if decision.improved else "")
    if decision.improved:
      best = (epoch, jax.device_get(params))
    if decision.should_stop:
      break
  best_epoch, best_params = best
  best_params = jax.device_put(best_params, replicated(mesh))
  test_loss, probs, att = evaluate(best_params, test, y["test"], config, fwd, mesh, batch)
  out = epath.Path(workdir)
  plots = {}
  if d.tsne:
    rows = tsne_rows(len(y["test"]), int(d.tsne_max_points), config.seed)
    inputs = tsne_inputs(best_params, test, rows, model, mesh, batch)  # every process: a collective pass
    if jax.process_index() == 0:
      out.mkdir(parents=True, exist_ok=True)
      plots["tsne"] = write_tsne(inputs, y["test"][rows], test.image_ids[rows], config.finetune.task,
                                 test.class_names, config.seed, out, concat=not d.attention)
  metrics = bootstrap.bootstrap_all(y["test"], probs, config.finetune.task, num_replicates=config.eval.num_replicates,
                                    seed=config.eval.bootstrap_seed)
  results = {"mode": "dvme", "sources": list(train.names), "attention": bool(d.attention), "tokens": d.tokens,
             "task": config.finetune.task, "num_train_images": int(len(y["train"])),
             "train_size": int(f.train_size), "fold": int(f.fold), "best_epoch": best_epoch,
             "epochs_run": len(history), "val_history": history, "test_loss": test_loss, "test": metrics,
             "fingerprints": train.fingerprints, "oversample": bool(f.oversample), "plots": plots,
             "wall_time_sec": time.time() - t_start, "completed": True, "workdir": workdir}
  if att is not None:
    cls = y["test"] if config.finetune.task == "multiclass" else (y["test"] > 0.5).astype(np.int32)
    by_class = np.asarray(dvme_lib.attention_by_class(jnp.asarray(att), jnp.asarray(cls), num_outputs))
    class_names = list(test.class_names)
    results["attention_by_class"] = {
        "sources": list(train.names), "weights": by_class.tolist(), "mean": np.asarray(att).mean(0).tolist(),
        "classes": [class_names[c] if c < len(class_names) else f"class {c}" for c in range(num_outputs)]}
    plots["attention_by_class"] = "attention_by_class.png"
  if jax.process_index() == 0:
    out.mkdir(parents=True, exist_ok=True)
    compare.save_predictions(os.fspath(out / "predictions_test.npz"), image_ids=test.image_ids,
                             case_ids=test.case_ids, labels=y["test"], probs=probs, task=config.finetune.task,
                             class_names=test.class_names)
    results["provenance"] = provenance.collect(t_start, time.time())
    loop.write_json(os.fspath(out / "config.json"), json.loads(config.to_json_best_effort()))
    loop.write_json(os.fspath(out / "results.json"), results)
    if "attention_by_class" in plots:  # drawn from the results.json just written (App. F)
      attention_plot.write(out / "results.json", out / plots["attention_by_class"])
  return results
