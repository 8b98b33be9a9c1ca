"""data.source='folder': a folder of JPEG, PNG and DICOM files, for pretraining without labels.

  medssl-jax train --config=configs/folder_simclr.py --config.data.path=/data/xrays --workdir=...

- Scan: `data.path` recursively; files ending .jpg / .jpeg / .png / .dcm (any case), and any other
  file that holds the DICOM preamble ('DICM' at byte 128: files named by their UID, or without an
  extension); hidden files and folders (a name starting with '.') and DICOMDIR indexes skipped;
  symbolic links followed (each folder once). Images are ordered by their path relative to
  `data.path` (sorted), which is also their image id, so the order is the same on every machine.
- Case (patient) ids, `data.case_rule`: 'stem' (the relative path without its extension: every
  image its own case; two 'img1.png' in two folders stay two cases), 'parent' (the relative path of
  the image's folder: one folder per patient), 'regex:<pattern>' (the first group of the pattern,
  searched in the relative path with '/' separators, e.g. 'regex:^([^/]+)/' for the top-level
  folder), 'dicom' (the PatientID tag; every image must then be DICOM).
- Labels: none (-1 for every image, one nominal class), which pretraining needs and fine-tuning
  and linear evaluation refuse (label the images in a CSV manifest, data.source='manifest').
- Splits 'train' / 'val' / 'test': a seeded case-disjoint draw (`base.patient_split`) giving
  'val' and 'test' `data.val_fraction` and `data.test_fraction` of the images and 'train' the
  rest; by default (0, 0) every image is in 'train'. The draw depends only on the case ids and
  their image counts and `data.split_seed`: the same in every call and process. The splits'
  case ids are checked for leakage as for every source.
- `data.verify_images`: every image of the split loaded is decoded once at start (JPEG / PNG with
  Pillow, DICOM as below), so a bad file is named before training.

How DICOM reaches the pipelines, which decode JPEG and PNG only: a folder without DICOM files is a
`Source` of `paths` (the pipelines read the files themselves); a folder with DICOM files is a
`Source` of `records`, `FolderImages`: record i is an image file's own bytes, or the lossless PNG
of a DICOM file's display image (`dicom.py`: modality LUT, VOI LUT or window, MONOCHROME1
inverted, 8 bits), made when the image is read, so nothing is decoded up front and the pipelines
stay as they are. Each read of a DICOM image decodes the file again: for a large DICOM folder,
write it once as records (`medssl-jax prepare-data --config=... --out=DIR --splits=train`, with
`--short_side=N` to store it at the training size) and train from those (data.source='records').
"""
import concurrent.futures
import functools
import os
import re

import numpy as np

from input_pipeline.sources import dicom
from input_pipeline.sources.base import UNLABELLED, Source, check_no_leakage, patient_split, require_path, unknown_split
from input_pipeline.sources.images import check_no_duplicates_across_splits, verify_images
from medssl_jax.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
DICOM_EXTENSION = ".dcm"
SPLITS = ("train", "val", "test")
CASE_RULES = "'stem', 'parent', 'regex:<pattern>' or 'dicom'"
LOOKED_FOR = ".jpg, .jpeg, .png, .dcm and DICOM files without those extensions ('DICM' at byte 128)"


def scan(root: str) -> list:
  """[(relative path with '/' separators, is DICOM)] of the images under `root`, sorted by path."""
  found, seen = [], set()
  for folder, dirs, files in os.walk(root, followlinks=True):
    real = os.path.realpath(folder)
    if real in seen:  # a link back to a folder already scanned
      dirs[:] = []
      continue
    seen.add(real)
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in files:
      if name.startswith(".") or name.upper() == "DICOMDIR":
        continue
      path = os.path.join(folder, name)
      ext = os.path.splitext(name)[1].lower()
      if ext in IMAGE_EXTENSIONS or ext == DICOM_EXTENSION or dicom.has_dicom_magic(path):
        found.append((os.path.relpath(path, root).replace(os.sep, "/"), ext not in IMAGE_EXTENSIONS))
  return sorted(found)


@functools.lru_cache(maxsize=1 << 20)
def _patient_id(path: str, size: int, mtime_ns: int) -> str:
  """The PatientID of a DICOM file, read once per process while the file is unchanged."""
  del size, mtime_ns  # part of the cache key only
  try:
    return dicom.patient_id(path)
  except Exception as e:  # pydicom raises many types for a bad file
    raise UserError(f"cannot read the DICOM header of {path} ({type(e).__name__}: {e}); replace or remove "
                    f"it") from e


