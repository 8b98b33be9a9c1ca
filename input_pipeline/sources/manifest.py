"""A CSV manifest of image paths, case ids, labels and splits; or the covid_cxr_multi folder itself
(its metadata_subset.csv, grouped by patient, see `covid_cxr_manifest`)."""
import os

import numpy as np

from input_pipeline.sources.base import UNLABELLED, Source, check_no_leakage, require_path, unknown_split
from input_pipeline.sources.images import check_no_duplicates_across_splits, verify_images
from medssl_jax.errors import MissingFileError, UserError

COVID_METADATA = "metadata_subset.csv"
COVID_MERGED_PATIENTS = {"339": "285"}  # PROVENANCE.md: one patient entered twice upstream
COVID_UNLABELLED_FINDINGS = ("todo",)   # upstream placeholder for "not yet labelled"


def covid_cxr_manifest(root: str, test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0,
                       out_csv: str | None = None):
  """Manifest of the covid_cxr_multi folder: one row per image file, split by patient.

  Columns path (relative to `root`; absolute in `out_csv`), case_id (patientid, 339 merged
  into 285), label (finding; '' for the 'todo' placeholder) and split. Rows naming the same
  file are kept once. Patients are assigned to 'test' / 'val' / 'train' by a seeded draw,
  stratified by each patient's most frequent finding.
  """
  import pandas as pd
  meta_csv = os.path.join(require_path(root, what="covid_cxr_multi folder"), COVID_METADATA)
  meta = pd.read_csv(require_path(meta_csv, what="covid_cxr_multi metadata"), dtype=str, keep_default_na=False)
  meta = meta.assign(patientid=meta["patientid"].replace(COVID_MERGED_PATIENTS))
  meta = meta.drop_duplicates(subset="filename", keep="first").reset_index(drop=True)
  label = meta["finding"].where(~meta["finding"].isin(COVID_UNLABELLED_FINDINGS), "")
  # Per patient: the most frequent finding (ties: alphabetical), the stratum of the draw.
  stratum = (pd.DataFrame({"p": meta["patientid"], "y": label}).value_counts().reset_index()
             .sort_values(["p", "count", "y"], ascending=[True, False, True]).drop_duplicates("p")
             .set_index("p")["y"])
  rng = np.random.default_rng(seed)
  split_of = {}
  for _, patients in sorted(stratum.groupby(stratum).groups.items()):
    patients = rng.permutation(sorted(patients))
    n_test, n_val = int(round(test_fraction * len(patients))), int(round(val_fraction * len(patients)))
    for k, p in enumerate(patients):
      split_of[p] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
  table = pd.DataFrame({"path": "images/" + meta["filename"], "case_id": meta["patientid"], "label": label,
                        "split": meta["patientid"].map(split_of)})
  if out_csv:
    table.assign(path=[os.path.join(os.path.abspath(root), p) for p in table["path"]]).to_csv(out_csv, index=False)
  return table


def load(data_cfg, split):
  import pandas as pd
  path = require_path(data_cfg.path, what="manifest CSV (or covid_cxr_multi folder)")
  if os.path.isdir(path):
    if not os.path.isfile(os.path.join(path, COVID_METADATA)):
      raise MissingFileError(f"data.path={path} is a folder without {COVID_METADATA}; point data.path at a "
                              f"manifest CSV (columns path, case_id, label, split)")
    table, root = covid_cxr_manifest(path), path
    path_col, case_col, label_col, split_col = "path", "case_id", "label", "split"
  else:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [c.strip() for c in table.columns]
    root = os.path.abspath(os.path.expanduser(data_cfg.image_dir)) if data_cfg.image_dir else os.path.dirname(path)
    path_col, case_col = data_cfg.path_column, data_cfg.case_column
    label_col, split_col = data_cfg.label_column, data_cfg.split_column
  label_cols = [c.strip() for c in label_col.split(",") if c.strip()]
  missing = [c for c in (path_col, case_col, split_col, *label_cols) if c not in table.columns]
  if missing:
    raise UserError(f"manifest {path} has no column(s) {missing} (set data.path_column / case_column / "
                     f"label_column / split_column); columns: {list(table.columns)}")
  table = table.apply(lambda col: col.str.strip())
  if (table[split_col] == "").any():
    raise UserError(f"manifest {path}: {int((table[split_col] == '').sum())} row(s) have an empty "
                     f"{split_col!r} column, e.g. row {int(np.flatnonzero(table[split_col] == '')[0])}")
  splits = dict(tuple(table.groupby(split_col, sort=True)))
  if split not in splits:
    raise unknown_split(f"manifest {path}", split, splits)
  check_no_leakage({k: v[case_col].to_numpy() for k, v in splits.items()})
  rows = splits[split]
  labels, num_classes, class_names = _manifest_labels(table, rows, label_cols, path)
  paths = np.array([os.path.join(root, os.path.expanduser(p)) for p in rows[path_col]])
  absent = [p for p in paths if not os.path.isfile(p)]
  if absent:
    raise MissingFileError(f"{len(absent)} image file(s) of split {split!r} of manifest {path} are missing, "
                            f"e.g. {absent[:5]} (paths are relative to data.image_dir, or to the CSV's folder "
                            f"when it is empty)")
  if data_cfg.verify_images:
    lines = (None if os.path.isdir(path) else [f"data row {int(i) + 1} of {path}" for i in rows.index])
    verify_images(paths, lines)
    check_no_duplicates_across_splits(
        {k: [os.path.join(root, os.path.expanduser(p)) for p in v[path_col]] for k, v in splits.items()},
        f" of manifest {path}")
  return Source(f"{os.path.basename(os.path.normpath(path))}:{split}", labels, rows[case_col].to_numpy(),
                np.array([os.path.relpath(p, root) for p in paths]), num_classes, paths=paths,
                class_names=class_names)


def _manifest_labels(table, rows, label_cols, path):
  """(labels, num_classes, class_names) of `rows`; classes are defined on the whole table."""
  import pandas as pd
  if len(label_cols) > 1:  # multi-label: numbers per column, '' = missing (NaN).
    out = np.empty((len(rows), len(label_cols)), np.float32)
    for j, c in enumerate(label_cols):
      values = pd.to_numeric(rows[c].replace("", "nan"), errors="coerce")
      bad = values.isna() & (rows[c] != "")
      if bad.any():
        raise UserError(f"manifest {path}: column {c!r} has non-numeric label {rows[c][bad].iloc[0]!r}")
      out[:, j] = values.to_numpy(np.float32)
    return out, len(label_cols), tuple(label_cols)
  col = label_cols[0]
  given = table[col][table[col] != ""]
  numeric = pd.to_numeric(given, errors="coerce")
  if len(given) and numeric.notna().all() and (numeric == numeric.round()).all():  # integer class ids
    lookup = lambda v: int(float(v)) if v != "" else UNLABELLED
    return np.array([lookup(v) for v in rows[col]], np.int64), max(int(numeric.max()) + 1, 1), ()
  class_names = tuple(sorted(set(given)))  # strings: ids by sorted unique names
  ids = {name: i for i, name in enumerate(class_names)}
  # A wholly unlabelled manifest (pretraining only) has one nominal class and no names.
  return np.array([ids.get(v, UNLABELLED) for v in rows[col]], np.int64), max(len(class_names), 1), class_names
