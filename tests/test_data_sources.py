"""Data sources: synthetic data, MedMNIST .npz, folder + CSV manifests, covid_cxr_multi, leakage."""
import dataclasses

import numpy as np
import pytest
from PIL import Image

from configs.base import get_base_config
from input_pipeline import sources


def data_cfg(**kw):
  c = get_base_config().data
  c.update(kw)
  return c


def test_synthetic_source_splits_are_disjoint_cases():
  cfg = data_cfg(source="synthetic")
  cfg.synthetic.num_cases = 40
  splits = {s: sources.load_source(cfg, s) for s in ("train", "val", "test")}
  assert len(splits["train"].cases()) == 40
  sources.check_no_leakage(splits)
  with pytest.raises(ValueError, match="splits"):
    sources.load_source(cfg, "holdout")


def test_source_validation_errors():
  ok = dict(name="x", labels=np.array([0, 1]), case_ids=np.array(["a", "b"]), image_ids=np.array(["1", "2"]),
            num_classes=2, images=np.zeros((2, 4, 4, 1), np.uint8))
  sources.Source(**ok)
  with pytest.raises(ValueError, match=r"label 2 of image 1 .* outside the class range \[0, 2\)"):
    sources.Source(**dict(ok, labels=np.array([0, 2])))
  with pytest.raises(ValueError, match="not unique"):
    sources.Source(**dict(ok, image_ids=np.array(["1", "1"])))
  with pytest.raises(ValueError, match="exactly one"):
    sources.Source(**dict(ok, paths=np.array(["p", "q"])))


def test_leakage_check_names_the_case():
  a = sources.Source("a", np.array([0]), np.array(["p7"]), np.array(["i1"]), 1, images=np.zeros((1, 2, 2, 1), np.uint8))
  b = sources.Source("b", np.array([0]), np.array(["p7"]), np.array(["i2"]), 1, images=np.zeros((1, 2, 2, 1), np.uint8))
  with pytest.raises(ValueError, match=r"patient leakage.*'test'.*'train'.*p7"):
    sources.check_no_leakage({"train": a, "test": b})


def test_npz_fake_and_missing(tmp_path):
  path = tmp_path / "fake.npz"
  np.savez(path, train_images=np.zeros((5, 8, 8), np.uint8), train_labels=np.array([[0], [1], [2], [1], [0]]),
           test_images=np.zeros((2, 8, 8, 3), np.uint8), test_labels=np.array([[1, 0], [0, 1]]))
  src = sources.load_source(data_cfg(source="npz", path=str(path)), "train")
  assert src.images.shape == (5, 8, 8, 1) and src.labels.tolist() == [0, 1, 2, 1, 0] and src.num_classes == 3
  multi = sources.load_source(data_cfg(source="npz", path=str(path)), "test")
  assert multi.is_multilabel and multi.labels.dtype == np.float32
  with pytest.raises(ValueError, match=r"splits \['test', 'train'\]"):
    sources.load_source(data_cfg(source="npz", path=str(path)), "val")
  with pytest.raises(FileNotFoundError, match="data.path"):
    sources.load_source(data_cfg(source="npz", path=str(tmp_path / "absent.npz")), "train")
  with pytest.raises(ValueError, match="data.source='nifti'"):
    sources.load_source(data_cfg(source="nifti"), "train")


def test_real_pneumoniamnist(shared_data):
  cfg = data_cfg(source="npz", path=str(shared_data / "pneumoniamnist.npz"))
  counts = {s: len(sources.load_source(cfg, s)) for s in ("train", "val", "test")}
  assert counts == {"train": 4708, "val": 524, "test": 624}
  test = sources.load_source(cfg, "test")
  assert test.images.shape[1:] == (28, 28, 1) and np.bincount(test.labels).tolist() == [234, 390]


def _png(path, array):
  Image.fromarray(array).save(path)


