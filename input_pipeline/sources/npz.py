"""MedMNIST-format .npz files ({split}_images, {split}_labels), read in place.

MedMNIST has no patient ids and splits by image: each image is its own case, unless
`data.group_table` names a table that groups the images (e.g. DermaMNIST by lesion, see
`group_by_table`)."""
import dataclasses
import os

import numpy as np

from input_pipeline.sources.base import Source, check_no_leakage, require_path, unknown_split
from medssl_jax.errors import UserError


def load(data_cfg, split):
  path = require_path(data_cfg.path, what="MedMNIST .npz file")
  try:
    npz = np.load(path)
  except Exception as e:  # not a zip, pickled data, a folder, ...: numpy raises many types
    raise UserError(f"{path} is not a readable .npz file ({type(e).__name__}: {e}); data.source='npz' "
                    f"expects a MedMNIST file with <split>_images and <split>_labels arrays") from e
  if not hasattr(npz, "files"):  # a bare .npy array
    raise UserError(f"{path} holds a single array, not a .npz archive of <split>_images / <split>_labels")
  with npz as f:
    available = sorted(k[:-len("_images")] for k in f.files if k.endswith("_images") and
                       k[:-len("_images")] + "_labels" in f.files)
    if split not in available:
      raise unknown_split(path, split, available)
    images, labels = f[f"{split}_images"], f[f"{split}_labels"]
    # The class count of the whole file, so that every split agrees on it.
    all_labels = [f[f"{s}_labels"] for s in available]
  if images.dtype != np.uint8 or images.ndim not in (3, 4):
    raise UserError(f"{path}: {split}_images must be uint8 (N, H, W) or (N, H, W, C), got {images.dtype} "
                     f"{images.shape}")
  if images.ndim == 3:
    images = images[..., None]
  if labels.ndim == 1 or labels.shape[1] == 1:
    labels = labels.reshape(-1).astype(np.int64)
    num_classes = int(max(int(np.max(l)) for l in all_labels if l.size)) + 1
  else:
    labels, num_classes = labels.astype(np.float32), labels.shape[1]
  ids = np.array([f"{split}-{i}" for i in range(len(images))])
  src = Source(f"{os.path.basename(path)}:{split}", labels, ids, ids, num_classes, images=images)
  table = data_cfg.get("group_table", "")
  if not table:
    return src  # MedMNIST splits by image: no patient ids, no leakage check possible.
  case_column = data_cfg.get("group_case_column", "lesion_id")
  grouped = group_by_table(src, table, split, case_column=case_column)
  check_no_leakage(_table_cases(table, case_column))
  return grouped


def _read_table(table_csv):
  import pandas as pd
  return pd.read_csv(require_path(table_csv, "data.group_table", "grouping table"), dtype=str,
                     keep_default_na=False)


def _table_cases(table_csv, case_column, split_column="split"):
  t = _read_table(table_csv)
  return {s: rows[case_column].to_numpy() for s, rows in t.groupby(split_column)}


def group_by_table(source: Source, table_csv: str, split: str, case_column: str = "lesion_id",
                   index_column: str = "index", split_column: str = "split",
                   label_column: str | None = None) -> Source:
  """Re-groups a MedMNIST split into cases with an external table (e.g. DermaMNIST by lesion).

  The table has one row per image: its split, its index in that split of the .npz file, its
  case id and (optionally) its label, which must agree with the .npz label. `label_column`
  None: the first of 'label', 'label_medmnist_order' that the table has (none: no check).
  """
  t = _read_table(table_csv)
  if label_column is None:
    label_column = next((c for c in ("label", "label_medmnist_order") if c in t.columns), "")
  missing = [c for c in (split_column, index_column, case_column) if c not in t.columns]
  if missing:
    raise UserError(f"{table_csv} has no column(s) {missing}; columns: {list(t.columns)}")
  if split not in set(t[split_column]):
    raise unknown_split(table_csv, split, set(t[split_column]))
  t = t[t[split_column] == split]
  idx = t[index_column].astype(np.int64).to_numpy()
  n = len(source)
  out = np.flatnonzero((idx < 0) | (idx >= n))
  if len(out):
    raise UserError(f"{table_csv}: split {split!r} has index {idx[out[0]]} (row {t.index[out[0]]}), out of range "
                     f"for the {n} images of {source.name}; is it the matching file?")
  counts = np.bincount(idx, minlength=n)
  if np.any(counts != 1):
    raise UserError(f"{table_csv}: split {split!r} must list each of the {n} images of {source.name} once; "
                     f"{int(np.sum(counts == 0))} missing (e.g. {np.flatnonzero(counts == 0)[:5].tolist()}), "
                     f"{int(np.sum(counts > 1))} repeated (e.g. {np.flatnonzero(counts > 1)[:5].tolist()})")
  cases = np.empty(n, dtype=object)
  cases[idx] = t[case_column].to_numpy()
  if label_column in t.columns and not source.is_multilabel:
    table_labels = np.empty(n, np.int64)
    table_labels[idx] = t[label_column].astype(np.int64).to_numpy()
    bad = np.flatnonzero(table_labels != source.labels)
    if len(bad):
      i = int(bad[0])
      raise UserError(f"{table_csv}: labels disagree with {source.name} at {len(bad)} image(s), e.g. index {i}: "
                       f"table {table_labels[i]}, npz {source.labels[i]}; is it the matching file?")
  return dataclasses.replace(source, name=f"{source.name} by {case_column}", case_ids=cases.astype(str))
