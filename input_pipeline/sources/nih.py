"""NIH ChestX-ray14 from a folder of images and its metadata.csv (data.source='nih').

The folder is `nih_cxr14_kcr1000_64px` (../shared/data, see its PROVENANCE.md): `images/*.png`
and `metadata.csv` with one row per image (image_file, patient_id, follow_up,
finding_labels_v2020 ('|'-separated findings or 'No Finding'), view_position (PA / AP),
patient_sex (F / M), source_split, ...). Any folder with those columns is read the same way.

- Case ids: `patient_id` (a patient's images form one MICLe bag; `data.max_bag_size` caps how many
  of them pairs are drawn from).
- Target (`data.nih_target`): 'multilabel' = the 14 findings as (N, 14) float 1 / 0 in
  `NIH_FINDINGS` order (Wang et al., CVPR 2017); 'binary' = 0 'No Finding', 1 any finding. Both
  come from the v2020 labels of the table, not from the folder names (which disagree for one
  image, 00000193_019, labelled Pneumonia but kept in the normal folder).
- Subgroups: `Source.subgroups` = {'view': view_position, 'sex': patient_sex}, which fine-tuning
  and linear evaluation score separately (results.json `test_subgroups`).
- Splits (`data.nih_split`): 'patient' (default) = a seeded patient-disjoint re-split into
  'train' / 'val' / 'test' with `data.nih_split_fractions` of the images (`base.patient_split`,
  seed `data.nih_split_seed`); 'source' = the folder's own split ('train' / 'valid' / 'test'),
  which puts 30 patients in more than one split and is therefore refused by the leakage check.
- `data.nih_train_patients` < 1: the 'train' split keeps that fraction of its patients, drawn per
  patient stratified by the binary target of each patient's first image (`fractions.sample_fraction`
  on the binary labels, so the draw, `data.nih_train_draw`, is the same for both targets and nested
  across fractions). This is how the NIH studies take 10% of the training patients for both tasks:
  `finetune.label_fraction` on the 14-finding target stratifies by the pattern of all 14 labels, where
  nearly every pattern is its own stratum and keeps at least one patient, so it cannot select 10%.
Images are read into memory once (64 px thumbnails: 1,000 images are 4 MB as one grey channel).
"""
import functools
import os

import numpy as np

from input_pipeline.sources.base import Source, check_no_leakage, patient_split, require_path, unknown_split
from medssl_jax.errors import MissingFileError, UserError
from input_pipeline import fractions
from PIL import Image

NIH_METADATA = "metadata.csv"
# The 14 ChestX-ray14 findings in the order of Wang et al. (CVPR 2017) and the label tables.
NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
NO_FINDING = "No Finding"
NIH_TARGETS = ("binary", "multilabel")
NIH_SPLITS = ("patient", "source")
RESPLIT_NAMES = ("train", "val", "test")
SUBGROUP_COLUMNS = {"view": "view_position", "sex": "patient_sex"}
COLUMNS = ("image_file", "patient_id", "finding_labels_v2020", "source_split") + tuple(SUBGROUP_COLUMNS.values())


def read_table(root: str):
  """The folder's metadata.csv as strings, checked: the columns, known findings, files present."""
  import pandas as pd
  path = os.path.join(root, NIH_METADATA)
  if not os.path.isfile(path):
    raise MissingFileError(f"data.path={root} has no {NIH_METADATA}; point data.path at the NIH folder "
                           f"(e.g. ../shared/data/nih_cxr14_kcr1000_64px)")
  table = pd.read_csv(path, dtype=str, keep_default_na=False)
  missing = [c for c in COLUMNS if c not in table.columns]
  if missing:
    raise UserError(f"{path} has no column(s) {missing}; expected the NIH metadata columns {list(COLUMNS)}")
  names = table["finding_labels_v2020"].str.split("|")
  unknown = sorted({f for row in names for f in row} - set(NIH_FINDINGS) - {NO_FINDING})
  if unknown:
    raise UserError(f"{path}: unknown finding(s) {unknown}; known: {list(NIH_FINDINGS)} and {NO_FINDING!r}")
  mixed = [i for i, row in enumerate(names) if NO_FINDING in row and len(row) > 1]
  if mixed:
    raise UserError(f"{path}: row {mixed[0] + 2} lists {NO_FINDING!r} together with a finding")
  return table


def multilabel_targets(table) -> np.ndarray:
  """(N, 14) float32 1 / 0 in NIH_FINDINGS order."""
  names = table["finding_labels_v2020"].str.split("|")
  return np.array([[float(f in row) for f in NIH_FINDINGS] for row in names], np.float32).reshape(-1, len(NIH_FINDINGS))


def binary_targets(table) -> np.ndarray:
  """(N,) int64: 0 'No Finding', 1 any finding."""
  return (table["finding_labels_v2020"].to_numpy() != NO_FINDING).astype(np.int64)


