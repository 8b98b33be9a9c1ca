"""Watching a pretraining run: the representation's quality every `monitor.every` steps.

`loop.run`'s `on_log` hook for pretraining (runs/pretrain.py). At step 0 of a fresh run (the
weights it starts from), every `monitor.every` steps and at the last step it extracts the current
encoder's features (eval mode, no gradient, batches sharded on the mesh's data axis) of a fixed,
seeded subset of labelled images of `monitor.train_split` (the bank) and `monitor.eval_split`
(the queries), and scores them two ways:

* **kNN** (`evaluation/knn.py`): k = `monitor.knn_k` nearest bank rows by cosine similarity, votes
  weighted by exp(s / `monitor.knn_temperature`) (the DINO / InstDisc protocol: 20, 0.07);
* **linear probe** (`evaluation/linear_head.py`): a linear head on the standardised, stop-gradient
  features, fitted from zero with its own Adam (`monitor.probe_steps`, `monitor.probe_lr`) on the
  bank, scored on the queries. From zero at each evaluation rather than carried along: the value
  of a checkpoint then depends on that checkpoint only, so resuming changes nothing and
  `select-best --pretrain_dir` can compare checkpoints by it (MoCo-CXR chooses its pretraining
  checkpoints by linear evaluation).

Metrics: `knn/top1`, `knn/auc`, `probe/top1`, `probe/auc` (macro one-vs-rest AUC) for classes;
`knn/mean_auc`, `probe/mean_auc` for multi-label data (NaN labels left out). They go to
TensorBoard (those tags), to the console, and to `monitor.json` in the workdir (a list of
{"step", metric: value}; a resumed run keeps the entries up to its checkpoint). With
`monitor.keep_best=<metric>` the state with the best value is also kept in
`checkpoints_best/` (one; the earliest step on a tie), a checkpoint folder
`train.init_checkpoint` takes. The input-wait fraction and the step rate leave the hook's time out.

The images are decoded and resized once (the eval transform, `aug.eval_crop_fraction`) and kept
on the host as uint8: a few hundred MB at 224 px for the default 2,000 + 1,000 images.
"""
import json
import os

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from medssl_jax.errors import UserError
from medssl_jax.evaluation import knn
from medssl_jax.evaluation import linear_head
from medssl_jax.evaluation import metrics as metrics_lib
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training import loop
from medssl_jax.training.inference import batched_apply, shard_host_array
from medssl_jax.training.sharding import replicated
from medssl_jax.training.validation import best_step

HISTORY = "monitor.json"
BEST_DIR = "checkpoints_best"
MULTICLASS_METRICS = ("top1", "auc")
MULTILABEL_METRICS = ("mean_auc",)


def metric_names(config, multilabel: bool | None = None) -> tuple:
  """The metrics the monitor of `config` writes ('knn/top1', ...); with multilabel None, those of
  either kind of labels."""
  m = config.monitor
  kinds = [k for k, on in (("knn", m.knn), ("probe", m.probe)) if on]
  if multilabel is None:
    ends = MULTICLASS_METRICS + MULTILABEL_METRICS
  else:
    ends = MULTILABEL_METRICS if multilabel else MULTICLASS_METRICS
  return tuple(f"{k}/{e}" for k in kinds for e in ends)


