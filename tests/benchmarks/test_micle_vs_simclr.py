"""benchmarks/micle_vs_simclr.py (Study B): every config of the full scale, and the continued step size."""
import json

import numpy as np

from benchmarks import common
from benchmarks import label_efficiency as study_a
from benchmarks import micle_vs_simclr as study_b
from medssl_jax.training import optim


def test_every_config_of_the_full_scale_builds(shared_data, tmp_path):
  """`full` (meant for a GPU) is not run here: plan it with --only_finished, which builds every
  run's config (batches checked against the labelled images) and runs nothing."""
  args = ["--scale=full", "--only_finished", f"--workdir={tmp_path}", f"--data_dir={shared_data}"]
  s = common.SCALES["full"]
  assert study_b.main(args) == 0
  b = json.load(open(tmp_path / "full" / "micle_vs_simclr" / "study.json"))
  arms = len(study_b.EVAL_ARMS)
  assert len(b["missing"]) == 3 + arms * (s["draws"] * (len(s["fractions_b"]) - 1) + 1)


def test_continued_pretraining_takes_the_pretraining_step_size():
  """Study B continues at the step size of the SimCLR run it starts from (the paper's MICLe lr
  over a few hundred steps left the encoder where it was: a comparison of nothing)."""
  s = common.SCALES["small"]
  pre = study_a.pretrain_config("unused", s)
  for method in study_b.ARMS:
    cont = study_b.continue_config("unused", "ckpt", method, s)
    assert (cont.optim.name, cont.optim.base_lr, cont.optim.lr_scaling) == ("lars", 0.075, "sqrt")
    assert (pre.optim.name, pre.optim.base_lr, pre.optim.lr_scaling) == ("lars", 0.075, "sqrt")
    peak = optim.scaled_learning_rate(cont.optim.base_lr, s["covid_batch"], cont.optim.lr_scaling)
    assert abs(peak - 0.075 * np.sqrt(32)) < 1e-9 and peak > 30 * 0.1 * 32 / 256