def case_ids(root: str, rel: list, is_dicom, rule: str) -> np.ndarray:
  """The case id of every image (`rel`: paths relative to `root`) under `data.case_rule`."""
  rule = str(rule)
  if rule == "stem":
    return np.array([os.path.splitext(r)[0] for r in rel])
  if rule == "parent":
    at_root = [r for r in rel if "/" not in r]
    if at_root:
      raise UserError(f"data.case_rule='parent': {len(at_root)} image(s) lie directly in {root}, not in a case "
                      f"folder, e.g. {at_root[0]!r}; put each case's (patient's) images in a folder of their own, "
                      f"or use data.case_rule='stem'")
    return np.array([r.rpartition("/")[0] for r in rel])
  if rule.startswith("regex:"):
    try:
      pattern = re.compile(rule[len("regex:"):])
    except re.error as e:
      raise UserError(f"data.case_rule={rule!r}: not a regular expression ({e})") from e
    if pattern.groups < 1:
      raise UserError(f"data.case_rule={rule!r}: the pattern needs a group, whose text is the case id, e.g. "
                      f"'regex:^([^/]+)/' (the top-level folder)")
    matches = [pattern.search(r) for r in rel]
    bad = [r for r, m in zip(rel, matches) if m is None or not m.group(1)]
    if bad:
      raise UserError(f"data.case_rule={rule!r} gives no case id for {len(bad)} image path(s) (relative to "
                      f"{root}, '/' separators), e.g. {bad[0]!r}; its first group must match in every path")
    return np.array([m.group(1) for m in matches])
  if rule == "dicom":
    other = [r for r, d in zip(rel, is_dicom) if not d]
    if other:
      raise UserError(f"data.case_rule='dicom' reads the PatientID of DICOM files, but {len(other)} image(s) in "
                      f"{root} are not DICOM, e.g. {other[0]!r}; remove them or use another data.case_rule "
                      f"(e.g. 'parent')")
    ids = []
    for r in rel:
      path = os.path.join(root, r)
      st = os.stat(path)
      ids.append(_patient_id(path, st.st_size, st.st_mtime_ns))
    missing = [r for r, i in zip(rel, ids) if not i]
    if missing:
      raise UserError(f"data.case_rule='dicom': {len(missing)} DICOM file(s) in {root} have no PatientID, e.g. "
                      f"{missing[0]!r}; use another data.case_rule (e.g. 'parent')")
    return np.array(ids)
  raise UserError(f"data.case_rule={rule!r}: expected {CASE_RULES}")


def split_fractions(data_cfg) -> tuple:
  """(train, val, test) shares of the images, from data.val_fraction and data.test_fraction."""
  val, test = float(data_cfg.val_fraction), float(data_cfg.test_fraction)
  if not (0.0 <= val < 1.0 and 0.0 <= test < 1.0 and val + test < 1.0):
    raise UserError(f"data.val_fraction={val:g} and data.test_fraction={test:g}: each must be in [0, 1) and "
                    f"together below 1 (the rest of the images is split 'train')")
  return 1.0 - val - test, val, test


class FolderImages:
  """Random access to a folder split's images as encoded bytes: an image file's own bytes, or the
  lossless PNG of a DICOM file's display image (made on each read). Plain data: sent to grain workers
  as it is."""

  def __init__(self, paths, is_dicom):
    self.paths = [str(p) for p in paths]
    self.is_dicom = [bool(d) for d in is_dicom]

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i) -> bytes:
    i = int(i)
    if self.is_dicom[i]:
      return dicom.png_bytes(dicom.read_uint8(self.paths[i]))
    with open(self.paths[i], "rb") as f:
      return f.read()


def _dicom_problem(path: str):
  try:
    dicom.read_uint8(path)
  except UserError as e:
    return str(e)
  return None


def verify_dicoms(paths, chunk: int = 16) -> None:
  """Reads every DICOM file to its display image, on a thread pool; UserError naming those that fail."""
  paths = [str(p) for p in paths]
  chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(16, os.cpu_count() or 1))) as pool:
    problems = [m for part in pool.map(lambda ps: [_dicom_problem(p) for p in ps], chunks) for m in part]
  bad = [m for m in problems if m]
  if bad:
    raise UserError(f"{len(bad)} of {len(paths)} DICOM file(s) cannot be read: " + "; ".join(bad[:3]))


def load(data_cfg, split: str) -> Source:
  root = require_path(data_cfg.path, what="image folder")
  if not os.path.isdir(root):
    raise UserError(f"data.path={root} is a file; data.source='folder' reads a folder of images (a CSV of image "
                    f"paths: data.source='manifest')")
  root = os.path.abspath(root)
  found = scan(root)
  if not found:
    raise UserError(f"image folder {root} holds no images (looked for {LOOKED_FOR}, in all sub-folders, hidden "
                    f"ones skipped); point data.path at the folder of your images")
  rel = [r for r, _ in found]
  is_dicom = np.array([d for _, d in found], bool)
  cases = case_ids(root, rel, is_dicom, data_cfg.case_rule)
  fractions = split_fractions(data_cfg)
  names = np.asarray(SPLITS)[patient_split(cases, fractions, int(data_cfg.split_seed))]
  check_no_leakage({s: cases[names == s] for s in SPLITS})
  if split not in SPLITS:
    raise unknown_split(f"image folder {root}", split, SPLITS)
  rows = np.flatnonzero(names == split)
  if not len(rows):
    raise UserError(f"image folder {root}: split {split!r} holds none of its {len(np.unique(cases))} case(s) "
                    f"(data.val_fraction={fractions[1]:g}, data.test_fraction={fractions[2]:g}, data.split_seed="
                    f"{int(data_cfg.split_seed)}); give it a fraction > 0 (of enough cases), or leave it out "
                    f"(prepare-data --splits=train)")
  paths = np.array([os.path.join(root, rel[i]) for i in rows])
  if data_cfg.verify_images:
    verify_images(paths[~is_dicom[rows]])
    verify_dicoms(paths[is_dicom[rows]])
    # The same bytes under two names (hence possibly two cases) in two splits: leakage by copy.
    check_no_duplicates_across_splits({s: [os.path.join(root, rel[i]) for i in np.flatnonzero(names == s)]
                                       for s in SPLITS}, f" of image folder {root}")
  # The name ends every fine-tuning / linear-evaluation refusal of unlabelled images: it says what to do.
  name = (f"unlabelled image folder {root}:{split} (to fine-tune or linear-evaluate, label the images in a CSV "
          f"manifest: data.source='manifest')")
  images = dict(records=FolderImages(paths, is_dicom[rows])) if is_dicom.any() else dict(paths=paths)
  return Source(name, np.full(len(rows), UNLABELLED, np.int64), cases[rows], np.asarray(rel)[rows], 1, **images)
