"""`medssl-jax train --config=configs/<method>.py:local` loads for BYOL, SimSiam, Barlow Twins, VICReg, DINO and
SwAV (the command's own config loading, printed with --print_config: nothing trains), names its method and
the real PneumoniaMNIST file, and the method accepts the config; each method trains on MICLe's case pairs."""
import os
import subprocess
import sys

import pytest

from medssl_jax import main as main_lib
from medssl_jax import methods
from tests.helpers import pretrain_run_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"byol": "byol", "simsiam": "simsiam", "barlow_twins": "barlow_twins", "vicreg": "vicreg", "dino": "dino",
           "swav": "swav"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_train_command_loads_the_local_variant(name):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "medssl_jax", "train", f"--config=configs/{name}.py:local",
                      "--config.train.num_steps=2", "--print_config"], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  printed = dict(line.split(" = ", 1) for line in r.stdout.splitlines())
  assert printed["method"] == f'"{CONFIGS[name]}"' and printed["train.num_steps"] == "2"
  assert printed["data.path"].endswith('shared/data/pneumoniamnist.npz"') and printed["probe.enabled"] == "true"
  assert printed["monitor.every"] == "100"  # kNN and linear-head monitor in TensorBoard while it trains
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  methods.get(CONFIGS[name]).validate(module.get_config("local"))


WIDTHS = {"byol": {"projector_hidden": 32, "predictor_hidden": 16}, "simsiam": {"projector_hidden": 32, "predictor_hidden": 8},
          "barlow_twins": {"projector_hidden": 32}, "vicreg": {"projector_hidden": 32},
          "dino": {"out_dim": 32, "head_hidden": 16}, "swav": {"num_prototypes": 32, "projector_hidden": 16}}
GROUPS = {"byol": "byol", "simsiam": "simsiam", "barlow_twins": "barlow", "vicreg": "vicreg", "dino": "dino",
          "swav": "swav"}


@pytest.mark.parametrize("method", sorted(WIDTHS))
def test_trains_on_case_pairs(tmp_path, method):
  c = pretrain_run_config(steps=2, batch=16, method=method, pairing="case")
  for key, value in WIDTHS[method].items():
    c[GROUPS[method]][key] = value
  c.optim.name, c.optim.lr_scaling, c.optim.base_lr = "lars", "linear", 0.2
  r = main_lib.run(c, str(tmp_path / method))
  assert r["completed"] and r["pairing"] == "case" and r["method"] == method
  assert 0.0 < r["metrics"]["distinct_pairs"] <= 1.0  # most synthetic cases have several images
