"""Turns a grid of config overrides into training jobs (one per point of the grid).

Example:
  medssl-jax sweep --config=configs/base.py --workdir_root=/tmp/sweep \
      --grid 'optim.base_lr=0.001,0.01' --grid 'optim.weight_decay=0,1e-4' \
      --extra '--config.train.num_steps=100' --mode print

Each trial is one point of the Cartesian product of the grids; it gets the workdir
`<workdir_root>/<key1>=<v1>,<key2>=<v2>` (characters other than letters, digits and
`._=,+-` replaced by `_`) and the command

  python -m medssl_jax train --config=... --workdir=... --config.<key1>=<v1> ... <extra>

Modes:
  print    print one command per line (stdout holds nothing else), to submit as separate
           jobs with any scheduler.
  tpu_vm   print one `bash launch/tpu_vm.sh run ...` line per trial (needs --tpu_name and
           --zone); each trial needs its own TPU VM, or run them one after another.
  local    run the trials here one after another; stop with an error at the first failure.

`<workdir_root>/sweep.json` lists the trials (overrides, workdir, command, status).

Presets (`--preset NAME`, combinable with more --grid):
  azizi_finetune  optim.base_lr in 10**linspace(-3.5, -0.5, 7) x optim.weight_decay in
                  {1e-5, 1e-4, 1e-3, 0.0}: the fine-tuning grid of Azizi et al. (2021),
                  28 trials.
"""
import hashlib
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from typing import Any, Optional, Sequence

from absl import flags

from medssl_jax import jsonio
from medssl_jax.commands import common
from medssl_jax.errors import UserError

DEFAULT_MODULE = "medssl_jax train"  # what `python -m` runs: the package's train command
SWEEP_FILE = "sweep.json"
# Longest trial folder name kept as it is; longer ones are cut and given a hash suffix.
MAX_DIRNAME = 200

FLAGS = flags.FLAGS


def _azizi_finetune() -> list[tuple[str, list[str]]]:
  # 10 ** np.linspace(-3.5, -0.5, 7), written to 6 significant digits.
  lrs = [f"{10 ** (-3.5 + 0.5 * i):.6g}" for i in range(7)]
  return [
      ("optim.base_lr", lrs),
      ("optim.weight_decay", ["1e-05", "0.0001", "0.001", "0.0"]),
  ]


PRESETS = {
    "azizi_finetune": _azizi_finetune,
}


def parse_grid_spec(spec: str) -> tuple[str, list[str]]:
  """Parses 'key=v1,v2,...' into (key, [v1, v2, ...]).

  A leading `--config.` or `config.` on the key is dropped.

  Args:
    spec: the grid specification.

  Returns:
    (key, values), values as the strings given.

  Raises:
    ValueError: if the spec has no `=`, an empty key, or an empty value.
  """
  if "=" not in spec:
    raise ValueError(
        f"grid spec {spec!r} should look like 'optim.base_lr=0.001,0.01'")
  key, values = spec.split("=", 1)
  key = key.strip()
  for prefix in ("--config.", "config."):
    if key.startswith(prefix):
      key = key[len(prefix):]
  if not key:
    raise ValueError(f"grid spec {spec!r} has no key")
  vals = [v.strip() for v in values.split(",")]
  if not values.strip() or any(not v for v in vals):
    raise ValueError(f"grid spec {spec!r} has an empty value")
  return key, vals


def grid_trials(grid_specs: Sequence[Any]) -> list[dict[str, str]]:
  """Cartesian product of grids, in the order given (last key varies fastest).

  Args:
    grid_specs: each either a 'key=v1,v2' string or a (key, [values]) pair.

  Returns:
    One dict {key: value} per trial; no specs gives one trial with no overrides.

  Raises:
    ValueError: on a malformed spec or a key given twice.
  """
  axes: list[tuple[str, list[str]]] = []
  for spec in grid_specs:
    if isinstance(spec, str):
      key, values = parse_grid_spec(spec)
    else:
      key, values = spec
      values = [str(v) for v in values]
    if key in [k for k, _ in axes]:
      raise ValueError(f"grid key {key!r} given more than once")
    axes.append((key, list(values)))
  keys = [k for k, _ in axes]
  return [dict(zip(keys, combo))
          for combo in itertools.product(*(v for _, v in axes))]


