"""benchmarks/dvme_study.py (Study C): the regimes fit the real data, extra encoders and the arms."""
import numpy as np
import pytest

from benchmarks import dvme_study
from input_pipeline import subsets


def test_dvme_regimes_fit_the_real_training_splits(shared_data):
  """Every Small / Medium subset of every scale can be drawn class-balanced from the real training
  split (BreastMNIST has 147 malignant training images: Medium's 500 is capped at 294, with a
  note), so a `small` Study C cannot stop half-way at a size the data cannot give."""
  for scale, d in dvme_study.DVME_SCALES.items():
    for name in ("pneumoniamnist", "breastmnist"):
      with np.load(shared_data / f"{name}.npz") as f:
        y = f["train_labels"].ravel()
      for asked, size, note in dvme_study.feasible_sizes(y, d["train_sizes"]):
        assert len(subsets.training_subset(y, size, 0, 0)) == (size or len(y)), (scale, name, size)
        assert (size != asked) == bool(note)
  with np.load(shared_data / "breastmnist.npz") as f:
    y = f["train_labels"].ravel()
  assert dvme_study.feasible_sizes(y, (50, 500, 0)) == [
      (50, 50, ""), (500, 294, "train_size 500 -> 294: class 0 has 147 training images"), (0, 0, "")]


def test_dvme_study_extra_encoders_and_arms():
  assert dvme_study.parse_extra_encoders("in=/w/r50, dino=/w/dino") == {"in": "/w/r50", "dino": "/w/dino"}
  for bad, msg in (("simclr=/x", "is taken"), ("dvme_all=/x", "is taken"), ("a=/x,a=/y", "is taken"),
                   ("nofolder", "name=<checkpoint folder>"), ("=/x", "name=<checkpoint folder>")):
    with pytest.raises(SystemExit, match=msg):
      dvme_study.parse_extra_encoders(bad)
  spec = {"simclr": "S", "moco_v2": "M", "random": "R", "in": "I"}
  assert dvme_study.plan_arms(spec, []) == [
      ("simclr_mlp", "simclr=S", False), ("moco_v2_mlp", "moco_v2=M", False), ("random_mlp", "random=R", False),
      ("concat", "simclr=S,moco_v2=M,random=R", False), ("dvme", "simclr=S,moco_v2=M,random=R", True)]
  arms = dvme_study.plan_arms(spec, ["in"])
  assert arms[:3] + arms[4:6] == dvme_study.plan_arms(spec, [])  # the three-encoder arms are unchanged
  assert arms[3] == ("in_mlp", "in=I", False)
  assert arms[6:] == [("concat_all", "simclr=S,moco_v2=M,random=R,in=I", False),
                      ("dvme_all", "simclr=S,moco_v2=M,random=R,in=I", True)]
