"""train.profile_steps writes a jax.profiler trace of the chosen steps into the workdir."""
import glob
import os

import pytest

from medssl_jax import main as main_lib
from medssl_jax.training import profiling
from tests.helpers import pretrain_run_config as run_config


def test_trace_of_chosen_steps_lands_in_the_workdir(tmp_path):
  c = run_config(steps=4)
  c.train.profile_steps = (2, 3)
  results = main_lib.run(c, str(tmp_path / "run"))
  assert results["completed"]
  traces = glob.glob(str(tmp_path / "run" / "profile" / "plugins" / "profile" / "*" / "*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


def test_steps_are_checked():
  with pytest.raises(ValueError, match=r"train.profile_steps=\(3, 2\)"):
    profiling.StepProfiler((3, 2), "/tmp/x")
  off = profiling.StepProfiler((0, 0), "/tmp/never")
  off.before_step(1)
  assert not off.active and not os.path.exists("/tmp/never")
