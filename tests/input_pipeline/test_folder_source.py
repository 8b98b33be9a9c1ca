"""data.source='folder' (input_pipeline/sources/folder.py, dicom.py): the scan, the case rules, DICOM
display images against a NumPy restatement of PS3.3 C.11, the seeded case-disjoint split, the
one-line errors, prepare-data, and a tiny pretraining run on a generated folder."""
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from configs.base import get_base_config
from input_pipeline import sources
from input_pipeline.sources import dicom, folder
from medssl_jax.errors import UserError
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CT, MR = get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")  # shipped with pydicom


def _png(path, seed=None, size=(20, 24), mode="RGB"):
  """Random pixels, from `seed` or else from the path (distinct files: the loader refuses copies across splits)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(zlib.crc32(path.encode()) if seed is None else seed)
  shape = size + ((3,) if mode == "RGB" else ())
  x = rng.integers(0, 256, shape, dtype=np.uint8)
  Image.fromarray(x).save(path, format="JPEG" if path.lower().endswith((".jpg", ".jpeg")) else "PNG")
  return x


def _dicom(src, path, **tags):
  """A copy of the DICOM file `src` at `path`, with `tags` set (keyword=value)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  ds = pydicom.dcmread(src)
  for k, v in tags.items():
    setattr(ds, k, v)
  ds.save_as(path)
  return path


def _cfg(path, **data):
  c = get_base_config()
  c.data.source, c.data.path = "folder", str(path)
  for k, v in data.items():
    setattr(c.data, k, v)
  return c


def _load(path, split="train", **data):
  return sources.load_source(_cfg(path, **data).data, split)


def _error(path, split="train", **data) -> str:
  with pytest.raises(UserError) as e:
    _load(path, split, **data)
  return str(e.value)


# ---- the scan ----------------------------------------------------------------------------------

def test_scan_recursive_sorted_mixed_extensions_hidden_skipped(tmp_path):
  _png(str(tmp_path / "b" / "x.png"))
  _png(str(tmp_path / "a" / "deep" / "y.JPG"))
  _png(str(tmp_path / "a" / "z.jpeg"))
  _png(str(tmp_path / "top.png"))
  _dicom(CT, str(tmp_path / "a" / "ct.DCM"))
  _dicom(MR, str(tmp_path / "b" / "mr_no_extension"))
  _dicom(MR, str(tmp_path / "b" / "1.2.840.10008.5"))  # named by its UID: found by the preamble
  _png(str(tmp_path / ".hidden_folder" / "h.png"))
  _png(str(tmp_path / "b" / ".hidden.png"))
  (tmp_path / "notes.txt").write_text("not an image")
  (tmp_path / "b" / "README").write_bytes(b"\0" * 200)  # no extension, no preamble
  shutil.copy(MR, tmp_path / "DICOMDIR")  # an index, not an image
  found = folder.scan(str(tmp_path))
  assert found == [("a/ct.DCM", True), ("a/deep/y.JPG", False), ("a/z.jpeg", False), ("b/1.2.840.10008.5", True),
                   ("b/mr_no_extension", True), ("b/x.png", False), ("top.png", False)]
  src = _load(tmp_path)
  assert src.image_ids.tolist() == [r for r, _ in found]
  assert src.labels.tolist() == [-1] * 7 and src.num_classes == 1
  assert src.records is not None and src.paths is None  # DICOM inside: encoded bytes per index


def test_a_folder_without_dicom_is_read_from_its_paths(tmp_path):
  _png(str(tmp_path / "p" / "a.png"))
  _png(str(tmp_path / "p" / "b.jpg"))
  src = _load(tmp_path)
  assert src.records is None and src.paths.tolist() == [str(tmp_path / "p" / "a.png"), str(tmp_path / "p" / "b.jpg")]


def test_symlinked_folders_are_followed_once(tmp_path):
  _png(str(tmp_path / "real" / "a.png"))
  os.symlink(tmp_path / "real", tmp_path / "link")
  os.symlink(tmp_path, tmp_path / "real" / "loop")  # a link back up: not scanned twice
  assert folder.scan(str(tmp_path)) == [("link/a.png", False)]  # 'link' comes first; 'real' is the same folder


# ---- case rules --------------------------------------------------------------------------------

def _patients(tmp_path):
  _png(str(tmp_path / "site1" / "p01" / "img1.png"))
  _png(str(tmp_path / "site1" / "p01" / "img2.png"), 1)
  _png(str(tmp_path / "site2" / "p01" / "img1.png"), 2)
  _png(str(tmp_path / "site2" / "p02" / "img1.png"), 3)