def _manifest(tmp_path, rows, header="path,case_id,label,split"):
  (tmp_path / "m.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
  return str(tmp_path / "m.csv")


def test_manifest_with_varied_images_and_string_labels(tmp_path):
  _png(tmp_path / "a.png", np.zeros((10, 12), np.uint8))
  _png(tmp_path / "b.png", (np.arange(20 * 20, dtype=np.uint16).reshape(20, 20) * 100))   # 16-bit grey
  _png(tmp_path / "c.png", np.zeros((9, 9, 4), np.uint8))                                  # RGBA
  path = _manifest(tmp_path, ["a.png,p1,pneumonia,train", "b.png,p1,normal,train", "c.png,p2,,test"])
  train = sources.load_source(data_cfg(source="manifest", path=path), "train")
  assert train.class_names == ("normal", "pneumonia") and train.labels.tolist() == [1, 0]
  assert train.case_ids.tolist() == ["p1", "p1"] and train.paths[0].endswith("a.png")
  test = sources.load_source(data_cfg(source="manifest", path=path), "test")
  assert test.labels.tolist() == [-1]   # unlabelled rows are allowed (pretraining)


def test_manifest_multilabel_columns(tmp_path):
  _png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
  _png(tmp_path / "b.png", np.zeros((4, 4), np.uint8))
  path = _manifest(tmp_path, ["a.png,p1,1,0,train", "b.png,p2,-1,,train"], header="path,case_id,edema,effusion,split")
  src = sources.load_source(data_cfg(source="manifest", path=path, label_column="edema,effusion"), "train")
  assert src.is_multilabel and src.labels[0].tolist() == [1, 0]
  assert src.labels[1, 0] == -1 and np.isnan(src.labels[1, 1])


def test_manifest_errors(tmp_path):
  _png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
  (tmp_path / "bad.png").write_bytes(b"not a png at all")
  missing = _manifest(tmp_path, ["a.png,p1,0,train", "gone.png,p2,1,train"])
  with pytest.raises(FileNotFoundError, match="gone.png"):
    sources.load_source(data_cfg(source="manifest", path=missing), "train")
  corrupt = _manifest(tmp_path, ["a.png,p1,0,train", "bad.png,p2,1,train"])
  with pytest.raises(ValueError, match="unreadable image .*bad.png"):
    sources.load_source(data_cfg(source="manifest", path=corrupt), "train")
  leaky = _manifest(tmp_path, ["a.png,p1,0,train", "a.png,p1,0,test"])
  with pytest.raises(ValueError, match="patient leakage.*p1"):
    sources.load_source(data_cfg(source="manifest", path=leaky), "train")
  with pytest.raises(ValueError, match="no column"):
    sources.load_source(data_cfg(source="manifest", path=leaky, case_column="patient"), "train")


def test_covid_cxr_multi_folder(shared_data):
  root = shared_data / "covid_cxr_multi"
  table = sources.covid_cxr_manifest(str(root))
  assert len(table) == table["path"].nunique() == 348      # one row per image file
  assert table["case_id"].nunique() == 127                 # 128 patients, 285 and 339 merged
  assert "339" not in set(table["case_id"])
  cfg = data_cfg(source="manifest", path=str(root))
  train, test = sources.load_source(cfg, "train"), sources.load_source(cfg, "test")
  assert len(train) + len(test) == 348
  assert not set(train.case_ids) & set(test.case_ids)
  assert min(len(v) for v in train.cases().values()) >= 1 and max(len(v) for v in train.cases().values()) >= 2


def test_group_npz_by_lesion_table(tmp_path):
  np.savez(tmp_path / "d.npz", train_images=np.zeros((4, 4, 4, 3), np.uint8), train_labels=np.array([[5], [5], [2], [5]]))
  (tmp_path / "t.csv").write_text("split,index,image_id,lesion_id,dx,label\n"
                                  "train,0,a,L1,nv,5\ntrain,1,b,L1,nv,5\ntrain,2,c,L2,bkl,2\ntrain,3,d,L3,nv,5\n")
  src = sources.load_source(data_cfg(source="npz", path=str(tmp_path / "d.npz")), "train")
  grouped = sources.group_by_table(src, str(tmp_path / "t.csv"), "train")
  assert grouped.case_ids.tolist() == ["L1", "L1", "L2", "L3"]
  (tmp_path / "wrong.csv").write_text("split,index,image_id,lesion_id,dx,label\n"
                                      "train,0,a,L1,nv,5\ntrain,1,b,L1,nv,5\ntrain,2,c,L2,bkl,4\ntrain,3,d,L3,nv,5\n")
  with pytest.raises(ValueError, match="labels disagree"):
    sources.group_by_table(src, str(tmp_path / "wrong.csv"), "train")