def trial_dirname(overrides: dict[str, str]) -> str:
  """Folder name of a trial: 'k1=v1,k2=v2', sanitised, 'default' if empty."""
  if not overrides:
    return "default"
  name = ",".join(f"{k}={v}" for k, v in overrides.items())
  name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)
  if len(name) > MAX_DIRNAME:
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    name = f"{name[:MAX_DIRNAME - 11]}_{digest}"
  return name


def join_path(root: str, name: str) -> str:
  """Joins a local or gs:// root and a folder name."""
  return root.rstrip("/") + "/" + name if root else name


def trial_command(config: str,
                  workdir: str,
                  overrides: dict[str, str],
                  extra: Sequence[str] = (),
                  python: str = "python",
                  module: str = DEFAULT_MODULE) -> list[str]:
  """The argv of one trial.

  Args:
    config: value of --config (e.g. 'configs/base.py' or 'configs/x.py:arg').
    workdir: the trial's workdir.
    overrides: {key: value}, passed as --config.key=value.
    extra: more arguments appended after the overrides.
    python: Python interpreter.
    module: module run with `-m`.

  Returns:
    The command as a list of arguments.
  """
  cmd = [python, "-m", *module.split(), f"--config={config}", f"--workdir={workdir}"]
  cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
  cmd += list(extra)
  return cmd


def tpu_vm_command(config: str, workdir: str, overrides: dict[str, str],
                   extra: Sequence[str], tpu_name: str, zone: str,
                   project: str = "") -> list[str]:
  """A `bash launch/tpu_vm.sh run ...` line for one trial."""
  cmd = ["bash", "launch/tpu_vm.sh", "run", "--name", tpu_name, "--zone", zone]
  if project:
    cmd += ["--project", project]
  cmd += ["--config", config, "--workdir", workdir, "--"]
  cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
  return cmd + list(extra)


def build_trials(config: str, workdir_root: str, grid: Sequence[Any],
                 extra: Sequence[str], python: str,
                 module: str) -> list[dict[str, Any]]:
  """Trials with overrides, workdir, argv and status 'pending'."""
  trials = []
  for i, overrides in enumerate(grid_trials(grid)):
    workdir = join_path(workdir_root, trial_dirname(overrides))
    argv = trial_command(config, workdir, overrides, extra, python, module)
    trials.append({
        "index": i,
        "overrides": overrides,
        "workdir": workdir,
        "argv": argv,
        "command": shlex.join(argv),
        "status": "pending",
    })
  names = [t["workdir"] for t in trials]
  if len(set(names)) != len(names):
    raise ValueError("two trials map to the same workdir after sanitising; "
                     "make the grid values distinct")
  return trials


def write_sweep_file(workdir_root: str, record: dict[str, Any]) -> Optional[str]:
  """Writes `record` as <workdir_root>/sweep.json; returns the path (None if skipped)."""
  path = join_path(workdir_root, SWEEP_FILE)
  text = json.dumps(record, indent=2) + "\n"
  if "://" in workdir_root:
    try:
      from tensorflow.io import gfile  # pylint: disable=g-import-not-at-top
    except ImportError:
      print(f"medssl-jax sweep: warning: cannot write {path} (needs tensorflow for "
            f"remote paths); skipped", file=sys.stderr)
      return None
    try:
      gfile.makedirs(workdir_root)
      with gfile.GFile(path, "w") as f:
        f.write(text)
    except Exception as e:  # pylint: disable=broad-except
      print(f"medssl-jax sweep: warning: cannot write {path}: {e}", file=sys.stderr)
      return None
    return path
  os.makedirs(workdir_root or ".", exist_ok=True)
  jsonio.write_text(path, text)
  return path


