"""Image + mask pairs for segmentation (`data.source='seg_manifest'`): a CSV manifest with one row
per pair: image path (data.path_column), mask path (seg.mask_column), case id (data.case_column)
and split (data.split_column).

- Paths are relative to data.image_dir / seg.mask_dir (each '' = the CSV's folder), or absolute.
- seg.keep_rows = 'column=value' keeps only the rows with that value (covid_cxr_lungseg:
  'canonical_mask=True', one mask per image).
- data.split_column = '' (a CSV without splits): 'test' is a seeded case-disjoint draw of
  seg.test_fraction of the images (`base.patient_split`, seed seg.split_seed), then 'val' a
  draw of seg.val_fraction of the remaining images (seed seg.split_seed + 1); 'train' is the
  rest. E.g. 0.2 / 0.1: the paper's random 80 / 20 train / test split and its early-stopping
  hold-out of 10% of train (Hosseinzadeh Taher et al. 2021, App. A and B), drawn per patient.
- Every split is checked for a case in more than one split (patient leakage): an error.
- Masks are read as grey (Pillow 'L'; colour masks by the luma) and binarised as value >=
  seg.mask_threshold (default 128, the threshold covid_cxr_lungseg's PROVENANCE.md gives for its
  255 / 0 masks with a few antialiased edge values); see `input_pipeline/seg_pipeline.py`.
"""
import dataclasses
import os

import numpy as np

from input_pipeline.sources.base import check_no_leakage, patient_split, require_path, unknown_split
from input_pipeline.sources.images import verify_images
from medssl_jax.errors import MissingFileError, UserError

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class SegSource:
  """One split of image + mask pairs: file paths, case ids, image ids (paths relative to the root)."""
  name: str
  paths: np.ndarray
  mask_paths: np.ndarray
  case_ids: np.ndarray
  image_ids: np.ndarray

  def __post_init__(self):
    for field in ("paths", "mask_paths", "case_ids", "image_ids"):
      object.__setattr__(self, field, np.asarray(getattr(self, field)).astype(str))
    n = len(self.paths)
    for field in ("mask_paths", "case_ids", "image_ids"):
      if len(getattr(self, field)) != n:
        raise UserError(f"{self.name}: {field} has {len(getattr(self, field))} entries for {n} images")
    ids, counts = np.unique(self.image_ids, return_counts=True)
    if np.any(counts > 1):
      raise UserError(f"{self.name}: an image appears in more than one row, e.g. {ids[counts > 1][:5].tolist()}")

  def __len__(self) -> int:
    return len(self.paths)


def drawn_splits(case_ids, test_fraction: float, val_fraction: float, seed: int) -> np.ndarray:
  """'train' / 'val' / 'test' per image, drawn per case (see the module docstring)."""
  for name, f in (("seg.test_fraction", test_fraction), ("seg.val_fraction", val_fraction)):
    if not 0.0 <= f < 1.0:
      raise UserError(f"{name}={f} must be in [0, 1)")
  case_ids = np.asarray(case_ids).astype(str)
  out = np.where(patient_split(case_ids, [1.0 - test_fraction, test_fraction], seed) == 1, "test", "train")
  rest = np.flatnonzero(out == "train")
  if len(rest) and val_fraction > 0:
    val = patient_split(case_ids[rest], [1.0 - val_fraction, val_fraction], seed + 1) == 1
    out[rest[val]] = "val"
  return out.astype(object)


def _root(folder: str, csv_path: str) -> str:
  return os.path.abspath(os.path.expanduser(folder)) if folder else os.path.dirname(os.path.abspath(csv_path))


def load(data_cfg, seg_cfg, split: str) -> SegSource:
  """The `split` of the manifest that `data_cfg` (data.*) and `seg_cfg` (seg.*) describe."""
  import pandas as pd
  path = require_path(data_cfg.path, what="segmentation manifest CSV")
  if os.path.isdir(path):
    raise UserError(f"data.path={path} is a folder; data.source='seg_manifest' reads a CSV of image and mask "
                    f"paths (e.g. covid_cxr_lungseg/pairs.csv)")
  table = pd.read_csv(path, dtype=str, keep_default_na=False)
  table.columns = [c.strip() for c in table.columns]
  table = table.apply(lambda col: col.str.strip())
  img_col, mask_col, case_col, split_col = (data_cfg.path_column, seg_cfg.mask_column, data_cfg.case_column,
                                            data_cfg.split_column)
  needed = [c for c in (img_col, mask_col, case_col, split_col) if c]
  keep = str(seg_cfg.keep_rows).strip()
  if keep:
    if "=" not in keep:
      raise UserError(f"seg.keep_rows={keep!r}: expected 'column=value' (or '' for all rows)")
    keep_col, keep_value = (s.strip() for s in keep.split("=", 1))
    needed.append(keep_col)
  missing = [c for c in needed if c not in table.columns]
  if missing:
    raise UserError(f"manifest {path} has no column(s) {missing} (set data.path_column / seg.mask_column / "
                    f"data.case_column / data.split_column / seg.keep_rows); columns: {list(table.columns)}")
  if keep:
    table = table[table[keep_col] == keep_value]
    if not len(table):
      raise UserError(f"manifest {path}: no row has {keep_col}={keep_value!r} (seg.keep_rows)")
  if (table[case_col] == "").any():
    raise UserError(f"manifest {path}: {int((table[case_col] == '').sum())} row(s) have an empty {case_col!r} "
                    f"(case id) column; every pair needs its patient / case")
  if split_col:
    splits = table[split_col].to_numpy()
    if (splits == "").any():
      raise UserError(f"manifest {path}: {int((splits == '').sum())} row(s) have an empty {split_col!r} column "
                      f"(or set data.split_column='' to draw case-disjoint splits)")
  else:
    splits = drawn_splits(table[case_col].to_numpy(), float(seg_cfg.test_fraction), float(seg_cfg.val_fraction),
                          int(seg_cfg.split_seed))
  check_no_leakage({s: table[case_col].to_numpy()[splits == s] for s in np.unique(splits)})
  if split not in set(splits.tolist()):
    raise unknown_split(f"manifest {path}", split, set(splits.tolist()))
  rows = table[splits == split]
  img_root, mask_root = _root(data_cfg.image_dir, path), _root(seg_cfg.mask_dir, path)
  paths = np.array([os.path.join(img_root, os.path.expanduser(p)) for p in rows[img_col]])
  masks = np.array([os.path.join(mask_root, os.path.expanduser(p)) for p in rows[mask_col]])
  absent = [p for p in (*paths, *masks) if not os.path.isfile(p)]
  if absent:
    raise MissingFileError(f"{len(absent)} image / mask file(s) of split {split!r} of manifest {path} are missing, "
                           f"e.g. {absent[:3]} (paths are relative to data.image_dir / seg.mask_dir, or to the "
                           f"CSV's folder when they are empty)")
  if data_cfg.verify_images:
    lines = [f"data row {int(i) + 1} of {path}" for i in rows.index]
    verify_images(list(paths) + list(masks), lines + lines)
  return SegSource(f"{os.path.basename(path)}:{split}", paths, masks, rows[case_col].to_numpy(),
                   np.array([os.path.relpath(p, img_root) for p in paths]))
