"""Zero-shot evaluation of a fine-tuned model on another dataset, overall and per subgroup.

Azizi et al. 2021 Sec. 5.4 (distribution shift: a model fine-tuned on one dataset, evaluated
without further training on another whose labels map onto its own) and App. B.1.6 (metrics
per subgroup of a metadata column, e.g. skin type or sex).

  medssl-jax zero-shot --finetuned=FT_WORKDIR --config=configs/target.py \
      --label_map=0:0,1:1,2:1 [--subgroups=meta.csv --subgroup_column=sex] --out=DIR

- The model (architecture, number of outputs) comes from FT_WORKDIR/config.json and its latest
  checkpoint; the target data from the `data` section of --config (split data.eval_split).
- --label_map maps each model class to a target class ("model:target,..."); the probabilities of
  model classes that map to one target class are added. Without it, classes must match 1:1.
- --subgroups is a CSV with an `image_id` column and the --subgroup_column; every target image
  must appear in it. Metrics with bootstrap 95% intervals are reported for all images and for
  each subgroup, in DIR/zero_shot.json; predictions in DIR/predictions_zero_shot.npz.
"""
import json
import os

from absl import flags
import numpy as np
from medssl_jax import jsonio
from medssl_jax import settings
from medssl_jax.evaluation import bootstrap
import jax
import ml_collections
from input_pipeline import backends
from input_pipeline import sources
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.runs import classify
from medssl_jax.evaluation import compare
from medssl_jax.training.sharding import make_mesh
from medssl_jax.commands import common
from ml_collections import config_flags

FLAGS = flags.FLAGS


def parse_label_map(spec: str, num_model_classes: int) -> np.ndarray:
  """'0:0,1:1,2:1' -> array m with m[model_class] = target_class (identity when empty)."""
  if not spec:
    return np.arange(num_model_classes)
  mapping = np.full(num_model_classes, -1)
  for item in spec.split(","):
    try:
      src, dst = (int(x) for x in item.split(":"))
    except ValueError:
      raise ValueError(f"--label_map item {item!r}: expected model_class:target_class") from None
    if not 0 <= src < num_model_classes:
      raise ValueError(f"--label_map: model class {src} outside [0, {num_model_classes})")
    mapping[src] = dst
  if np.any(mapping < 0):
    raise ValueError(f"--label_map leaves model classes {np.flatnonzero(mapping < 0).tolist()} unmapped")
  return mapping


def map_probs(probs: np.ndarray, mapping: np.ndarray, num_target: int) -> np.ndarray:
  """Adds the probabilities of model classes mapped to the same target class."""
  out = np.zeros((len(probs), num_target), probs.dtype)
  for src, dst in enumerate(mapping):
    out[:, dst] += probs[:, src]
  return out


def subgroup_of(image_ids: np.ndarray, table_csv: str, column: str) -> np.ndarray:
  import pandas as pd
  if not os.path.isfile(table_csv):
    raise FileNotFoundError(f"--subgroups table {table_csv} does not exist")
  table = pd.read_csv(table_csv, dtype=str)
  if column not in table.columns:
    raise ValueError(f"--subgroup_column={column!r} is not a column of {table_csv} "
                     f"(columns: {', '.join(table.columns)})")
  if "image_id" not in table.columns:
    raise ValueError(f"{table_csv} needs an 'image_id' column to join on")
  lookup = dict(zip(table["image_id"], table[column]))
  missing = [i for i in image_ids if i not in lookup]
  if missing:
    raise ValueError(f"{len(missing)} target images are not in {table_csv}, e.g. {missing[:3]}")
  return np.array([lookup[i] for i in image_ids], dtype=object)


def evaluate_groups(labels, probs, groups, task: str, num_replicates: int, seed: int) -> dict:
  out = {"all": bootstrap.bootstrap_all(labels, probs, task, num_replicates=num_replicates, seed=seed)}
  if groups is not None:
    for g in sorted(set(groups)):
      sel = groups == g
      out[f"{g}"] = bootstrap.bootstrap_all(labels[sel], probs[sel], task, num_replicates=num_replicates,
                                            seed=seed)
      out[f"{g}"]["num_images"] = int(sel.sum())
  return out


