"""data.source='nih': the NIH ChestX-ray14 thumbnail folder against its own metadata.csv.

Expected counts are computed here from the CSV with the csv module (independently of the
reader, which uses pandas), and checked against PROVENANCE.md's published numbers."""
import collections
import csv

import numpy as np
import pytest

from configs.base import get_base_config
from input_pipeline import indexing, numpy_pipeline, sources
from input_pipeline.sources import nih
from medssl_jax.errors import UserError

FOLDER = "nih_cxr14_kcr1000_64px"


@pytest.fixture
def nih_dir(shared_data):
  path = shared_data / FOLDER
  if not path.is_dir():
    pytest.skip(f"{path} is absent")
  return path


def _cfg(path, **data):
  c = get_base_config()
  c.data.source, c.data.path = "nih", str(path)
  for k, v in data.items():
    c.data[k] = v
  return c


def _rows(path):
  with open(path / "metadata.csv", newline="") as f:
    return list(csv.DictReader(f))


def _all(c):
  return {s: sources.load_source(c.data, s) for s in nih.RESPLIT_NAMES}


def test_counts_match_the_csv_and_provenance(nih_dir):
  rows = _rows(nih_dir)
  per_patient = collections.Counter(r["patient_id"] for r in rows)
  findings = collections.Counter(f for r in rows for f in r["finding_labels_v2020"].split("|"))
  assert (len(rows), len(per_patient), sum(n >= 2 for n in per_patient.values())) == (1000, 264, 136)
  assert sum(n for n in per_patient.values() if n >= 2) == 872 and max(per_patient.values()) == 66
  assert findings["Effusion"] == 170 and findings["Hernia"] == 9 and findings["No Finding"] == 499

  c = _cfg(nih_dir, nih_target="multilabel")
  split = _all(c)
  ids = np.concatenate([s.case_ids for s in split.values()])
  labels = np.concatenate([s.labels for s in split.values()])
  image_ids = np.concatenate([s.image_ids for s in split.values()])
  _, sizes = np.unique(ids, return_counts=True)
  assert (len(ids), len(sizes), int((sizes >= 2).sum())) == (1000, 264, 136)
  assert labels.shape == (1000, 14) and labels.dtype == np.float32
  assert {nih.NIH_FINDINGS[j]: int(labels[:, j].sum()) for j in range(14)} == {
      f: findings[f] for f in nih.NIH_FINDINGS}
  # Row by row: each image's labels and subgroups are those of its CSV row.
  by_file = {r["image_file"]: r for r in rows}
  for s in split.values():
    for k in range(0, len(s), 37):
      r = by_file[s.image_ids[k]]
      assert s.case_ids[k] == r["patient_id"]
      assert {nih.NIH_FINDINGS[j] for j in np.flatnonzero(s.labels[k])} == (
          set(r["finding_labels_v2020"].split("|")) - {"No Finding"})
      assert (s.subgroups["view"][k], s.subgroups["sex"][k]) == (r["view_position"], r["patient_sex"])
  assert sorted(image_ids.tolist()) == sorted(by_file)
  view = collections.Counter(np.concatenate([s.subgroups["view"] for s in split.values()]).tolist())
  sex = collections.Counter(np.concatenate([s.subgroups["sex"] for s in split.values()]).tolist())
  assert view == {"PA": 637, "AP": 363} and sex == {"F": 509, "M": 491}

  binary = _all(_cfg(nih_dir, nih_target="binary"))
  y = np.concatenate([s.labels for s in binary.values()])
  assert y.dtype == np.int64 and int(y.sum()) == 1000 - findings["No Finding"]
  # The binary target is "any finding" of the v2020 labels (00000193_019: Pneumonia, normal folder).
  k = np.flatnonzero(np.concatenate([s.image_ids for s in binary.values()]) == "images/00000193_019.png")
  assert y[k].tolist() == [1] and by_file["images/00000193_019.png"]["source_class"] == "0_normal"
  # Images: the real thumbnails, grey, 64 px.
  img = split["train"].images
  assert img.shape[1:] == (64, 64, 1) and img.dtype == np.uint8 and img.std() > 20


def test_the_folders_own_split_leaks_patients_and_is_refused(nih_dir):
  rows = _rows(nih_dir)
  where = collections.defaultdict(set)
  for r in rows:
    where[r["patient_id"]].add(r["source_split"])
  assert sum(len(v) > 1 for v in where.values()) == 30  # PROVENANCE.md: 30 patients cross splits
  c = _cfg(nih_dir, nih_split="source")
  for split in ("train", "valid", "test"):
    with pytest.raises(UserError, match="patient leakage"):
      sources.load_source(c.data, split)


def test_resplit_is_patient_disjoint_deterministic_and_seeded(nih_dir):
  a, b = _all(_cfg(nih_dir)), _all(_cfg(nih_dir))
  other = _all(_cfg(nih_dir, nih_split_seed=1))
  cases = {s: set(a[s].case_ids.tolist()) for s in a}
  assert not (cases["train"] & cases["val"]) and not (cases["train"] & cases["test"]) \
      and not (cases["val"] & cases["test"])
  assert sum(len(v) for v in cases.values()) == 264
  for s in a:
    np.testing.assert_array_equal(a[s].image_ids, b[s].image_ids)
    np.testing.assert_array_equal(a[s].labels, b[s].labels)
  assert set(a["test"].case_ids.tolist()) != set(other["test"].case_ids.tolist())
  # About the configured shares of the images (0.6 / 0.2 / 0.2), within a large patient's series.
  n = {s: len(a[s]) for s in a}
  assert sum(n.values()) == 1000 and all(abs(n[s] / 1000 - f) < 0.07 for s, f in zip(nih.RESPLIT_NAMES, (0.6, 0.2, 0.2)))
  with pytest.raises(UserError, match="nih_split_fractions"):
    sources.load_source(_cfg(nih_dir, nih_split_fractions=(0.8, 0.2)).data, "train")
  with pytest.raises(UserError, match="not 'valid'"):
    sources.load_source(_cfg(nih_dir).data, "valid")


