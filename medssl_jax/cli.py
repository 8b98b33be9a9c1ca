"""The `medssl-jax` console script: one name for the project's commands.

  medssl-jax train     --config=... --workdir=...     (= python -m medssl_jax.main)
  medssl-jax throughput --config=...                  (= python -m medssl_jax.throughput)
  medssl-jax preview   --config=... --out=DIR         (= python -m input_pipeline.preview)
  medssl-jax compare   A.npz B.npz                    (= python -m medssl_jax.evaluation.compare)
  medssl-jax features  --config=... --checkpoint=DIR --split=S --out=F.npz (frozen encoder features)
  medssl-jax prepare-data --config=... --out=DIR      (the data set as ArrayRecord shards: data.source='records')
  medssl-jax sweep     --config=... --workdir_root=DIR (a grid of runs; = python -m medssl_jax.tools.sweep)
  medssl-jax select-best --sweep_dir=DIR --metric=M   (best grid point on validation, then repeats)
  medssl-jax local-multiprocess --num_processes N -- ARGS (N local processes as N hosts)

A user error ends a command with one line `error: ...` and exit status 2; a bug prints its
traceback and exits 1. MEDSSL_DEBUG=1 prints the traceback of user errors too.
"""
import runpy
import sys

from medssl_jax import errors

COMMANDS = {
    "train": "medssl_jax.main",
    "throughput": "medssl_jax.throughput",
    "preview": "input_pipeline.preview",
    "compare": "medssl_jax.evaluation.compare",
    "features": "medssl_jax.features",
    "prepare-data": "medssl_jax.prepare_data",
    "import-weights": "medssl_jax.import_weights",
    "export-weights": "medssl_jax.export_weights",
    "sweep": "medssl_jax.tools.sweep",
    "select-best": "medssl_jax.tools.select_best",
    "local-multiprocess": "medssl_jax.tools.local_multiprocess",
}


def main() -> None:
  if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    print(__doc__.strip())
    sys.exit(0 if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help") else 2)
  module = COMMANDS[sys.argv[1]]
  sys.argv = [f"medssl-jax {sys.argv[1]}"] + sys.argv[2:]
  errors.guard(runpy.run_module)(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main()