def run_local(trials: list[dict[str, Any]], save) -> int:
  """Runs trials one after another; stops at the first failure.

  Args:
    trials: from build_trials; their status is updated in place.
    save: called after every status change (writes sweep.json).

  Returns:
    0 if all succeeded, else the failing trial's exit code.
  """
  n = len(trials)
  for t in trials:
    t["status"] = "running"
    save()
    print(f"medssl-jax sweep: trial {t['index'] + 1}/{n}: {t['command']}",
          file=sys.stderr, flush=True)
    code = subprocess.call(t["argv"])
    t["returncode"] = code
    if code != 0:
      t["status"] = "failed"
      for later in trials[t["index"] + 1:]:
        later["status"] = "not_run"
      save()
      print(f"medssl-jax sweep: error: trial {t['index'] + 1}/{n} "
            f"({trial_dirname(t['overrides'])}) failed with exit code {code}; "
            f"{n - t['index'] - 1} later trial(s) not run.\n"
            f"  command: {t['command']}\n  workdir: {t['workdir']}",
            file=sys.stderr, flush=True)
      return code if code > 0 else 1
    t["status"] = "done"
    save()
  print(f"medssl-jax sweep: all {n} trial(s) done", file=sys.stderr)
  return 0


def _define_flags() -> None:
  flags.DEFINE_string("config", None, "Config file for every trial, e.g. configs/base.py[:arg].")
  flags.DEFINE_string("workdir_root", None, "Folder holding one workdir per trial (and sweep.json).")
  flags.DEFINE_multi_string("grid", [], "'key=v1,v2,...' (repeatable); key is a config key.")
  flags.DEFINE_multi_enum("preset", [], sorted(PRESETS), "Named grid (repeatable).")
  flags.DEFINE_multi_string("extra", [], "More arguments for every trial, split like a shell would (repeatable); "
                            "e.g. --extra=--config.train.num_steps=100.")
  flags.DEFINE_enum("mode", "print", ("print", "local", "tpu_vm"),
                    "print: one command per line; tpu_vm: one launch/tpu_vm.sh line per trial; local: run them here.")
  flags.DEFINE_string("python", None, "Interpreter in commands (default: 'python' when printing, this interpreter "
                      "when running locally).")
  flags.DEFINE_string("module", DEFAULT_MODULE, "Module run with `python -m`.")
  flags.DEFINE_string("tpu_name", "", "TPU VM (--mode=tpu_vm).")
  flags.DEFINE_string("zone", "", "Zone (--mode=tpu_vm).")
  flags.DEFINE_string("project", "", "Project (--mode=tpu_vm).")
  flags.mark_flags_as_required(["config", "workdir_root"])


def main(argv) -> int:
  del argv  # common.run refuses positional arguments
  args = FLAGS
  if args.mode == "tpu_vm" and not (args.tpu_name and args.zone):
    raise UserError("--mode=tpu_vm needs the TPU VM: pass --tpu_name=NAME and --zone=ZONE")
  python = args.python or (sys.executable if args.mode == "local" else "python")
  extra = [a for e in args.extra for a in shlex.split(e)]
  grid: list[Any] = []
  for name in args.preset:
    grid += PRESETS[name]()
  grid += args.grid
  trials = build_trials(args.config, args.workdir_root, grid, extra, python, args.module)

  record = {
      "config": args.config,
      "workdir_root": args.workdir_root,
      "mode": args.mode,
      "extra": extra,
      "trials": trials,
  }

  def save():
    write_sweep_file(args.workdir_root, record)

  if args.mode == "local":
    save()
    return run_local(trials, save)

  for t in trials:
    t["status"] = "printed"
    if args.mode == "print":
      print(t["command"])
    else:
      t["tpu_vm_command"] = shlex.join(tpu_vm_command(
          args.config, t["workdir"], t["overrides"], extra, args.tpu_name,
          args.zone, args.project))
      print(t["tpu_vm_command"])
  sys.stdout.flush()
  path = save()
  if path:
    print(f"medssl-jax sweep: {len(trials)} trial(s) listed in {path}", file=sys.stderr)
  return 0


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main)
