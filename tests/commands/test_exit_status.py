"""Exit statuses of `medssl-jax train` (issue 32 item 7): a run stopped by SIGINT (Ctrl-C) or SIGTERM
saves a checkpoint and exits 75 ("resumable"), and the same command then finishes with exit 0."""
import os
import signal
import subprocess
import sys

from medssl_jax.errors import RESUMABLE_EXIT

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The command's own entry, with a train step that sends this process `signum` at its `at`-th call.
ENTRY = """
import signal, sys
from medssl_jax import cli, methods
from tests.helpers import sigterm_at_call
at, signum = int(sys.argv.pop(1)), int(sys.argv.pop(1))
if at:
  methods.jit_train_step = sigterm_at_call(methods.jit_train_step, at, signal.Signals(signum))
cli.main(["medssl-jax"] + sys.argv[1:])
"""

CONFIG = """
from tests.helpers import pretrain_run_config
def get_config():
  return pretrain_run_config(steps=6)
"""


def train(config, workdir, at=0, signum=signal.SIGINT):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  env.pop("MEDSSL_DEBUG", None)
  cmd = [sys.executable, "-c", ENTRY, str(at), str(int(signum)), "train", f"--config={config}", f"--workdir={workdir}"]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_ctrl_c_saves_a_checkpoint_exits_75_and_the_same_command_resumes_to_the_end(tmp_path):
  config = tmp_path / "tiny.py"
  config.write_text(CONFIG)
  workdir = tmp_path / "run"
  stopped = train(config, workdir, at=3, signum=signal.SIGINT)
  assert stopped.returncode == RESUMABLE_EXIT == 75, stopped.stderr
  assert stopped.stdout.strip().splitlines()[-1] == "stopped at step 3 of 6 (resumable)"
  assert "Traceback" not in stopped.stderr and "KeyboardInterrupt" not in stopped.stderr
  assert os.path.isdir(workdir / "checkpoints" / "3"), os.listdir(workdir / "checkpoints")
  assert not (workdir / ".lock").exists()  # released at exit

  done = train(config, workdir)
  assert done.returncode == 0, done.stderr
  assert "Done: step 6/6" in done.stdout
  assert os.path.isdir(workdir / "checkpoints" / "6")


def test_sigterm_takes_the_same_path(tmp_path):
  config = tmp_path / "tiny.py"
  config.write_text(CONFIG)
  stopped = train(config, tmp_path / "run", at=2, signum=signal.SIGTERM)
  assert stopped.returncode == 75, stopped.stderr
  assert stopped.stdout.strip().splitlines()[-1] == "stopped at step 2 of 6 (resumable)"
