"""Paired comparison of two models on one test set (Azizi et al. 2021 App. B.1.1).

  python -m medssl_jax.evaluation.compare A/predictions_test.npz B/predictions_test.npz \
      [--num_replicates=1000 --seed=0 --out=diff.json]

For every metric: the difference A - B on the test set, its 95% interval over 1,000 paired
bootstrap replicates (the same resampled examples for both models), and whether the interval
excludes zero. Prediction files are written by fine-tuning / linear-evaluation runs.
"""
import argparse
import json

import numpy as np

from medssl_jax.evaluation import bootstrap, metrics


def save_predictions(path, *, image_ids, case_ids, labels, probs, task) -> None:
  np.savez(path, image_ids=np.asarray(image_ids).astype(str), case_ids=np.asarray(case_ids).astype(str),
           labels=np.asarray(labels), probs=np.asarray(probs, np.float32), task=np.asarray(task))


def load_predictions(path) -> dict:
  with np.load(path, allow_pickle=False) as f:
    missing = {"image_ids", "case_ids", "labels", "probs", "task"} - set(f.files)
    if missing:
      raise ValueError(f"{path} is not a prediction file (missing {sorted(missing)})")
    return {k: f[k] for k in f.files} | {"task": str(f["task"])}


def align(a: dict, b: dict, name_a="A", name_b="B"):
  """Reorders b to a's image order; errors if the two files do not cover the same test set."""
  if a["task"] != b["task"]:
    raise ValueError(f"{name_a} is {a['task']} but {name_b} is {b['task']}")
  ids_a, ids_b = a["image_ids"], b["image_ids"]
  if set(ids_a.tolist()) != set(ids_b.tolist()) or len(ids_a) != len(ids_b):
    raise ValueError(f"{name_a} and {name_b} are predictions on different test sets "
                     f"({len(ids_a)} vs {len(ids_b)} images, {len(set(ids_a.tolist()) ^ set(ids_b.tolist()))} differ)")
  pos = {k: i for i, k in enumerate(ids_b.tolist())}
  order = np.array([pos[k] for k in ids_a.tolist()])
  b = {k: (v[order] if isinstance(v, np.ndarray) and v.ndim and len(v) == len(order) else v) for k, v in b.items()}
  if not np.array_equal(a["labels"], b["labels"], equal_nan=a["labels"].dtype.kind == "f"):
    raise ValueError(f"{name_a} and {name_b} disagree on the labels of the same images")
  return a, b


def compare(a: dict, b: dict, num_replicates=1000, seed=0, groups=None) -> dict:
  a, b = align(a, b)
  fns = metrics.metric_functions(a["task"], a["probs"].shape[1])
  return {name: bootstrap.paired_bootstrap_difference(a["labels"], a["probs"], b["probs"], fn,
                                                      num_replicates=num_replicates, seed=seed, groups=groups)
          for name, fn in fns.items()}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("a")
  p.add_argument("b")
  p.add_argument("--num_replicates", type=int, default=1000)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--by_case", action="store_true", help="resample cases instead of images")
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  a, b = load_predictions(args.a), load_predictions(args.b)
  groups = a["case_ids"] if args.by_case else None
  result = compare(a, b, args.num_replicates, args.seed, groups)
  print(f"A = {args.a}\nB = {args.b}\n{'metric':20s} {'A - B':>9s}  95% CI                excludes 0")
  for name, r in result.items():
    print(f"{name:20s} {r['difference']:+9.4f}  [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]  {r['excludes_zero']}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"a": args.a, "b": args.b, "num_replicates": args.num_replicates, "seed": args.seed,
                 "metrics": result}, f, indent=2)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