def run(finetuned: str, target_config, label_map: str, subgroups: str, subgroup_column: str,
        out_dir: str, num_replicates: int = 1000, seed: int = 0) -> dict:

  cfg_path = os.path.join(finetuned, "config.json")
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(f"{cfg_path} not found: --finetuned must be the workdir of a fine-tuning run")
  with open(cfg_path) as f:
    ft = ml_collections.ConfigDict(settings.read_saved(json.load(f)))  # older runs: keys under their old names
  if ft.mode not in ("finetune", "linear_eval"):
    raise ValueError(f"{finetuned} is a {ft.mode!r} run, not a fine-tuning or linear-evaluation run")
  if label_map and ft.finetune.task != "multiclass":
    raise ValueError(f"--label_map maps the classes of a multiclass model, and {finetuned} is {ft.finetune.task!r} "
                     f"(one sigmoid per label); its labels are scored as they are: drop --label_map")
  params, batch_stats, _ = ckpt_lib.restore_weights(finetuned)
  num_outputs = int(np.asarray(params["classifier"]["kernel"]).shape[-1])
  source = sources.load_source(target_config.data, target_config.data.eval_split)
  mesh = make_mesh()
  state = classify.create_state(ft, mesh, num_outputs, jax.random.key(0))
  ckpt_lib.check_tree_shapes(params, state.params, f"fine-tuned run {finetuned}")
  put = lambda new, old: jax.device_put(new, jax.tree_util.tree_map(lambda x: x.sharding, old))
  state = state.replace(params=put(params, state.params), batch_stats=put(batch_stats, state.batch_stats))
  pipeline = backends.get(target_config.data.pipeline)
  # The fine-tuned run's own test transform (runs saved before the key existed: whole image).
  images, _ = pipeline.make_eval_arrays(source, ft.data.image_size, ft.data.channels,
                                       crop_fraction=ft.aug.get("eval_crop_fraction", 1.0))
  probs = classify.predict(state, images, mesh, ft.finetune.task)
  labels = np.asarray(source.labels)
  if ft.finetune.task == "multiclass":
    mapping = parse_label_map(label_map, num_outputs)
    probs = map_probs(probs, mapping, max(int(mapping.max()) + 1, source.num_classes))
  groups = subgroup_of(source.image_ids, subgroups, subgroup_column) if subgroups else None
  os.makedirs(out_dir, exist_ok=True)
  compare.save_predictions(os.path.join(out_dir, "predictions_zero_shot.npz"), image_ids=source.image_ids,
                           case_ids=source.case_ids, labels=labels, probs=probs, task=ft.finetune.task)
  out = {"finetuned": os.path.abspath(finetuned), "target": source.name, "label_map": label_map,
         "subgroup_column": subgroup_column or None,
         "metrics": evaluate_groups(labels, probs, groups, ft.finetune.task, num_replicates, seed)}
  jsonio.write_json(os.path.join(out_dir, "zero_shot.json"), out, sort_keys=False)
  return out


def main(argv):
  del argv  # common.run refuses positional arguments
  out = run(FLAGS.finetuned, FLAGS.config, FLAGS.label_map, FLAGS.subgroups, FLAGS.subgroup_column,
            FLAGS.out, FLAGS.num_replicates, FLAGS.seed)
  for group, metrics in out["metrics"].items():
    print(f"[{group}]")
    for name, r in metrics.items():
      if isinstance(r, dict) and "value" in r:
        print(f"  {name:20s} {r['value']:.4f}  [{r['ci_low']:.4f}, {r['ci_high']:.4f}]")


def _define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Config whose data section is the target dataset.")
  flags.DEFINE_string("finetuned", None, "Workdir of a fine-tuning run.")
  flags.DEFINE_string("label_map", "", "model_class:target_class,... (empty = identity).")
  flags.DEFINE_string("subgroups", "", "CSV with image_id and the subgroup column.")
  flags.DEFINE_string("subgroup_column", "", "Column of --subgroups to split the metrics by.")
  flags.DEFINE_string("out", None, "Output folder.")
  flags.DEFINE_integer("num_replicates", 1000, "Bootstrap replicates.")
  flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
  flags.mark_flags_as_required(["config", "finetuned", "out"])


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main)
