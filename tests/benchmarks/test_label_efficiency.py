"""benchmarks/label_efficiency.py (Study A): every config of the full scale, the MoCo v2 arm's settings and
the extra arms (--arms)."""
import json

import pytest

from benchmarks import common
from benchmarks import label_efficiency as study_a
from medssl_jax import methods


def test_every_config_of_the_full_scale_builds(shared_data, tmp_path):
  """`full` (meant for a GPU) is not run here: plan it with --only_finished, which builds every
  run's config (batches checked against the labelled images) and runs nothing."""
  args = ["--scale=full", "--only_finished", f"--workdir={tmp_path}", f"--data_dir={shared_data}"]
  assert study_a.main(args) == 0
  a = json.load(open(tmp_path / "full" / "label_efficiency" / "study.json"))
  s = common.SCALES["full"]
  evals = 2 * 3 * (s["draws"] * (len(s["fractions"]) - 1) + 1)   # modes x arms x (draws x fractions < 1, + 100%)
  # per data set: SimCLR and MoCo v2 pretraining + the evaluations
  assert a["runs"] == [] and len(a["missing"]) == len(s["datasets"]) * (2 + evals) + len(s["recipe"])


def test_moco_arm_pretrains_at_the_simclr_arms_scale(shared_data):
  """Study A's MoCo v2 pretraining has the SimCLR pretraining's data, model, batch and steps at
  every scale; its queue is a multiple of the batch, at most a quarter of the training images
  (PneumoniaMNIST 4,708, BreastMNIST 546) or one batch, and at most :local's 1,024."""
  for scale, s in common.SCALES.items():
    for name, n_train in (("pneumoniamnist", 4708), ("breastmnist", 546)):
      path = str(shared_data / f"{name}.npz")
      m, p = study_a.moco_pretrain_config(path, s), study_a.pretrain_config(path, s)
      assert (m.method, p.method) == ("moco_v2", "simclr")
      data = lambda c: {k: v for k, v in c.data.to_dict().items() if k != "tfds_name"}  # noqa: E731 (npz: unused)
      assert m.model.to_dict() == p.model.to_dict() and data(m) == data(p), scale
      assert (m.train.batch_size, m.train.num_steps, m.seed) == (p.train.batch_size, p.train.num_steps, p.seed)
      q, b = m.moco.queue_size, m.train.batch_size
      assert q % b == 0 and q <= 1024 and (q <= n_train / 4 or q == b), (scale, name, q)
  small = common.SCALES["small"]
  assert study_a.moco_pretrain_config(str(shared_data / "pneumoniamnist.npz"), small).moco.queue_size == 1024
  assert study_a.moco_pretrain_config(str(shared_data / "breastmnist.npz"), small).moco.queue_size == 128


def test_extra_arms_pretrain_at_the_simclr_arms_scale_with_their_own_heads(shared_data):
  """--arms: each method's configs/<method>.py:local on the SimCLR pretraining's data, encoder, batch,
  steps and seed, its own projector / head kept, the monitor off; the method accepts the config."""
  path = str(shared_data / "breastmnist.npz")
  encoder = ("arch", "depth", "width", "stem", "dtype")
  for scale, s in common.SCALES.items():
    p = study_a.pretrain_config(path, s)
    for method in study_a.EXTRA_ARMS:
      c = study_a.extra_pretrain_config(method, path, s)
      own = __import__(f"configs.{method}", fromlist=["get_config"]).get_config("local")
      assert c.method == method and c.monitor.every == 0 and not c.probe.enabled
      assert {k: c.model[k] for k in encoder} == {k: p.model[k] for k in encoder}, (scale, method)
      assert (c.model.head_layers, c.model.head_dim) == (own.model.head_layers, own.model.head_dim)
      assert (c.data.path, c.data.image_size, c.data.channels) == (p.data.path, p.data.image_size, p.data.channels)
      assert (c.train.batch_size, c.train.num_steps, c.seed) == (p.train.batch_size, p.train.num_steps, p.seed)
      methods.get(method).validate(c)


def test_extra_arms_in_the_plan(shared_data, tmp_path):
  args = ["--scale=full", "--only_finished", f"--workdir={tmp_path}", f"--data_dir={shared_data}", "--arms=byol,dino"]
  assert study_a.main(args) == 0
  a = json.load(open(tmp_path / "full" / "label_efficiency" / "study.json"))
  s = common.SCALES["full"]
  evals = 2 * 5 * (s["draws"] * (len(s["fractions"]) - 1) + 1)   # modes x arms (3 + 2) x fraction draws
  assert len(a["missing"]) == len(s["datasets"]) * (4 + evals) + len(s["recipe"]) and a["settings"]["extra_arms"] == [
      "byol", "dino"]
  assert any(p.endswith("full/pretrain_dino_breastmnist") for p in a["missing"])
  assert any(p.endswith("breastmnist/finetune_byol_f0.01_d0") for p in a["missing"])
  with pytest.raises(SystemExit, match="--arms"):
    study_a.main(args[:-1] + ["--arms=byol,nope"])