def test_case_rule_stem_keeps_equal_names_in_two_folders_apart(tmp_path):
  _patients(tmp_path)
  assert _load(tmp_path).case_ids.tolist() == ["site1/p01/img1", "site1/p01/img2", "site2/p01/img1", "site2/p02/img1"]


def test_case_rule_parent(tmp_path):
  _patients(tmp_path)
  assert _load(tmp_path, case_rule="parent").case_ids.tolist() == ["site1/p01", "site1/p01", "site2/p01", "site2/p02"]


def test_case_rule_regex_first_group(tmp_path):
  _patients(tmp_path)
  src = _load(tmp_path, case_rule="regex:^[^/]+/(p\\d+)/")  # patient ids shared across sites
  assert src.case_ids.tolist() == ["p01", "p01", "p01", "p02"]


def test_case_rule_dicom_patient_id(tmp_path):
  _dicom(CT, str(tmp_path / "a" / "1.dcm"), PatientID="alice")
  _dicom(MR, str(tmp_path / "a" / "2.dcm"), PatientID="bob")
  _dicom(MR, str(tmp_path / "b" / "3"), PatientID="alice")
  assert _load(tmp_path, case_rule="dicom").case_ids.tolist() == ["alice", "bob", "alice"]


def test_case_rule_errors(tmp_path):
  _patients(tmp_path)
  _png(str(tmp_path / "loose.png"))
  root = str(tmp_path)
  assert _error(tmp_path, case_rule="parent") == (
      f"data.case_rule='parent': 1 image(s) lie directly in {root}, not in a case folder, e.g. 'loose.png'; put "
      f"each case's (patient's) images in a folder of their own, or use data.case_rule='stem'")
  assert _error(tmp_path, case_rule="regex:^site\\d/") == (
      "data.case_rule='regex:^site\\\\d/': the pattern needs a group, whose text is the case id, e.g. "
      "'regex:^([^/]+)/' (the top-level folder)")
  assert _error(tmp_path, case_rule="regex:^(site\\d)/") == (
      f"data.case_rule='regex:^(site\\\\d)/' gives no case id for 1 image path(s) (relative to {root}, '/' "
      f"separators), e.g. 'loose.png'; its first group must match in every path")
  assert _error(tmp_path, case_rule="regex:(").startswith("data.case_rule='regex:(': not a regular expression (")
  assert _error(tmp_path, case_rule="folder") == (
      "data.case_rule='folder': expected 'stem', 'parent', 'regex:<pattern>' or 'dicom'")
  _dicom(CT, str(tmp_path / "site1" / "p01" / "ct.dcm"))
  assert _error(tmp_path, case_rule="dicom") == (
      f"data.case_rule='dicom' reads the PatientID of DICOM files, but 5 image(s) in {root} are not DICOM, e.g. "
      f"'loose.png'; remove them or use another data.case_rule (e.g. 'parent')")


def test_case_rule_dicom_without_patient_id(tmp_path):
  _dicom(CT, str(tmp_path / "a.dcm"), PatientID="")
  assert _error(tmp_path, case_rule="dicom") == (
      f"data.case_rule='dicom': 1 DICOM file(s) in {tmp_path} have no PatientID, e.g. 'a.dcm'; use another "
      f"data.case_rule (e.g. 'parent')")


# ---- DICOM display images against a NumPy restatement -----------------------------------------

def _stored(path) -> np.ndarray:
  """The stored values of an uncompressed little-endian 16-bit file, from its bytes (not pydicom's decoder)."""
  ds = pydicom.dcmread(path)
  assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1" and ds.BitsAllocated == 16
  dtype = "<i2" if ds.PixelRepresentation else "<u2"
  return np.frombuffer(ds.PixelData, dtype).reshape(ds.Rows, ds.Columns).astype(np.float64)


def _to_255(x, lo, hi):
  return np.clip((x - lo) / (hi - lo), 0, 1) * 255


def _window(x, center, width):
  """PS3.3 C.11.2.1.2.1 (LINEAR) with the output range 0..255."""
  c, w = center - 0.5, width - 1.0
  y = ((x - c) / w + 0.5) * 255
  return np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 255.0, y))