def check_settings(config) -> None:
  """One-line refusals of monitor settings that cannot work (before anything is written)."""
  m = config.monitor
  every = int(m.every)
  if every < 0:
    raise UserError(f"monitor.every={every} must be >= 0 (steps between evaluations; 0 = off)")
  if not every:
    return
  if not (m.knn or m.probe):
    raise UserError("monitor.every > 0 with monitor.knn=False and monitor.probe=False: nothing to monitor; turn "
                    "one on, or set monitor.every=0")
  if m.knn and (int(m.knn_k) < 1 or not float(m.knn_temperature) > 0):
    raise UserError(f"monitor.knn_k={m.knn_k} must be >= 1 and monitor.knn_temperature={m.knn_temperature} > 0 "
                    f"(the DINO protocol: 20 and 0.07)")
  if m.probe and (int(m.probe_steps) < 1 or not float(m.probe_lr) > 0):
    raise UserError(f"monitor.probe_steps={m.probe_steps} must be >= 1 and monitor.probe_lr={m.probe_lr} > 0")
  if int(m.max_train_examples) < 2 or int(m.max_eval_examples) < 1 or int(m.batch_size) < 1:
    raise UserError(f"monitor.max_train_examples={m.max_train_examples} (>= 2), monitor.max_eval_examples="
                    f"{m.max_eval_examples} (>= 1) and monitor.batch_size={m.batch_size} (>= 1) must be positive")
  keep = str(m.get("keep_best", ""))
  if keep and keep not in metric_names(config):
    raise UserError(f"monitor.keep_best={keep!r}: not a monitor metric; use one of {list(metric_names(config))} "
                    f"(or '' to keep none)")


def _labelled_subset(source, limit: int, rng, what: str, round_to: int):
  """Indices of up to `limit` labelled images (seeded, sorted), a multiple of `round_to` (the devices)."""
  labels = np.asarray(source.labels)
  keep = np.flatnonzero(labels >= 0) if labels.ndim == 1 else np.flatnonzero(~np.all(np.isnan(labels), axis=1))
  if len(keep) > limit:
    keep = np.sort(rng.choice(keep, limit, replace=False))
  keep = keep[:len(keep) - len(keep) % round_to]
  if not len(keep):
    raise UserError(f"{what} has no labelled images (at least {round_to}, one per device, are needed): point it to "
                    f"a labelled split, or set monitor.every=0")
  return keep


def _uint8(images: np.ndarray) -> np.ndarray:
  return np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)


