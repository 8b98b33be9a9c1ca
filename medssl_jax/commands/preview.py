"""Preview of the positive pairs a run trains on (SimCLR or MICLe), after augmentation.

  medssl-jax preview --config=configs/covid_cxr_micle.py --out=preview/ [--num_pairs=16]

Writes OUT/pairs.png (one row per pair: view a | view b, titled with the case id and the two
image ids) and OUT/pairs.json (for each pair: case id, image ids a and b, whether the two views
come from two different images). Any --config.key=value override applies, e.g. --config.pairing.
"""
import io
import os

from absl import flags
from ml_collections import config_flags
import numpy as np

from input_pipeline import backends, sources
from medssl_jax import jsonio
from medssl_jax.commands import common

FLAGS = flags.FLAGS


def write_preview(source, config, out_dir: str, num_pairs: int = 16) -> list:
  """Draws the first `num_pairs` pairs of step 0 (and following steps if needed)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  batch = min(config.train.batch_size, num_pairs, len(source.cases()) if config.pairing == "case" else len(source))
  pipeline = backends.get(config.data.pipeline)
  it = pipeline.pretrain_iterator(source, data_cfg=config.data, aug_cfg=config.aug, pairing=config.pairing,
                                  global_batch=batch, seed=config.seed)
  views_a, views_b, pairs = [], [], []
  while len(pairs) < num_pairs:
    b = next(it)
    for k in range(len(b["image_a"])):
      if len(pairs) == num_pairs:
        break
      ia, ib = int(b["image_a"][k]), int(b["image_b"][k])
      pairs.append({"case_id": str(source.case_ids[ia]), "image_id_a": str(source.image_ids[ia]),
                    "image_id_b": str(source.image_ids[ib]), "distinct": ia != ib})
      views_a.append(b["view_a"][k])
      views_b.append(b["view_b"][k])
  os.makedirs(out_dir, exist_ok=True)
  fig, axes = plt.subplots(len(pairs), 2, figsize=(4, 2 * len(pairs)), squeeze=False)
  for row, (pa, pb, p) in enumerate(zip(views_a, views_b, pairs)):
    for col, (img, iid) in enumerate(((pa, p["image_id_a"]), (pb, p["image_id_b"]))):
      ax = axes[row, col]
      ax.imshow(np.squeeze(img), cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=1)
      ax.set_title(f"{p['case_id']}: {iid}" if col == 0 else iid, fontsize=6)
      ax.axis("off")
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  plt.close(fig)
  jsonio.write_bytes(os.path.join(out_dir, "pairs.png"), buf.getvalue())
  jsonio.write_json(os.path.join(out_dir, "pairs.json"),
                    {"method": config.method, "pairing": config.pairing, "source": source.name, "pairs": pairs},
                    sort_keys=False)
  return pairs


def main(argv):
  del argv  # common.run refuses positional arguments
  config = FLAGS.config
  source = sources.load_source(config.data, config.data.train_split)
  pairs = write_preview(source, config, FLAGS.out, FLAGS.num_pairs)
  distinct = sum(p["distinct"] for p in pairs)
  print(f"{len(pairs)} {config.method}/{config.pairing} pairs ({distinct} from two different images) -> "
        f"{os.path.join(FLAGS.out, 'pairs.png')}, {os.path.join(FLAGS.out, 'pairs.json')}")


def _define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
  flags.DEFINE_string("out", None, "Output folder.")
  flags.DEFINE_integer("num_pairs", 16, "Number of pairs to draw.")
  flags.mark_flags_as_required(["config", "out"])


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main)