def _close(got, want):
  """Equal up to the rounding of a value that lies on a .5 (float error of two formulas)."""
  assert got.dtype == np.uint8
  diff = np.abs(got.astype(np.float64) - np.asarray(want, np.float64))
  assert diff.max() <= 1.0 and np.mean(diff > 0.5) < 0.01, (diff.max(), np.mean(diff > 0.5))


def test_ct_rescale_without_window_spans_its_range():
  ds = pydicom.dcmread(CT)
  assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), "WindowCenter" in ds) == (1.0, -1024.0, False)
  hu = _stored(CT) * 1.0 - 1024.0
  _close(dicom.read_uint8(CT)[..., 0], _to_255(hu, hu.min(), hu.max()))


def test_ct_rescale_then_window(tmp_path):
  path = _dicom(CT, str(tmp_path / "ct.dcm"), RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=1000,
                WindowWidth=1000)
  hu = _stored(path) * 2.0 - 1000.0
  want = _window(hu, 1000.0, 1000.0)
  assert 0.05 < np.mean(want == 0) and 0.05 < np.mean((want > 0) & (want < 255))  # the window matters
  _close(dicom.read_uint8(path)[..., 0], want)


def test_mr_window_and_monochrome1_inverted(tmp_path):
  ds = pydicom.dcmread(MR)
  assert (float(ds.WindowCenter), float(ds.WindowWidth), ds.PhotometricInterpretation) == (600, 1600, "MONOCHROME2")
  want = _window(_stored(MR), 600.0, 1600.0)
  _close(dicom.read_uint8(MR)[..., 0], want)
  inverted = _dicom(MR, str(tmp_path / "m1.dcm"), PhotometricInterpretation="MONOCHROME1")
  _close(dicom.read_uint8(inverted)[..., 0], 255.0 - np.rint(want))
  first_of_two = _dicom(MR, str(tmp_path / "two.dcm"), WindowCenter=[600, 100], WindowWidth=[1600, 50])
  _close(dicom.read_uint8(first_of_two)[..., 0], want)  # several windows: the first (the default view)


def test_sigmoid_window(tmp_path):
  path = _dicom(MR, str(tmp_path / "s.dcm"), VOILUTFunction="SIGMOID")
  x = _stored(path)
  _close(dicom.read_uint8(path)[..., 0], 255.0 / (1.0 + np.exp(-4.0 * (x - 600.0) / 1600.0)))


def test_voi_lut_sequence_is_preferred_to_the_window(tmp_path):
  ds = pydicom.dcmread(MR)
  first, count = 100, 1024
  lut = np.rint(40000 * np.sqrt(np.arange(count) / (count - 1))).astype(np.int64) + 1000  # 1000..41000
  item = Dataset()
  item.LUTDescriptor = [count, first, 16]
  item.LUTData = lut.tolist()
  ds.VOILUTSequence = [item]
  got = dicom.to_uint8(ds)[..., 0]
  stored = _stored(MR)
  mapped = lut[np.clip(stored - first, 0, count - 1).astype(np.int64)].astype(np.float64)
  assert np.mean(stored >= first + count) > 0.05  # values past the LUT's end: its last entry
  _close(got, _to_255(mapped, 1000.0, 41000.0))


def test_colour_and_multiframe_dicom():
  rgb = get_testdata_file("examples_rgb_color.dcm")
  np.testing.assert_array_equal(dicom.read_uint8(rgb), pydicom.dcmread(rgb).pixel_array)
  volume = get_testdata_file("rtdose.dcm")
  with pytest.raises(UserError) as e:
    dicom.read_uint8(volume)
  assert str(e.value) == (f"DICOM file {volume} holds 15 frames; one file is one image here: export the frames you "
                          f"want as single-frame files (or PNGs) and remove it from data.path")


def test_records_hold_dicom_as_lossless_png_and_files_as_their_bytes(tmp_path):
  _dicom(MR, str(tmp_path / "a" / "mr.dcm"))
  png = _png(str(tmp_path / "b" / "x.png"))
  src = _load(tmp_path)
  with Image.open(io.BytesIO(src.records[0])) as im:
    assert im.format == "PNG" and im.mode == "L"
    np.testing.assert_array_equal(np.asarray(im), dicom.read_uint8(str(tmp_path / "a" / "mr.dcm"))[..., 0])
  assert src.records[1] == (tmp_path / "b" / "x.png").read_bytes()
  with Image.open(io.BytesIO(src.records[1])) as im:
    np.testing.assert_array_equal(np.asarray(im), png)
  assert len(src.records) == 2
  again = pickle.loads(pickle.dumps(src.records))  # as grain sends it to its worker processes
  assert [again[i] for i in range(2)] == [src.records[i] for i in range(2)]


