"""Label-efficiency plot: a test metric against the label fraction, one line per initialisation.

  medssl-jax label-efficiency --metric=top1 --out=label_efficiency.png \
      workdirs/ft_*/results.json

Each results.json of a fine-tuning / linear-evaluation run contributes one point (its
`label_fraction`, its test metric with the bootstrap 95% interval). Runs are grouped into lines
by "<mode> / <init>" (or by --group_by); several draws of one fraction are averaged and the
interval drawn is the mean of the draws' intervals. A Markdown table with the same numbers is
written beside the PNG.
"""
import os

from absl import flags

from medssl_jax import jsonio
from medssl_jax.commands import common
from medssl_jax.errors import UserError
from medssl_jax.evaluation import label_efficiency

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("metric", "top1", "Test metric of the results.json files to plot.")
  flags.DEFINE_string("group_by", "", "results.json key naming the lines (default: mode / init).")
  flags.DEFINE_string("out", "label_efficiency.png", "PNG to write; the Markdown table goes beside it (.md).")
  flags.DEFINE_string("title", "", "Title of the plot.")


def main(argv) -> int:
  results = argv[1:]
  if not results:
    raise UserError("label-efficiency needs the results.json files of fine-tuning / linear-evaluation runs; "
                    "e.g. medssl-jax label-efficiency workdirs/ft_*/results.json")
  summary = label_efficiency.summarise(label_efficiency.load_points(results, FLAGS.metric, FLAGS.group_by))
  label_efficiency.plot(summary, FLAGS.metric, FLAGS.out, FLAGS.title)
  table = label_efficiency.markdown_table(summary, FLAGS.metric)
  jsonio.write_text(os.path.splitext(FLAGS.out)[0] + ".md", table)
  print(table)
  print(f"Wrote {FLAGS.out}")
  return 0


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main, args="RESULTS.json ...")
