"""Paired comparison of two models on one test set (Azizi et al. 2021 App. B.1.1).

  medssl-jax compare A/predictions_test.npz B/predictions_test.npz \
      [--num_replicates=N --seed=0 --out=diff.json]

For every metric: the difference A - B on the test set, its 95% interval over paired bootstrap
replicates (the same resampled examples for both models), and whether the interval excludes
zero. The number of replicates is by default the runs' own (`eval.num_replicates` in the
config.json beside each file: 1,000 in Azizi et al.'s protocol, 500 in MoCo-CXR's; the larger
when the two differ; 1,000 when neither records it). Prediction files are written by fine-tuning / linear-evaluation runs.

The metric is the one the runs report: each prediction file records the settings that define
it (task, `eval.case_level`, `eval.exclude_classes` as class indices, the class names), and
compare applies them, so its values of A and of B equal the `test` values of the two runs'
results.json exactly. Case-level files are compared on the case-averaged predictions with the
cases as the resampled units. Two files scored with different settings are refused. A file
from before these settings were recorded takes them from the config.json beside it.
"""

from absl import flags

from medssl_jax import jsonio
from medssl_jax.commands import common
from medssl_jax.errors import UserError
from medssl_jax.evaluation import compare as compare_lib

FLAGS = flags.FLAGS
DEFAULT_REPLICATES = 1000  # Azizi et al. App. B.1.1


def _define_flags() -> None:
  flags.DEFINE_integer("num_replicates", 0, "Paired bootstrap replicates (0: as the two runs recorded, else 1000).")
  flags.DEFINE_integer("seed", 0, "Seed of the bootstrap.")
  flags.DEFINE_bool("by_case", False, "Resample cases instead of images.")
  flags.DEFINE_string("out", "", "Also write the comparison to this JSON file (local or gs://).")


def main(argv) -> int:
  if len(argv) != 3:
    raise UserError(f"compare takes two prediction files A B, got {len(argv) - 1} argument(s) {argv[1:]}; "
                    f"e.g. medssl-jax compare A/predictions_test.npz B/predictions_test.npz")
  path_a, path_b = argv[1:]
  a, b = compare_lib.load_predictions(path_a), compare_lib.load_predictions(path_b)
  groups = a["case_ids"] if FLAGS.by_case else None
  if FLAGS.num_replicates < 0:
    raise UserError(f"--num_replicates={FLAGS.num_replicates}: expected a positive count (or 0: the runs' own)")
  recorded = [r for r in map(compare_lib.recorded_replicates, (path_a, path_b)) if r]
  replicates = FLAGS.num_replicates or max(recorded, default=DEFAULT_REPLICATES)
  result = compare_lib.compare(a, b, replicates, FLAGS.seed, groups)
  s = compare_lib.metric_settings(a)
  print(f"A = {path_a}\nB = {path_b}\nmetric: {s['task']}, {'case' if s['case_level'] else 'image'} level"
        + (f", classes {list(s['exclude_classes'])} left out of the sensitivity" if s["exclude_classes"] else "")
        + f"; {replicates} paired bootstrap replicates"
        + ("" if FLAGS.num_replicates else " (as the runs recorded)" if recorded else " (the default)"))
  print(f"{'metric':20s} {'A':>8s} {'B':>8s} {'A - B':>9s}  95% CI                excludes 0")
  for name, r in result.items():
    print(f"{name:20s} {r['a']:8.4f} {r['b']:8.4f} {r['difference']:+9.4f}  [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
          f"  {r['excludes_zero']}")
  if FLAGS.out:
    jsonio.write_json(FLAGS.out, {"a": path_a, "b": path_b, "num_replicates": replicates, "seed": FLAGS.seed,
                                  "metric_settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
                                  "metrics": result}, sort_keys=False)
  return 0


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main, args="A.npz B.npz")
