"""`medssl-jax prepare-data`: write a config's data set as ArrayRecord shards, for pods.

  medssl-jax prepare-data --config=configs/chexpert_finetune.py --out=/mnt/disks/data/chexpert \
      [--splits=train,valid] [--images_per_shard=1000]

Every split named (default: the config's data.train_split, finetune.val_split and data.eval_split) is
read through the config's `data.*` source (manifest, CheXpert folder, npz, synthetic) and written
to `<out>/<split>/` (a local folder or gs://: shards are staged locally one at a time and uploaded)
as shards plus an index (labels, case ids, image ids, class names):
`input_pipeline/sources/records.py`. Train from it with `--config.data.source=records
--config.data.path=<out>` and otherwise the same settings: the batches are the same as from the
original source. A split folder that already holds an index is refused (nothing is
overwritten); the index is written last, so an interrupted write is never read as a split.
"""
from absl import flags
from ml_collections import config_flags

from input_pipeline import sources
from input_pipeline.sources import records
from medssl_jax.commands import common
from medssl_jax.errors import UserError

FLAGS = flags.FLAGS


def _define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Config whose data.* settings name the data set.", lock_config=True)
  flags.DEFINE_string("out", None, "Output folder: a local path, a mounted disk or gs://bucket/dir (each shard "
                      "is staged in a local temporary file, uploaded, then deleted).")
  flags.DEFINE_list("splits", [], "Splits to write; default the config's train, validation and evaluation splits.")
  flags.DEFINE_integer("images_per_shard", 1000, "Images per shard file.")
  flags.DEFINE_integer("short_side", 0, "N > 0: store each image whose shorter side is above N resized once to a "
                       "shorter side of N (aspect kept, area filter; smaller images as they are) and re-encoded "
                       "(--encoding); train at data.image_size <= N. 0: each file's own bytes.", lower_bound=0)
  flags.DEFINE_enum("encoding", "jpeg", ["jpeg", "png"], "With --short_side: 'jpeg' (quality 95) for 8-bit "
                    "images, or 'png' (lossless); 16-bit images are always 16-bit PNG.")
  flags.mark_flags_as_required(["config", "out"])


def default_splits(config) -> list:
  names = [config.data.train_split, config.finetune.val_split, config.data.eval_split]
  return [s for i, s in enumerate(names) if s and s not in names[:i]]


def prepare(config, out: str, splits=(), images_per_shard: int = 1000, short_side: int = 0,
            encoding: str = "jpeg") -> list:
  """Writes each split; returns [{split, images, shards, folder}]."""
  if config.data.source == "records":
    raise UserError("data.source='records' is already prepared; point --config at the original source")
  splits = list(splits) or default_splits(config)
  loaded = {s: sources.load_source(config.data, s) for s in splits}  # all read (and checked) before writing
  done = []
  for split, source in loaded.items():
    r = records.write_split(source, out.rstrip("/") + "/" + split, images_per_shard, short_side, encoding)
    done.append({"split": split, **r})
  return done


def main(argv):
  del argv  # common.run refuses positional arguments
  for r in prepare(FLAGS.config, FLAGS.out, FLAGS.splits, FLAGS.images_per_shard, FLAGS.short_side, FLAGS.encoding):
    print(f"{r['split']}: {r['images']} images in {r['shards']} shard(s) -> {r['folder']}")


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main)