class PretrainMonitor:
  """The hook. Build it before the loop (it loads and resizes its images once)."""

  def __init__(self, config, mesh, pipeline, sources, *, writer, workdir: str, start_step: int, num_steps: int):
    m = config.monitor
    self.config, self.mesh, self.writer, self.num_steps = config, mesh, writer, int(num_steps)
    self.every, self.batch_size = int(m.every), int(m.batch_size)
    self.path = os.path.join(workdir, HISTORY)
    train_split = str(m.train_split) or config.data.train_split
    rng = np.random.default_rng(config.seed)
    arrays = {}
    n_dev = mesh.devices.size
    for name, split, limit in (("train", train_split, int(m.max_train_examples)),
                               ("eval", str(m.eval_split), int(m.max_eval_examples))):
      source = sources.load_source(config.data, split)
      idx = _labelled_subset(source, limit, rng, f"monitor.{name}_split={split!r} of data.source="
                             f"{config.data.source!r}", n_dev)
      images, labels = pipeline.make_eval_arrays(source, config.data.image_size, config.data.channels, indices=idx,
                                                 crop_fraction=config.aug.eval_crop_fraction)
      arrays[name] = (_uint8(images), np.asarray(labels))
      self.num_classes = source.num_classes
    (self.train_x, self.train_y), (self.eval_x, self.eval_y) = arrays["train"], arrays["eval"]
    self.multilabel = self.train_y.ndim == 2
    self.names = metric_names(config, self.multilabel)
    self.keep_best = str(m.get("keep_best", ""))
    if self.keep_best and self.keep_best not in self.names:
      raise UserError(f"monitor.keep_best={self.keep_best!r}: the labels of this data set are "
                      f"{'multi-label' if self.multilabel else 'classes'}, whose metrics are {list(self.names)}")
    self.ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, BEST_DIR), keep=1) if self.keep_best else None
    self.history = self._resume(start_step)
    self._features = None
    logging.info("Monitor every %d steps: %s on %d %s images (bank / probe fit: %d %s images)", self.every,
                 ", ".join(self.names), len(self.eval_x), m.eval_split, len(self.train_x), train_split)

  def _resume(self, start_step: int) -> list:
    history = []
    if epath.Path(self.path).is_file():  # a metric that was NaN is null in the file
      saved = json.loads(epath.Path(self.path).read_text())
      history = [{k: float("nan") if v is None else v for k, v in h.items()} for h in saved if h["step"] <= start_step]
    if self.ckpt is not None:
      for step in self.ckpt.manager.all_steps():
        if step > start_step:  # a best state of steps a resumed run re-does
          self.ckpt.manager.delete(step)
      saved = self.ckpt.latest_step()
      if history and best_step(history, self.keep_best) != saved:
        logging.warning("%s: its best %s (step %s) is not the state in %s (step %s); the selection restarts at "
                        "step %d", self.path, self.keep_best, best_step(history, self.keep_best), BEST_DIR, saved,
                        start_step)
        history = [h for h in history if h["step"] == start_step]
    return history

  def features(self, state, images_u8: np.ndarray) -> np.ndarray:
    if self._features is None:  # compiled once: the weights are an argument, not a constant of each evaluation
      apply_fn = state.apply_fn
      self._features = jax.jit(lambda v, x: apply_fn(v, x.astype(jnp.float32) / 255.0, train=False, method="features"))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return batched_apply(lambda x: self._features(variables, x), images_u8, self.mesh, self.batch_size)

  def score(self, state) -> dict:
    """{metric: value} of `state`'s encoder."""
    f_train = self.features(state, self.train_x)
    f_eval = self.features(state, self.eval_x)
    out, m = {}, self.config.monitor
    if m.knn:
      if self.multilabel:
        targets, known = knn.multilabel_targets(self.train_y)
      else:
        targets, known = knn.one_hot_targets(self.train_y, self.num_classes)
      rep = replicated(self.mesh)
      bank, targets, known = (jax.device_put(a, rep) for a in (jnp.asarray(f_train), targets, known))
      scores = batched_apply(lambda q: knn.knn_scores(bank, targets, known, q, k=int(m.knn_k),
                                                      temperature=float(m.knn_temperature)),
                             f_eval, self.mesh, self.batch_size)
      out.update(self._metrics("knn", scores))
    if m.probe:
      y = self.train_y.astype(np.float32) if self.multilabel else self.train_y.astype(np.int32)
      head = linear_head.fit(shard_host_array(f_train, self.mesh), shard_host_array(y, self.mesh),
                             num_outputs=self.num_classes, multilabel=self.multilabel, steps=int(m.probe_steps),
                             lr=float(m.probe_lr))
      probs = batched_apply(lambda q: linear_head.predict(head, q, multilabel=self.multilabel), f_eval, self.mesh,
                            self.batch_size)
      out.update(self._metrics("probe", probs))
    return out

  def _metrics(self, kind: str, scores: np.ndarray) -> dict:
    scores = np.asarray(scores, np.float64)
    if self.multilabel:
      with np.errstate(all="ignore"):
        per = metrics_lib.auc_per_label(self.eval_y, scores)
      return {f"{kind}/mean_auc": float(np.nanmean(per)) if np.any(np.isfinite(per)) else float("nan")}
    return {f"{kind}/top1": metrics_lib.top_k_accuracy(self.eval_y, scores, 1),
            f"{kind}/auc": metrics_lib.auc_ovr(self.eval_y, scores)}

  def __call__(self, step: int, state):
    if step % self.every and step != self.num_steps:
      return None
    if any(h["step"] == step for h in self.history):  # step 0 of a run resumed at 0, already scored
      return None
    values = self.score(state)
    self.history.append({"step": int(step), **values})
    self.writer.write_scalars(step, values)
    if self.ckpt is not None and best_step(self.history, self.keep_best) == step:
      self.ckpt.save(step, state)
    loop.write_json(self.path, self.history)
    logging.info("step %d  monitor  %s", step, "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
    return None

  def summary(self) -> dict:
    """results.json entries."""
    out = {"monitor_history": self.history}
    if self.keep_best:
      out["monitor_best"] = {"metric": self.keep_best, "step": best_step(self.history, self.keep_best),
                             "checkpoint": BEST_DIR}
    return out

  def close(self):
    if self.ckpt is not None:
      self.ckpt.close()
