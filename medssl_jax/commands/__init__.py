"""The `medssl-jax` sub-commands, one module each; this table is the command surface.

A command module defines its absl flags in a function, an absl-style `main(argv)` and
`cli(argv)` (argv[0] is "medssl-jax <name>"), which hands all three to `common.run`: flag errors
as one line and exit 2, `--help` that exits 0, main under `errors.guard`; `cli` ends with
SystemExit. Adding a command: one module here and one row below.
"""
import difflib

# name: (module under medssl_jax.commands, one line for `medssl-jax --help`)
COMMANDS = {
    "train": ("train", "pretrain, fine-tune, linear-evaluate or train DVME, as --config says"),
    "throughput": ("throughput", "time the train step and the host input pipeline"),
    "preview": ("preview", "write PNGs of the augmented positive pairs a run would train on"),
    "prepare-data": ("prepare_data", "write a data set as ArrayRecord shards (data.source='records')"),
    "features": ("features", "the frozen encoder's features of one split, to a .npz file"),
    "compare": ("compare", "paired bootstrap difference of every metric between two runs"),
    "label-efficiency": ("label_efficiency", "plot + table of a test metric against the label fraction"),
    "zero-shot": ("zero_shot", "evaluate a fine-tuned model on another data set, overall and per subgroup"),
    "sweep": ("sweep", "a grid of config overrides as training jobs"),
    "select-best": ("select_best", "the best grid point of a sweep on validation, then repeats"),
    "import-weights": ("import_weights", "another library's weights -> a checkpoint every mode reads"),
    "export-weights": ("export_weights", "a checkpoint -> a torchvision / timm weights file"),
    "local-multiprocess": ("local_multiprocess", "N local processes as N hosts, for debugging pod runs"),
}


def closest(name: str) -> str | None:
  """The command name nearest to a misspelt one, or None."""
  match = difflib.get_close_matches(name, COMMANDS, n=1, cutoff=0.5)
  return match[0] if match else None
