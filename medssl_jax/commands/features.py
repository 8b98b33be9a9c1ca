"""`medssl-jax features`: the frozen encoder's features of one data split, to a .npz file.

  medssl-jax features --config=configs/chexpert_finetune.py:local --checkpoint=WORKDIR \
      --split=test --out=features_test.npz

The encoder of `--checkpoint` (a run's workdir or its checkpoints/ folder: pretraining,
fine-tuning or imported weights) is rebuilt from the config's `model.*` settings and applied in
inference mode (running batch-norm statistics) to the split's images, preprocessed as evaluation
preprocesses them (the config's `data.image_size`, `data.channels`, `aug.eval_crop_fraction`;
no augmentation). Batches are sharded over every device of every process (`inference.py`); the
images are read in chunks of `--chunk` so a large split never sits in host memory whole.

The file holds `features` (N, D) float32 (the encoder's pooled output, what the linear head of
linear evaluation sees), `image_ids`, `case_ids`, `labels` (as the source gives them:
class ids, or multi-label values with -1 = uncertain and NaN = missing), `class_names`, and what
made them: `checkpoint`, `step`, `split`, `config` (the model and data settings, JSON), and two
fingerprints: `encoder_sha256` (of the encoder weights used) and `data_sha256` (of the data file
`data.path`, or of a folder's file list; '' for the synthetic data), by which a consumer of several
cached splits refuses a mix of encoders or data files (`feature_cache.py`). Multi-host:
every process computes, process 0 writes (`--out` may be gs://). Used by DVME and the transfer
benchmark, which train on cached features.
"""
import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from etils import epath
from ml_collections import config_flags

from medssl_jax import jsonio
from medssl_jax.errors import UserError
from medssl_jax.models import classifier_from_config
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax import weights
from input_pipeline import backends
from input_pipeline import sources
from medssl_jax.training.inference import batched_apply
from medssl_jax.training.sharding import make_mesh
from medssl_jax.training.sharding import replicated
from medssl_jax.commands import common

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command's flags, defined only when it runs (the module is also imported as a library,
  beside other commands' flags of the same names)."""
  config_flags.DEFINE_config_file("config", None, "Config file: its model.* and data.* settings.", lock_config=True)
  flags.DEFINE_string("checkpoint", "", "Workdir (or checkpoints/ folder) whose encoder is used; default "
                      "the config's train.init_checkpoint.")
  flags.DEFINE_string("split", "", "Data split; default the config's data.eval_split.")
  flags.DEFINE_string("out", None, "Output .npz file (local or gs://).")
  flags.DEFINE_integer("batch_size", 256, "Images per forward pass (all devices together).")
  flags.DEFINE_integer("chunk", 4096, "Images decoded into host memory at a time.")
  flags.mark_flags_as_required(["config", "out"])


def encoder_and_weights(config, checkpoint: str):
  """(apply_fn(images) -> features, variables) for the encoder of `checkpoint`, shape-checked
  against the encoder that the config's model.* settings build."""
  model = classifier_from_config(config.model, num_outputs=1, frozen_encoder=True)
  shape = (1, config.data.image_size, config.data.image_size, config.data.channels)
  wanted = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32), train=False))
  weights.check_settings(checkpoint, config.model, f"--checkpoint={checkpoint}", data_cfg=config.data)  # e.g. imported weights' padding
  params, batch_stats, step = ckpt_lib.restore_weights(checkpoint)
  where = f"--checkpoint={checkpoint} (step {step})"
  variables = {"params": {"encoder": ckpt_lib.load_subtree(params, wanted["params"], "encoder", where)},
               "batch_stats": {"encoder": ckpt_lib.load_subtree(batch_stats, wanted["batch_stats"], "encoder",
                                                                where)}}

  def apply(variables, x):
    return model.apply(variables, x, method=lambda m, images: m.encoder(images, train=False)).astype(jnp.float32)
  return apply, variables, step


def tree_sha256(tree) -> str:
  """SHA-256 over a pytree's leaves (paths, dtypes, shapes and bytes), in path order."""
  h = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(tree)[0], key=lambda kv: jax.tree_util.keystr(kv[0])):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def file_sha256(path) -> str:
  """SHA-256 of one file's bytes (local or gs://), read in 1 MiB blocks."""
  h = hashlib.sha256()
  with epath.Path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def data_sha256(data_cfg) -> str:
  """SHA-256 of the data file (npz, manifest CSV); of the sorted file names and sizes of a folder;
  '' when there is no data file (synthetic)."""
  path = epath.Path(data_cfg.path) if data_cfg.path else None
  if path is None or not path.exists():
    return ""
  if not path.is_dir():
    return file_sha256(path)
  h = hashlib.sha256()
  for f in sorted(p for p in path.rglob("*") if p.is_file()):
    h.update(f"{f.relative_to(path)}|{f.stat().length}\n".encode())
  return h.hexdigest()


def extract(config, checkpoint: str, split: str, batch_size: int = 256, chunk: int = 4096) -> dict:
  """The features of `split` and their ids/labels (see the module docstring), on every process."""
  if not checkpoint:
    raise UserError("no checkpoint given: pass --checkpoint=WORKDIR (or set train.init_checkpoint in the config)")
  if chunk < 1 or batch_size < 1:
    raise UserError(f"--chunk={chunk} and --batch_size={batch_size} must be >= 1")
  source = sources.load_source(config.data, split)
  pipeline = backends.get(config.data.pipeline, config.data.get("host_workers", 0))
  mesh = make_mesh()
  apply, variables, step = encoder_and_weights(config, checkpoint)
  encoder_sha = tree_sha256(variables)
  variables = jax.device_put(variables, replicated(mesh))
  fn = jax.jit(lambda x: apply(variables, x))
  parts = []
  for start in range(0, len(source), chunk):
    indices = np.arange(start, min(start + chunk, len(source)))
    images, _ = pipeline.make_eval_arrays(source, config.data.image_size, config.data.channels, indices=indices,
                                          crop_fraction=config.aug.eval_crop_fraction)
    parts.append(np.asarray(batched_apply(fn, images, mesh, batch_size), np.float32))
  return {"features": np.concatenate(parts), "image_ids": source.image_ids, "case_ids": source.case_ids,
          "labels": source.labels, "class_names": np.asarray(source.class_names, dtype=str), "step": int(step),
          "encoder_sha256": encoder_sha, "data_sha256": data_sha256(config.data)}


def save(path: str, out: dict, *, checkpoint: str, split: str, config) -> None:
  settings = {"model": json.loads(config.model.to_json_best_effort()),
              "data": {k: config.data[k] for k in ("source", "path", "image_size", "channels")},
              "aug.eval_crop_fraction": config.aug.eval_crop_fraction}
  epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
  with jsonio.open_atomic(path) as f:
    np.savez(f, **out, checkpoint=np.asarray(checkpoint), split=np.asarray(split),
             config=np.asarray(json.dumps(settings, sort_keys=True)))


def main(argv):
  del argv  # common.run refuses positional arguments
  config = FLAGS.config
  checkpoint = FLAGS.checkpoint or config.train.init_checkpoint
  split = FLAGS.split or config.data.eval_split
  out = extract(config, checkpoint, split, FLAGS.batch_size, FLAGS.chunk)
  if jax.process_index() == 0:
    save(FLAGS.out, out, checkpoint=checkpoint, split=split, config=config)
    print(f"{FLAGS.out}: {out['features'].shape[0]} images x {out['features'].shape[1]} features of split "
          f"{split!r} from {checkpoint} (step {out['step']})")


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main)