# ---- the split ---------------------------------------------------------------------------------

def _cases(tmp_path, num_cases=40):
  rng = np.random.default_rng(1)
  for k in range(num_cases):
    for j in range(int(rng.integers(1, 6))):
      _png(str(tmp_path / f"patient{k:02d}" / f"{j}.png"), size=(4, 4), mode="L")


def test_split_is_case_disjoint_complete_and_seeded(tmp_path):
  _cases(tmp_path)
  kw = dict(case_rule="parent", val_fraction=0.2, test_fraction=0.1, split_seed=3)
  parts = {s: _load(tmp_path, s, **kw) for s in folder.SPLITS}
  ids = np.concatenate([p.image_ids for p in parts.values()])
  assert sorted(ids.tolist()) == [r for r, _ in folder.scan(str(tmp_path))]  # every image once
  cases = {s: set(p.case_ids.tolist()) for s, p in parts.items()}
  assert not (cases["train"] & cases["val"]) and not (cases["train"] & cases["test"]) and not (cases["val"] & cases["test"])
  for p in parts.values():  # a case's images all in its split
    assert all(i.split("/")[0] == c for i, c in zip(p.image_ids, p.case_ids))
  shares = np.array([len(parts[s]) for s in folder.SPLITS]) / len(ids)
  np.testing.assert_allclose(shares, [0.7, 0.2, 0.1], atol=0.06)
  again = _load(tmp_path, "val", **kw)
  assert again.image_ids.tolist() == parts["val"].image_ids.tolist()
  other = _load(tmp_path, "val", **dict(kw, split_seed=4))
  assert set(other.case_ids.tolist()) != cases["val"]


def test_split_is_the_same_in_another_process(tmp_path):
  _cases(tmp_path, 20)
  here = _load(tmp_path, "test", case_rule="parent", test_fraction=0.3).image_ids.tolist()
  code = ("import json, sys; from configs.base import get_base_config; from input_pipeline import sources\n"
          "c = get_base_config(); c.data.source = 'folder'; c.data.path = sys.argv[1]\n"
          "c.data.case_rule = 'parent'; c.data.test_fraction = 0.3\n"
          "print(json.dumps(sources.load_source(c.data, 'test').image_ids.tolist()))")
  env = dict(os.environ, PYTHONHASHSEED="123")
  out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                       text=True, check=True).stdout
  assert json.loads(out.strip().splitlines()[-1]) == here


def test_the_leakage_check_sees_every_split(tmp_path, monkeypatch):
  _cases(tmp_path, 10)
  seen = {}
  monkeypatch.setattr(folder, "check_no_leakage", lambda splits: seen.update(splits))
  _load(tmp_path, case_rule="parent", val_fraction=0.3)
  assert sorted(seen) == ["test", "train", "val"]
  assert sum(len(v) for v in seen.values()) == len(folder.scan(str(tmp_path)))


def test_default_fractions_put_every_image_in_train(tmp_path):
  _cases(tmp_path, 5)
  assert len(_load(tmp_path)) == len(folder.scan(str(tmp_path)))
  assert _error(tmp_path, "val") == (
      f"image folder {tmp_path}: split 'val' holds none of its {len(folder.scan(str(tmp_path)))} case(s) "
      f"(data.val_fraction=0, data.test_fraction=0, data.split_seed=0); give it a fraction > 0 (of enough cases), "
      f"or leave it out (prepare-data --splits=train)")


# ---- errors ------------------------------------------------------------------------------------

