"""Data sources: validation, leakage check, MedMNIST .npz, manifests, covid_cxr_multi, CheXpert."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from configs.base import get_base_config
from input_pipeline import sources
from medssl_jax.errors import MissingFileError, UserError


def data_cfg(**kw):
  c = get_base_config().data
  c.update(kw)
  return c


def _source(**kw):
  args = dict(name="x", labels=np.array([0, 1, 1]), case_ids=np.array(["b", "a", "b"]),
              image_ids=np.array(["1", "2", "3"]), num_classes=2, images=np.zeros((3, 4, 4, 1), np.uint8))
  args.update(kw)
  return sources.Source(**args)


# ---- Source ---------------------------------------------------------------------------------
def test_source_helpers():
  src = _source()
  assert len(src) == 3 and not src.is_multilabel and src.num_cases == 2
  cases = src.cases()
  assert list(cases) == ["a", "b"] and cases["b"].tolist() == [0, 2] and cases["a"].tolist() == [1]
  assert _source(labels=np.array([-1, 0, 1])).labels[0] == -1   # -1 = unlabelled
  multi = _source(labels=np.array([[1, np.nan], [0, -1], [1, 1]], np.float32))
  assert multi.is_multilabel


def test_source_validation_errors():
  with pytest.raises(ValueError, match=r"label 2 of image 1 \(2\) is outside the class range \[0, 2\)"):
    _source(labels=np.array([0, 2, 1]))
  with pytest.raises(ValueError, match=r"label -3 of image 2"):
    _source(labels=np.array([0, 1, -3]))
  with pytest.raises(ValueError, match=r"not unique, e.g. \['1'\]"):
    _source(image_ids=np.array(["1", "1", "3"]))
  with pytest.raises(ValueError, match="exactly one of images / paths"):
    _source(paths=np.array(["p", "q", "r"]))
  with pytest.raises(ValueError, match="exactly one of images / paths"):
    _source(images=None)
  with pytest.raises(ValueError, match="case_ids has 2 entries for 3 labels"):
    _source(case_ids=np.array(["a", "b"]))
  with pytest.raises(ValueError, match="uint8"):
    _source(images=np.zeros((3, 4, 4, 1), np.float32))
  with pytest.raises(ValueError, match="multi-label"):
    _source(labels=np.zeros((3, 5), np.float32))
  with pytest.raises(ValueError, match="integer class ids"):
    _source(labels=np.array([0.0, 1.0, 1.0]))


def test_check_no_leakage_names_cases_and_splits():
  train = _source(case_ids=np.array(["p1", "p2", "p7"]))
  test = _source(case_ids=np.array(["p7", "p8", "p9"]))
  sources.check_no_leakage({"train": train, "val": _source(case_ids=np.array(["v", "w", "x"]))})
  with pytest.raises(ValueError, match=r"patient leakage: 1 case\(s\) in both split 'test' and split 'train', "
                                       r"e.g. \['p7'\]"):
    sources.check_no_leakage({"train": train, "test": test})
  with pytest.raises(ValueError, match="'a' and split 'b'"):
    sources.check_no_leakage({"a": np.array(["x"]), "b": ["x"]})   # plain arrays of case ids work too


def test_load_source_errors(tmp_path):
  with pytest.raises(ValueError, match=r"data.source='nifti': expected one of \['synthetic', 'npz', 'manifest'"):
    sources.load_source(data_cfg(source="nifti"), "train")
  with pytest.raises(FileNotFoundError, match=r"absent.npz does not exist \(set --config.data.path\)"):
    sources.load_source(data_cfg(source="npz", path=str(tmp_path / "absent.npz")), "train")
  with pytest.raises(FileNotFoundError, match="set --config.data.path=PATH"):
    sources.load_source(data_cfg(source="manifest", path=""), "train")
  with pytest.raises(FileNotFoundError, match="without metadata_subset.csv"):
    sources.load_source(data_cfg(source="manifest", path=str(tmp_path)), "train")


# ---- MedMNIST .npz ----------------------------------------------------------------------------
def test_npz_fake(tmp_path):
  path = tmp_path / "fake.npz"
  np.savez(path, train_images=np.zeros((5, 8, 8), np.uint8), train_labels=np.array([[0], [1], [3], [1], [0]]),
           val_images=np.zeros((2, 8, 8), np.uint8), val_labels=np.array([[1], [1]]),
           test_images=np.zeros((2, 8, 8, 3), np.uint8), test_labels=np.array([[1, 0], [0, 1]]))
  cfg = data_cfg(source="npz", path=str(path))
  train = sources.load_source(cfg, "train")
  assert train.images.shape == (5, 8, 8, 1) and train.labels.dtype == np.int64
  assert train.labels.tolist() == [0, 1, 3, 1, 0] and train.num_classes == 4
  assert train.case_ids.tolist() == train.image_ids.tolist() == [f"train-{i}" for i in range(5)]
  assert sources.load_source(cfg, "val").num_classes == 4   # the class count of the whole file
  multi = sources.load_source(cfg, "test")
  assert multi.is_multilabel and multi.labels.dtype == np.float32 and multi.images.shape == (2, 8, 8, 3)
  with pytest.raises(ValueError, match=r"has splits \['test', 'train', 'val'\], not 'holdout'"):
    sources.load_source(cfg, "holdout")


def test_npz_real_medmnist(shared_data):
  cfg = data_cfg(source="npz", path=str(shared_data / "pneumoniamnist.npz"))
  splits = {s: sources.load_source(cfg, s) for s in ("train", "val", "test")}
  assert {s: len(v) for s, v in splits.items()} == {"train": 4708, "val": 524, "test": 624}
  assert {s: np.bincount(v.labels).tolist() for s, v in splits.items()} == {
      "train": [1214, 3494], "val": [135, 389], "test": [234, 390]}
  assert splits["train"].images.shape == (4708, 28, 28, 1) and splits["train"].images.dtype == np.uint8
  assert splits["test"].num_classes == 2 and splits["test"].num_cases == 624   # one case per image
  breast = sources.load_source(data_cfg(source="npz", path=str(shared_data / "breastmnist.npz")), "train")
  assert len(breast) == 546 and np.bincount(breast.labels).tolist() == [147, 399]


def test_group_by_real_lesion_table(shared_data, tmp_path):
  table = pd.read_csv(shared_data / "dermamnist_split_lesions.csv")
  rows = table[(table["split"] == "val") & (table["index"] < 40)].sort_values("index")
  assert rows["index"].tolist() == list(range(40))
  labels = rows["label_medmnist_order"].to_numpy()[:, None]   # the real column name
  np.savez(tmp_path / "derm.npz", val_images=np.zeros((40, 4, 4, 3), np.uint8), val_labels=labels)
  rows.to_csv(tmp_path / "slice.csv", index=False)
  src = sources.load_source(data_cfg(source="npz", path=str(tmp_path / "derm.npz")), "val")
  grouped = sources.group_by_table(src, str(tmp_path / "slice.csv"), "val")
  assert grouped.case_ids.tolist() == rows["lesion_id"].tolist()
  assert grouped.labels.tolist() == src.labels.tolist() and grouped.images is src.images
  wrong = labels.copy()
  wrong[7] = (wrong[7] + 1) % 7
  np.savez(tmp_path / "wrong.npz", val_images=np.zeros((40, 4, 4, 3), np.uint8), val_labels=wrong)
  src = sources.load_source(data_cfg(source="npz", path=str(tmp_path / "wrong.npz")), "val")
  with pytest.raises(ValueError, match="labels disagree .* index 7"):
    sources.group_by_table(src, str(tmp_path / "slice.csv"), "val")
  np.savez(tmp_path / "small.npz", val_images=np.zeros((30, 4, 4, 3), np.uint8), val_labels=labels[:30])
  src = sources.load_source(data_cfg(source="npz", path=str(tmp_path / "small.npz")), "val")
  with pytest.raises(ValueError, match="index 30 .* out of range for the 30 images"):
    sources.group_by_table(src, str(tmp_path / "slice.csv"), "val")


def test_grouped_npz_through_config_checks_leakage(tmp_path):
  np.savez(tmp_path / "d.npz", train_images=np.zeros((3, 4, 4, 3), np.uint8), train_labels=np.array([[5], [5], [2]]),
           test_images=np.zeros((1, 4, 4, 3), np.uint8), test_labels=np.array([[5]]))
  header = "split,index,image_id,lesion_id,dx,label\n"
  (tmp_path / "ok.csv").write_text(header + "train,0,a,L1,nv,5\ntrain,1,b,L1,nv,5\ntrain,2,c,L2,bkl,2\n"
                                   "test,0,d,L3,nv,5\n")
  cfg = data_cfg(source="npz", path=str(tmp_path / "d.npz"))
  cfg.group_table = str(tmp_path / "ok.csv")   # optional key, read with .get
  train = sources.load_source(cfg, "train")
  assert train.case_ids.tolist() == ["L1", "L1", "L2"] and train.num_cases == 2
  (tmp_path / "leaky.csv").write_text(header + "train,0,a,L1,nv,5\ntrain,1,b,L1,nv,5\ntrain,2,c,L2,bkl,2\n"
                                      "test,0,d,L1,nv,5\n")
  cfg.group_table = str(tmp_path / "leaky.csv")
  with pytest.raises(ValueError, match=r"patient leakage.*'test' and split 'train'.*L1"):
    sources.load_source(cfg, "train")


# ---- folder + CSV manifests -------------------------------------------------------------------
def _write_csv(folder, rows, header="path,case_id,label,split"):
  (folder / "m.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
  return str(folder / "m.csv")


def test_manifest_varied_images_and_string_labels(tmp_path):
  img = tmp_path / "img"
  img.mkdir()
  Image.fromarray(np.zeros((10, 12), np.uint8)).save(img / "a.png")                                  # 8-bit grey
  Image.fromarray(np.arange(400, dtype=np.uint16).reshape(20, 20) * 150).save(img / "b.png")         # 16-bit
  Image.fromarray(np.full((9, 9, 4), 200, np.uint8)).save(img / "c.png")                             # RGBA
  Image.fromarray(np.zeros((6, 6), np.uint8)).convert("P").save(img / "d.png")                       # palette
  Image.fromarray(np.zeros((16, 8, 3), np.uint8)).save(img / "e.jpg")                                # JPEG
  assert Image.open(img / "b.png").mode.startswith("I")
  path = _write_csv(tmp_path, ["img/a.png,p1,pneumonia,train", "img/b.png,p1,normal,train",
                               "img/c.png,p2,normal,train", "img/d.png,p3,,train", "img/e.jpg,p4,covid,test"])
  cfg = data_cfg(source="manifest", path=path)
  train = sources.load_source(cfg, "train")
  assert train.class_names == ("covid", "normal", "pneumonia") and train.num_classes == 3
  assert train.labels.tolist() == [2, 1, 1, -1]   # '' = unlabelled (-1): fine for pretraining
  assert train.case_ids.tolist() == ["p1", "p1", "p2", "p3"] and train.num_cases == 3
  assert train.image_ids.tolist() == ["img/a.png", "img/b.png", "img/c.png", "img/d.png"]
  assert train.paths[0] == str(img / "a.png") and train.images is None
  assert sources.load_source(cfg, "test").labels.tolist() == [0]
  # Paths relative to data.image_dir instead of the CSV's folder.
  other = tmp_path / "elsewhere"
  other.mkdir()
  path = _write_csv(other, ["a.png,p1,1,train", "b.png,p2,0,train", "c.png,p3,,train", "e.jpg,p4,2,test"])
  train = sources.load_source(data_cfg(source="manifest", path=path, image_dir=str(img)), "train")
  assert train.labels.tolist() == [1, 0, -1] and train.num_classes == 3 and train.class_names == ()
  with pytest.raises(ValueError, match=r"splits \['test', 'train'\], not 'val'"):
    sources.load_source(cfg, "val")


def test_manifest_multilabel_columns(tmp_path):
  for name in "ab":
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / f"{name}.png")
  path = _write_csv(tmp_path, ["a.png,p1,1,0,train", "b.png,p2,-1,,train"], header="file,patient,edema,effusion,fold")
  cfg = data_cfg(source="manifest", path=path, path_column="file", case_column="patient",
                 label_column="edema, effusion", split_column="fold")
  src = sources.load_source(cfg, "train")
  assert src.is_multilabel and src.labels.dtype == np.float32 and src.num_classes == 2
  assert src.class_names == ("edema", "effusion") and src.labels[0].tolist() == [1, 0]
  assert src.labels[1, 0] == -1 and np.isnan(src.labels[1, 1])   # -1 uncertain, '' missing


def test_manifest_errors(tmp_path):
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
  (tmp_path / "bad.png").write_bytes(b"not a png at all")
  missing = _write_csv(tmp_path, ["a.png,p1,0,train", "gone.png,p2,1,train"])
  with pytest.raises(FileNotFoundError, match=r"1 image file\(s\) .* missing, e.g. \[.*gone.png"):
    sources.load_source(data_cfg(source="manifest", path=missing), "train")
  corrupt = _write_csv(tmp_path, ["a.png,p1,0,train", "bad.png,p2,1,train"])
  with pytest.raises(ValueError, match="unreadable image .*bad.png"):
    sources.load_source(data_cfg(source="manifest", path=corrupt), "train")
  assert len(sources.load_source(data_cfg(source="manifest", path=corrupt, verify_images=False), "train")) == 2
  leaky = _write_csv(tmp_path, ["a.png,p1,0,train", "a.png,p1,0,test"])
  for split in ("train", "test"):   # whichever split is loaded
    with pytest.raises(ValueError, match=r"patient leakage: 1 case\(s\) in both split 'test' and split 'train'.*p1"):
      sources.load_source(data_cfg(source="manifest", path=leaky), split)
  with pytest.raises(ValueError, match=r"no column\(s\) \['patient'\]"):
    sources.load_source(data_cfg(source="manifest", path=leaky, case_column="patient"), "train")
  twice = _write_csv(tmp_path, ["a.png,p1,0,train", "a.png,p1,0,train"])
  with pytest.raises(ValueError, match="not unique"):
    sources.load_source(data_cfg(source="manifest", path=twice), "train")
  nosplit = _write_csv(tmp_path, ["a.png,p1,0,train", "a.png,p2,0,"])
  with pytest.raises(ValueError, match="empty 'split'"):
    sources.load_source(data_cfg(source="manifest", path=nosplit), "train")


# ---- covid_cxr_multi --------------------------------------------------------------------------
def test_covid_cxr_multi(shared_data, tmp_path):
  root = shared_data / "covid_cxr_multi"
  table = sources.covid_cxr_manifest(str(root))
  assert len(table) == table["path"].nunique() == 348           # one row per image file
  assert table["case_id"].nunique() == 127                      # 128 patient ids, 285 and 339 merged
  assert "339" not in set(table["case_id"]) and (table["case_id"] == "285").sum() == 3
  assert (table["label"] == "").sum() == 17                     # 'todo' findings are unlabelled
  assert table.groupby("case_id")["split"].nunique().max() == 1
  assert table.equals(sources.covid_cxr_manifest(str(root)))    # deterministic
  assert not table["split"].equals(sources.covid_cxr_manifest(str(root), seed=1)["split"])
  cases = table.groupby("split")["case_id"].nunique()
  assert cases["test"] == 24 and cases["train"] == 103
  three = sources.covid_cxr_manifest(str(root), test_fraction=0.2, val_fraction=0.1)
  assert set(three["split"]) == {"train", "val", "test"}

  cfg = data_cfg(source="manifest", path=str(root))
  train, test = sources.load_source(cfg, "train"), sources.load_source(cfg, "test")
  assert len(train) + len(test) == 348 and train.num_cases + test.num_cases == 127
  assert not set(train.case_ids) & set(test.case_ids)
  assert train.class_names == test.class_names and "COVID-19" in train.class_names
  assert max(len(v) for v in train.cases().values()) == 8 and min(len(v) for v in train.cases().values()) == 2
  # The written manifest (absolute paths) loads as an ordinary manifest CSV.
  sources.covid_cxr_manifest(str(root), out_csv=str(tmp_path / "covid.csv"))
  again = sources.load_source(data_cfg(source="manifest", path=str(tmp_path / "covid.csv"), verify_images=False),
                              "test")
  assert again.paths.tolist() == test.paths.tolist() and again.labels.tolist() == test.labels.tolist()


# ---- TFDS / CheXpert --------------------------------------------------------------------------
def test_chexpert_absent_is_a_clear_error(tmp_path):
  cfg = data_cfg(source="tfds", tfds_name="chexpert", path=str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"CheXpert-v1.0-small/train.csv.*--config.data.path"):
    sources.load_source(cfg, "train")
  with pytest.raises(ValueError, match="tfds_name"):
    sources.load_source(data_cfg(source="tfds"), "train")


@pytest.mark.parametrize("folder", ["CheXpert-v1.0-small", "CheXpert-v1.0"])
def test_chexpert_manual_folder(tmp_path, folder):
  base = tmp_path / "downloads" / "manual" / folder
  header = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural Effusion"
  files = {"train": ["train/patient00001/study1/view1_frontal.jpg", "train/patient00001/study2/view1_frontal.jpg",
                     "train/patient00002/study1/view1_frontal.jpg"],
           "valid": ["valid/patient64541/study1/view1_frontal.jpg"]}
  values = ["1.0,,0.0,-1.0,", ",1.0,,,0.0", "0.0,0.0,0.0,0.0,1.0"]
  for split, names in files.items():
    for name in names:
      (base / name).parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(np.zeros((8, 8), np.uint8)).save(base / name)
    rows = [f"{folder}/{n},Male,50,Frontal,AP,,{values[i]}" for i, n in enumerate(names)]
    (base / f"{split}.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
  cfg = data_cfg(source="tfds", tfds_name="chexpert", path=str(tmp_path))
  if folder != "CheXpert-v1.0-small":
    with pytest.raises(MissingFileError, match="no CheXpert-v1.0-small/train.csv"):
      sources.load_source(cfg, "train")  # the default folder is the downsampled one
    cfg.chexpert_folder = folder
  bad = data_cfg(source="tfds", tfds_name="chexpert", path=str(tmp_path))
  bad.chexpert_folder = "CheXpert-v2"
  with pytest.raises(UserError, match="data.chexpert_folder='CheXpert-v2'"):
    sources.load_source(bad, "train")
  train = sources.load_source(cfg, "train")
  assert train.num_classes == 5 and train.class_names == sources.CHEXPERT_TASKS
  assert train.case_ids.tolist() == ["patient00001", "patient00001", "patient00002"]
  np.testing.assert_array_equal(train.labels[0], [1, np.nan, 0, -1, np.nan])
  assert train.paths[0] == str(base / files["train"][0])
  assert len(sources.load_source(cfg, "validation")) == len(sources.load_source(cfg, "valid")) == 1
  with pytest.raises(ValueError, match=r"splits \['train', 'validation'\], not 'test'"):
    sources.load_source(cfg, "test")
  cfg.label_column = "Pleural Effusion,Cardiomegaly"   # any CheXpert columns, in this order
  assert sources.load_source(cfg, "train").labels[1].tolist() == [0.0, 1.0]
