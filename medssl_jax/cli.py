"""The `medssl-jax` console script (also `python -m medssl_jax`): one name for every command.

  medssl-jax <command> [flags]      medssl-jax <command> --help      medssl-jax --help / --version

A user error ends a command with one line `error: ...` and exit status 2; a bug prints its
traceback and exits 1. MEDSSL_DEBUG=1 prints the traceback of user errors too.
"""
import importlib
import sys

import medssl_jax
from medssl_jax.commands import COMMANDS, closest


def usage() -> str:
  width = max(map(len, COMMANDS))
  rows = "\n".join(f"  {name:{width}s}  {line}" for name, (_, line) in COMMANDS.items())
  return (f"usage: medssl-jax <command> [flags]   (medssl-jax <command> --help: its flags)\n\n"
          f"Self-supervised pretraining and transfer evaluation for medical images.\n\ncommands:\n{rows}\n\n"
          f"  --version  print the version\n\nExit status: 0 done, 1 a bug (traceback), 2 a user error (one line), "
          f"75 stopped by a signal after saving a checkpoint (resumable).")


def main(argv=None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  if argv[1] == "--version":
    print(f"medssl-jax {medssl_jax.__version__}")
    sys.exit(0)
  name = argv[1]
  if name not in COMMANDS:
    guess = closest(name)
    hint = f"; did you mean '{guess}'?" if guess else ""
    print(f"error: unknown command {name!r}{hint} (medssl-jax --help lists the commands)", file=sys.stderr)
    sys.exit(2)
  module = importlib.import_module(f"medssl_jax.commands.{COMMANDS[name][0]}")
  module.cli([f"medssl-jax {name}"] + argv[2:])
