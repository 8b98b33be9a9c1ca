"""Azizi et al.'s re-split of the CheXpert training set: by patient, seeded, near the paper's fractions."""
import numpy as np
import pytest
from PIL import Image

from configs.base import get_base_config
from input_pipeline import sources

HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural Effusion"


def fake_chexpert(tmp_path, num_patients=400, seed=0):
  """A CheXpert-v1.0-small folder (as tests/input_pipeline/test_sources.py fakes it): 1-5 images per patient."""
  base = tmp_path / "downloads" / "manual" / "CheXpert-v1.0-small"
  rng = np.random.default_rng(seed)
  img = Image.fromarray(np.zeros((4, 4), np.uint8))
  rows = {"train": [], "valid": []}
  for split, patients in (("train", range(1, num_patients + 1)), ("valid", range(64541, 64546))):
    for p in patients:
      for study in range(1, int(rng.integers(1, 6)) + 1):
        name = f"{split}/patient{p:05d}/study{study}/view1_frontal.jpg"
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(base / name)
        rows[split].append(f"CheXpert-v1.0-small/{name},Male,50,Frontal,AP,,1.0,0.0,,-1.0,0.0")
  for split, r in rows.items():
    (base / f"{split}.csv").write_text(HEADER + "\n" + "\n".join(r) + "\n")
  c = get_base_config().data
  c.update(source="tfds", tfds_name="chexpert", path=str(tmp_path), verify_images=False)
  return c, len(rows["train"])


def test_paper_counts_give_the_fractions():
  # 167,429 + 22,240 + 33,745 = 223,414 = the official training set (see CHEXPERT_RESPLIT).
  assert 167_429 + 22_240 + 33_745 == 223_414
  f = sources.CHEXPERT_RESPLIT
  assert list(f) == ["resplit_train", "resplit_val", "resplit_test"]
  assert sum(f.values()) == pytest.approx(1.0)
  assert f["resplit_val"] * 223_414 == pytest.approx(22_240) and f["resplit_test"] * 223_414 == pytest.approx(33_745)


def test_patient_split_is_disjoint_deterministic_and_near_the_fractions():
  rng = np.random.default_rng(3)
  cases = np.repeat([f"p{i}" for i in range(3000)], rng.integers(1, 7, 3000))
  fractions = (0.75, 0.10, 0.15)
  a = sources.patient_split(cases, fractions, seed=0)
  assert set(np.unique(a)) == {0, 1, 2}
  for k in range(3):   # every patient in one split only
    assert not set(cases[a == k]) & set(cases[a != k])
  np.testing.assert_allclose(np.bincount(a) / len(cases), fractions, atol=6 / len(cases) + 1e-9)
  np.testing.assert_array_equal(sources.patient_split(cases, fractions, seed=0), a)   # deterministic
  perm = rng.permutation(len(cases))   # row order does not matter
  np.testing.assert_array_equal(sources.patient_split(cases[perm], fractions, seed=0), a[perm])
  other = sources.patient_split(cases, fractions, seed=1)
  assert np.mean(other != a) > 0.2     # another seed, another draw
  with pytest.raises(ValueError, match="sum to 1"):
    sources.patient_split(cases, (0.5, 0.2), seed=0)


def test_chexpert_resplit_splits(tmp_path):
  cfg, n_train = fake_chexpert(tmp_path)
  parts = {s: sources.load_source(cfg, s) for s in sources.CHEXPERT_RESPLIT}
  official = sources.load_source(cfg, "train")
  assert sum(len(p) for p in parts.values()) == n_train == len(official)
  ids = [set(p.case_ids.tolist()) for p in parts.values()]
  assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])              # patient-disjoint
  assert set.union(*ids) == set(official.case_ids.tolist())                          # all of train, no more
  assert not set.union(*ids) & set(sources.load_source(cfg, "validation").case_ids.tolist())
  assert set.union(*(set(p.image_ids.tolist()) for p in parts.values())) == set(official.image_ids.tolist())
  for name, p in parts.items():    # 400 patients of 1-5 images: within a few patients of the fraction
    assert abs(len(p) / n_train - sources.CHEXPERT_RESPLIT[name]) < 0.03, (name, len(p), n_train)
    assert p.name == f"chexpert:{name}" and p.labels.shape == (len(p), 5)
  again = sources.load_source(cfg, "resplit_val")
  assert again.image_ids.tolist() == parts["resplit_val"].image_ids.tolist()         # deterministic
  # The image -> split map equals patient_split on train.csv's patients.
  which = sources.patient_split(official.case_ids, list(sources.CHEXPERT_RESPLIT.values()),
                                sources.CHEXPERT_RESPLIT_SEED)
  assert parts["resplit_test"].image_ids.tolist() == official.image_ids[which == 2].tolist()
  with pytest.raises(ValueError, match=r"re-split resplit_train / resplit_val / resplit_test.*not 'test'"):
    sources.load_source(cfg, "test")


def test_chexpert_finetune_config_uses_the_resplit():
  from configs import chexpert_finetune
  c = chexpert_finetune.get_config()
  assert (c.data.train_split, c.finetune.val_split, c.data.eval_split) == ("resplit_train", "resplit_val", "resplit_test")
