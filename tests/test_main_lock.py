"""main.run holds the workdir's lock: a run on a workdir another process holds is refused before any work."""
import os
import subprocess
import sys

import pytest

from medssl_jax import main as main_lib
from medssl_jax.errors import UserError
from medssl_jax.training import lock
from tests.helpers import pretrain_run_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDER = ("import sys\nfrom medssl_jax.training import lock\n"
          "with lock.hold(sys.argv[1]):\n  print('held', flush=True)\n  sys.stdin.readline()\n")


def test_a_run_on_a_held_workdir_is_refused_and_runs_once_it_is_released(tmp_path):
  wd = str(tmp_path / "run")
  config = pretrain_run_config(steps=2)
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, wd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=REPO)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"workdir {wd} is in use by pid {holder.pid}"):
      main_lib.run(config, wd)
    assert not os.path.exists(os.path.join(wd, "checkpoints"))  # refused before any work
  finally:
    holder.communicate("\n", timeout=60)
  assert lock.is_locked(wd) is None
  r = main_lib.run(config, wd)
  assert r["final_step"] == 2 and lock.is_locked(wd) is None
