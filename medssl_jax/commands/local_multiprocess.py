"""Runs N local processes of a training module, as on an N-host pod slice, for debugging.

Each process is started as

  python -m MODULE <child args> --coordinator_address=localhost:PORT --num_processes=N
      --process_id=I

with JAX_PLATFORMS=cpu and XLA_FLAGS=--xla_force_host_platform_device_count=D, so the run
sees N processes with D CPU devices each (N * D global devices), exercising the multi-host
code paths (jax.distributed, per-process data loading, cross-process collectives, process 0
only writes) without TPUs.

Every child's output lines are prefixed with `[p{i}] `. The launcher waits for all children;
if one fails, the others are stopped and the launcher exits with the first non-zero code.

Example:
  medssl-jax local-multiprocess --num_processes 2 --devices_per_process 4 --port 0 \
      -- --config=configs/demo.py --workdir=/tmp/medssl_debug
"""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Optional, Sequence

from absl import flags

from medssl_jax.commands import common
from medssl_jax.errors import UserError

DEFAULT_MODULE = "medssl_jax train"  # what `python -m` runs: the package's train command
DEFAULT_PORT = 12355
# Seconds the other children get to exit after SIGTERM before they are killed.
TERMINATE_GRACE_S = 10.0
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"

FLAGS = flags.FLAGS


def free_port() -> int:
  """Returns a TCP port on localhost that is free right now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def child_env(devices_per_process: int,
              base_env: Optional[dict] = None) -> dict:
  """Environment of a child: CPU platform with `devices_per_process` devices.

  Other XLA flags already in XLA_FLAGS are kept; a device-count flag is replaced.

  Args:
    devices_per_process: number of simulated CPU devices in each process.
    base_env: environment to start from (default: this process's).

  Returns:
    The environment dict.
  """
  env = dict(os.environ if base_env is None else base_env)
  xla_flags = re.sub(rf"{_DEVICE_COUNT_FLAG}=\S*", "", env.get("XLA_FLAGS", "")).split()
  xla_flags.append(f"{_DEVICE_COUNT_FLAG}={devices_per_process}")
  env["XLA_FLAGS"] = " ".join(xla_flags)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONUNBUFFERED"] = "1"  # So prefixed lines interleave as they are printed.
  return env


def child_command(argv_for_children: Sequence[str], num_processes: int,
                  process_id: int, port: int, module: str) -> list[str]:
  """The argv of child `process_id`."""
  return [
      sys.executable, "-m", *module.split(), *argv_for_children,
      f"--coordinator_address=localhost:{port}",
      f"--num_processes={num_processes}",
      f"--process_id={process_id}",
  ]


def _pump(stream: IO[bytes], prefix: str, out: IO[str],
          lock: threading.Lock) -> None:
  """Copies `stream` to `out` line by line, each line prefixed."""
  for raw in iter(stream.readline, b""):
    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    with lock:
      out.write(f"{prefix}{line}\n")
      out.flush()
  stream.close()


def _stop(procs: Sequence[subprocess.Popen]) -> None:
  """SIGTERMs running children, then kills those still alive after a grace period."""
  for p in procs:
    if p.poll() is None:
      p.terminate()
  deadline = time.monotonic() + TERMINATE_GRACE_S
  for p in procs:
    try:
      p.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def _exit_code(returncode: int) -> int:
  """Shell-style exit code: a child killed by signal S gives 128 + S."""
  return 128 - returncode if returncode < 0 else returncode


def launch(argv_for_children: Sequence[str],
           num_processes: int,
           devices_per_process: int,
           port: int = DEFAULT_PORT,
           module: str = DEFAULT_MODULE,
           out: Optional[IO[str]] = None) -> int:
  """Runs `num_processes` local children of `module` and waits for them.

  Args:
    argv_for_children: arguments given to every child before the distributed flags.
    num_processes: number of processes (simulated hosts).
    devices_per_process: CPU devices per process.
    port: coordinator port on localhost; 0 picks a free one.
    module: module run with `python -m`.
    out: where prefixed child output goes (default sys.stdout).

  Returns:
    0 if every child succeeded, else the exit code of the first child that failed.
  """
  if num_processes < 1:
    raise UserError(f"--num_processes={num_processes}: pass a number of processes >= 1")
  if devices_per_process < 1:
    raise UserError(f"--devices_per_process={devices_per_process}: pass a number of devices >= 1")
  out = sys.stdout if out is None else out
  if port == 0:
    port = free_port()
  env = child_env(devices_per_process)
  lock = threading.Lock()
  with lock:
    out.write(f"[launcher] {num_processes} processes x {devices_per_process} "
              f"CPU devices, coordinator localhost:{port}, module {module}\n")
    out.flush()

  procs: list[subprocess.Popen] = []
  pumps: list[threading.Thread] = []
  first_failure = 0
  try:
    for i in range(num_processes):
      p = subprocess.Popen(
          child_command(argv_for_children, num_processes, i, port, module),
          env=env,
          stdin=subprocess.DEVNULL,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT)
      procs.append(p)
      t = threading.Thread(
          target=_pump, args=(p.stdout, f"[p{i}] ", out, lock), daemon=True)
      t.start()
      pumps.append(t)

    running = set(range(num_processes))
    while running and not first_failure:
      for i in sorted(running):
        code = procs[i].poll()
        if code is None:
          continue
        running.discard(i)
        if code != 0:
          first_failure = _exit_code(code)
          with lock:
            out.write(f"[launcher] process {i} exited with code {code}; "
                      "stopping the others\n")
            out.flush()
          break
      time.sleep(0.05)
  except KeyboardInterrupt:
    first_failure = 128 + signal.SIGINT
  finally:
    _stop(procs)
    for t in pumps:
      t.join(timeout=5.0)
  return first_failure


def _define_flags() -> None:
  flags.DEFINE_integer("num_processes", 2, "Number of local processes (simulated hosts).")
  flags.DEFINE_integer("devices_per_process", 4, "Simulated CPU devices in each process.")
  flags.DEFINE_integer("port", DEFAULT_PORT, "Coordinator port on localhost; 0 picks a free one.")
  flags.DEFINE_string("module", DEFAULT_MODULE, "Module each process runs with `python -m`.")


def main(argv) -> int:
  """argv[1:]: the arguments after `--`, passed to every child."""
  return launch(argv[1:], FLAGS.num_processes, FLAGS.devices_per_process, FLAGS.port, FLAGS.module)


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main, args="-- [args for the module ...]")