def test_training_patient_share_is_stratified_nested_and_shared_by_both_targets(nih_dir):
  full = sources.load_source(_cfg(nih_dir).data, "train")
  tenth = sources.load_source(_cfg(nih_dir, nih_train_patients=0.1).data, "train")
  tenth_ml = sources.load_source(_cfg(nih_dir, nih_train_patients=0.1, nih_target="multilabel").data, "train")
  half = sources.load_source(_cfg(nih_dir, nih_train_patients=0.5).data, "train")
  other = sources.load_source(_cfg(nih_dir, nih_train_patients=0.1, nih_train_draw=1).data, "train")
  np.testing.assert_array_equal(tenth.image_ids, tenth_ml.image_ids)
  assert abs(tenth.num_cases - 0.1 * full.num_cases) <= 2
  assert set(tenth.case_ids.tolist()) <= set(half.case_ids.tolist()) <= set(full.case_ids.tolist())
  assert set(other.case_ids.tolist()) != set(tenth.case_ids.tolist())
  # Whole patients: every image of a kept patient is kept.
  for cid in set(tenth.case_ids.tolist()):
    assert (tenth.case_ids == cid).sum() == (full.case_ids == cid).sum()
  # Only the training split is thinned.
  assert len(sources.load_source(_cfg(nih_dir, nih_train_patients=0.1).data, "test")) == len(
      sources.load_source(_cfg(nih_dir).data, "test"))


def test_micle_bag_cap_holds_and_is_deterministic(nih_dir):
  c = _cfg(nih_dir)
  assert c.data.max_bag_size == 6  # Azizi et al. 2021 Sec. 4.2: "up to 6 images per patient case"
  src = sources.load_source(c.data, "train")
  _, per_case = np.unique(src.case_ids, return_counts=True)
  assert per_case.max() > 6  # the cap has something to do
  for cap in (6, 2):
    case_ids, table, sizes = indexing.bag_table(src, cap, seed=3)
    assert table.shape == (src.num_cases, cap) and sizes.max() == cap
    np.testing.assert_array_equal(sizes, np.minimum(per_case, cap))
    again = indexing.bag_table(sources.load_source(c.data, "train"), cap, seed=3)[1]
    np.testing.assert_array_equal(table, again)  # the same subset for the same seed
    other = indexing.bag_table(src, cap, seed=4)[1]
    assert not np.array_equal(table, other)  # another seed, another draw (some patient has > cap images)
    first_only = True
    for k, cid in enumerate(case_ids):  # each bag: images of its own patient only, `cap` of them at most
      idx = table[k, :sizes[k]]
      assert set(src.case_ids[idx].tolist()) == {cid} and len(set(idx.tolist())) == len(idx)
      first_only &= np.array_equal(idx, np.flatnonzero(src.case_ids == cid)[:cap])
    assert not first_only  # a random subset of the whole bag (MICLe's Algorithm 1), not its first images
  with pytest.raises(UserError, match=r"data.max_bag_size=-1: expected 0 \(every image of a case\) or a positive cap"):
    indexing.bag_table(src, -1)
  # 0: every image of every patient.
  _, table, sizes = indexing.bag_table(src, 0)
  np.testing.assert_array_equal(sizes, per_case)
  assert table.shape == (src.num_cases, per_case.max())
  # Pairs drawn by the pipeline never leave the capped bag.
  table, sizes, case_index, _ = indexing.pretrain_units(src, "case", 6)
  allowed = {int(k): set(table[k, :sizes[k]].tolist()) for k in range(len(table))}
  for step in range(5):
    for a, b, case, _, _ in indexing.pair_batch(table, sizes, case_index, global_batch=64, seed=0, step=step,
                                                process_index=0, process_count=1):
      assert a in allowed[case] and b in allowed[case] and (a != b or sizes[case] == 1)


def test_numpy_pipeline_batches(nih_dir):
  c = _cfg(nih_dir, nih_target="multilabel")
  c.data.image_size, c.data.channels, c.pairing = 32, 1, "case"
  src = sources.load_source(c.data, "train")
  it = numpy_pipeline.supervised_iterator(src, aug_cfg=c.aug, image_size=32, channels=1, global_batch=8, seed=0)
  b = next(it)
  assert b["image"].shape == (8, 32, 32, 1) and b["label"].shape == (8, 14) and b["label"].dtype == np.float32
  np.testing.assert_array_equal(b["label"], src.labels[b["index"]])
  p = next(numpy_pipeline.pretrain_iterator(src, data_cfg=c.data, aug_cfg=c.aug, pairing="case", global_batch=8,
                                            seed=0))
  assert p["view_a"].shape == p["view_b"].shape == (8, 32, 32, 1)
  assert np.all(src.case_ids[p["image_a"]] == src.case_ids[p["image_b"]])
  arrays, _ = numpy_pipeline.make_eval_arrays(src, 32, 3)
  assert arrays.shape == (len(src), 32, 32, 3)


def test_refusals(nih_dir, tmp_path):
  with pytest.raises(UserError, match="nih_target"):
    sources.load_source(_cfg(nih_dir, nih_target="multiclass").data, "train")
  with pytest.raises(UserError, match="nih_train_patients"):
    sources.load_source(_cfg(nih_dir, nih_train_patients=0.0).data, "train")
  with pytest.raises(UserError, match="no metadata.csv"):
    sources.load_source(_cfg(tmp_path).data, "train")