def split_names(data_cfg) -> tuple:
  return RESPLIT_NAMES if data_cfg.nih_split == "patient" else ("train", "valid", "test")


def assign_splits(table, data_cfg) -> np.ndarray:
  """The split name of every row: the seeded patient-disjoint re-split, or the folder's own."""
  if data_cfg.nih_split not in NIH_SPLITS:
    raise UserError(f"data.nih_split={data_cfg.nih_split!r}: expected one of {NIH_SPLITS}")
  if data_cfg.nih_split == "source":
    return table["source_split"].to_numpy().astype(str)
  fractions = tuple(float(f) for f in data_cfg.nih_split_fractions)
  if len(fractions) != len(RESPLIT_NAMES):
    raise UserError(f"data.nih_split_fractions={fractions}: give {len(RESPLIT_NAMES)} shares, for "
                    f"{' / '.join(RESPLIT_NAMES)}")
  which = patient_split(table["patient_id"].to_numpy(), fractions, int(data_cfg.nih_split_seed))
  return np.asarray(RESPLIT_NAMES)[which]


def train_patients(table, data_cfg) -> np.ndarray:
  """Row mask of the 'train' rows kept by data.nih_train_patients (all rows when it is 1)."""
  keep = float(data_cfg.nih_train_patients)
  if not 0.0 < keep <= 1.0:
    raise UserError(f"data.nih_train_patients={keep:g} must be in (0, 1] (the share of training patients kept)")
  mask = np.ones(len(table), bool)
  if keep < 1.0:
    chosen = fractions.sample_fraction(binary_targets(table), table["patient_id"].to_numpy(), keep,
                                       int(data_cfg.nih_train_draw))
    mask[:] = False
    mask[chosen] = True
  return mask


@functools.lru_cache(maxsize=4)
def _cached_images(paths: tuple, stamps: tuple) -> np.ndarray:
  """The images of `paths`, decoded once per process while the files are unchanged (`stamps`:
  their sizes and modification times): studies load the same folder for many runs."""
  del stamps  # part of the cache key only
  images = _read_images(paths)
  images.flags.writeable = False
  return images


def _read_images(paths) -> np.ndarray:
  """uint8 (N, H, W, 1): the greyscale thumbnails (stored as RGB with R = G = B)."""
  out = []
  for p in paths:
    try:
      with Image.open(p) as im:
        out.append(np.asarray(im.convert("L")))
    except Exception as e:  # Pillow raises many types for a bad file
      raise UserError(f"cannot decode NIH image {p} ({type(e).__name__}: {e}); re-copy the folder") from e
  sizes = {x.shape for x in out}
  if len(sizes) > 1:
    raise UserError(f"NIH images have different sizes {sorted(sizes)[:3]}; the in-memory reader needs one size")
  return np.stack(out)[..., None] if out else np.zeros((0, 1, 1, 1), np.uint8)


def load(data_cfg, split):
  root = require_path(data_cfg.path, what="NIH ChestX-ray14 folder (metadata.csv + images/)")
  if data_cfg.nih_target not in NIH_TARGETS:
    raise UserError(f"data.nih_target={data_cfg.nih_target!r}: expected one of {NIH_TARGETS}")
  table = read_table(root)
  splits = assign_splits(table, data_cfg)
  check_no_leakage({str(s): table["patient_id"].to_numpy()[splits == s] for s in np.unique(splits)})
  if split not in split_names(data_cfg):
    raise unknown_split(f"NIH folder {root} (data.nih_split={data_cfg.nih_split!r})", split, split_names(data_cfg))
  rows = splits == split
  if split == "train":
    rows &= train_patients(table, data_cfg)
  t = table[rows].reset_index(drop=True)
  absent = [p for p in (os.path.join(root, f) for f in table["image_file"]) if not os.path.isfile(p)]
  if absent:
    raise MissingFileError(f"{len(absent)} NIH image(s) listed in {root}/{NIH_METADATA} are missing, "
                           f"e.g. {absent[:3]}")
  if data_cfg.nih_target == "multilabel":
    labels, num_classes, names = multilabel_targets(t), len(NIH_FINDINGS), NIH_FINDINGS
  else:
    labels, num_classes, names = binary_targets(t), 2, (NO_FINDING, "Finding")
  subgroups = {k: t[c].to_numpy().astype(str) for k, c in SUBGROUP_COLUMNS.items()}
  return Source(f"nih:{split}", labels, t["patient_id"].to_numpy(), t["image_file"].to_numpy(), num_classes,
                images=_split_images(root, table, rows), class_names=names, subgroups=subgroups)


def _split_images(root, table, rows) -> np.ndarray:
  paths = tuple(os.path.join(root, p) for p in table["image_file"])
  stamps = tuple((os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths)
  return _cached_images(paths, stamps)[rows]