def test_folder_errors(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  looked = (".jpg, .jpeg, .png, .dcm and DICOM files without those extensions ('DICM' at byte 128), in all "
            "sub-folders, hidden ones skipped")
  assert _error(empty) == f"image folder {empty} holds no images (looked for {looked}); point data.path at the " \
                          f"folder of your images"
  (empty / "a.txt").write_text("x")
  _png(str(empty / ".hidden" / "a.png"))
  assert _error(empty).startswith(f"image folder {empty} holds no images (")
  assert _error(empty / "a.txt") == (f"data.path={empty / 'a.txt'} is a file; data.source='folder' reads a folder "
                                     f"of images (a CSV of image paths: data.source='manifest')")
  assert _error(tmp_path / "absent") == f"image folder {tmp_path / 'absent'} does not exist (set --config.data.path)"
  assert _error("") == "no image folder given: set --config.data.path=PATH"
  _png(str(tmp_path / "ok" / "a.png"))
  assert _error(tmp_path / "ok", "valid") == (
      f"image folder {tmp_path / 'ok'} has splits ['test', 'train', 'val'], not 'valid' (set data.train_split / "
      f"data.eval_split / finetune.val_split to one of them)")
  assert _error(tmp_path / "ok", val_fraction=0.6, test_fraction=0.4) == (
      "data.val_fraction=0.6 and data.test_fraction=0.4: each must be in [0, 1) and together below 1 (the rest of "
      "the images is split 'train')")


def test_verify_names_broken_files(tmp_path):
  _png(str(tmp_path / "a.png"))
  data = (tmp_path / "a.png").read_bytes()
  (tmp_path / "b.png").write_bytes(data[:len(data) // 2])  # an interrupted copy
  msg = _error(tmp_path)
  assert msg.startswith(f"1 of 2 image file(s) cannot be decoded: unreadable image {tmp_path / 'b.png'}: ")
  assert len(_load(tmp_path, verify_images=False)) == 2  # verification off: found, not decoded
  (tmp_path / "b.png").unlink()
  truncated = get_testdata_file("MR_truncated.dcm")  # pixel data cut short
  shutil.copy(truncated, tmp_path / "t.dcm")
  msg = _error(tmp_path)
  assert msg.startswith(f"1 of 1 DICOM file(s) cannot be read: cannot read DICOM file {tmp_path / 't.dcm'} (")
  assert "\n" not in msg


def test_fine_tuning_an_unlabelled_folder_is_refused(tmp_path):
  from medssl_jax import main
  _png(str(tmp_path / "data" / "a.png"))
  c = tiny_config()
  c.mode, c.finetune.init = "finetune", "random"
  c.data.source, c.data.path, c.data.pipeline = "folder", str(tmp_path / "data"), "numpy"
  with pytest.raises(UserError) as e:
    main.run(c, str(tmp_path / "work"))
  assert str(e.value) == (
      f"unlabelled image folder {tmp_path / 'data'}:train (to fine-tune or linear-evaluate, label the images in a "
      f"CSV manifest: data.source='manifest'): 1 images have no label (-1); fine-tuning needs labelled images")


# ---- prepare-data and a pretraining run -------------------------------------------------------

def test_prepare_data_writes_the_folder_as_records(tmp_path):
  from medssl_jax.commands import prepare_data
  _cases(tmp_path / "data", 6)
  _dicom(CT, str(tmp_path / "data" / "patient00" / "ct.dcm"))
  c = _cfg(tmp_path / "data", case_rule="parent", val_fraction=0.3)
  done = prepare_data.prepare(c, str(tmp_path / "out"), splits=["train", "val"])
  assert [d["split"] for d in done] == ["train", "val"]
  for split in ("train", "val"):
    original = sources.load_source(c.data, split)
    c2 = _cfg(tmp_path / "out")
    c2.data.source = "records"
    prepared = sources.load_source(c2.data, split)
    assert prepared.image_ids.tolist() == original.image_ids.tolist()
    assert prepared.case_ids.tolist() == original.case_ids.tolist()
    assert prepared.labels.tolist() == original.labels.tolist()
    for i in range(len(original)):
      assert prepared.records[i] == original.records[i]


def test_tiny_pretraining_run_on_a_folder(tmp_path):
  from medssl_jax import main
  for k in range(8):  # 8 patients x 2 grey and colour PNGs, and one DICOM
    _png(str(tmp_path / "data" / f"p{k}" / "a.png"), seed=k, size=(20, 18))
    _png(str(tmp_path / "data" / f"p{k}" / "b.png"), seed=100 + k, size=(16, 16), mode="L")
  _dicom(MR, str(tmp_path / "data" / "p0" / "mr.dcm"))
  c = tiny_config(batch_size=8, image_size=16, steps=3)
  c.data.source, c.data.path, c.data.case_rule = "folder", str(tmp_path / "data"), "parent"
  c.data.pipeline = "numpy"
  c.aug.blur_prob = 0.0
  c.train.log_every, c.train.checkpoint_every, c.optim.warmup_steps = 1, 3, 1
  results = main.run(c, str(tmp_path / "work"))
  assert results["final_step"] == 3 and results["completed"]
  assert len(results["loss_history"]) >= 1 and all(np.isfinite(v) for _, v in results["loss_history"])
  assert os.path.isfile(tmp_path / "work" / "results.json")
