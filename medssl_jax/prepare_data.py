"""`medssl-jax prepare-data`: write a config's data set as ArrayRecord shards, for pods.

  medssl-jax prepare-data --config=configs/chexpert_finetune.py --out=/mnt/disks/data/chexpert \
      [--splits=train,valid] [--images_per_shard=1000]

Every split named (default: the config's data.train_split, eval.val_split and data.eval_split) is
read through the config's `data.*` source (manifest, CheXpert folder, npz, synthetic) and written
to `<out>/<split>/` (a local folder or gs://: shards are staged locally one at a time and uploaded)
as shards plus an index (labels, case ids, image ids, class names):
`input_pipeline/sources/records.py`. Train from it with `--config.data.source=records
--config.data.path=<out>` and otherwise the same settings: the batches are the same as from the
original source. A split folder that already holds an index is refused (nothing is
overwritten); the index is written last, so an interrupted write is never read as a split.
"""
from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Config whose data.* settings name the data set.", lock_config=True)
  flags.DEFINE_string("out", None, "Output folder: a local path, a mounted disk or gs://bucket/dir (each shard "
                      "is staged in a local temporary file, uploaded, then deleted).")
  flags.DEFINE_list("splits", [], "Splits to write; default the config's train, validation and evaluation splits.")
  flags.DEFINE_integer("images_per_shard", 1000, "Images per shard file.")
  flags.mark_flags_as_required(["config", "out"])


def default_splits(config) -> list:
  names = [config.data.train_split, config.eval.get("val_split", ""), config.data.eval_split]
  return [s for i, s in enumerate(names) if s and s not in names[:i]]


def prepare(config, out: str, splits=(), images_per_shard: int = 1000) -> list:
  """Writes each split; returns [{split, images, shards, folder}]."""
  from input_pipeline import sources
  from input_pipeline.sources import records
  from medssl_jax.errors import UserError
  if config.data.source == "records":
    raise UserError("data.source='records' is already prepared; point --config at the original source")
  splits = list(splits) or default_splits(config)
  loaded = {s: sources.load_source(config.data, s) for s in splits}  # all read (and checked) before writing
  done = []
  for split, source in loaded.items():
    r = records.write_split(source, out.rstrip("/") + "/" + split, images_per_shard)
    done.append({"split": split, **r})
  return done


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  for r in prepare(FLAGS.config, FLAGS.out, FLAGS.splits, FLAGS.images_per_shard):
    print(f"{r['split']}: {r['images']} images in {r['shards']} shard(s) -> {r['folder']}")


if __name__ == "__main__":
  from medssl_jax import errors
  _define_flags()
  errors.guard(app.run)(main)
