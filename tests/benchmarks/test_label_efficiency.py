"""benchmarks/label_efficiency.py (Study A): every config of the full scale, and the MoCo v2 arm's settings."""
import json

from benchmarks import common
from benchmarks import label_efficiency as study_a


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
