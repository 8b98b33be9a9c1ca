"""Data sources behind one interface: every image with its label and its case (patient) id.

`load_source(data_cfg, split)` dispatches on `data_cfg.source`:
- 'synthetic': the embedded medical-like data set (input_pipeline/synthetic.py);
- 'npz': MedMNIST-format files ({split}_images, {split}_labels), read in place. MedMNIST has
  no patient ids and splits by image: each image is its own case, unless `data.group_table`
  names a table that groups the images (e.g. DermaMNIST by lesion, see `group_by_table`);
- 'manifest': a CSV of image paths, case ids, labels and splits; or the covid_cxr_multi folder
  itself (its metadata_subset.csv, grouped by patient, see `covid_cxr_manifest`);
- 'tfds': a TFDS data set prepared from a manual download ('chexpert': read from its manual
  folder, keeping paths and patient ids).

Whenever one split of a source with case ids is loaded, all of its splits are checked for a
case (patient) that appears in more than one split, which is an error (patient leakage).
Labels: (N,) int64 class ids, -1 = no label (allowed for pretraining); or (N, L) float32
multi-label with 1 / 0, -1 = uncertain (CheXpert) and NaN = missing.
"""
import dataclasses
import functools
import os

import numpy as np

from medssl_jax.errors import MissingFileError, UserError

os.environ.setdefault("TFDS_DISABLE_GCS", "1")  # before any TFDS import: never reach the network

SOURCES = ("synthetic", "npz", "manifest", "tfds")
UNLABELLED = -1
COVID_METADATA = "metadata_subset.csv"
COVID_MERGED_PATIENTS = {"339": "285"}  # PROVENANCE.md: one patient entered twice upstream
COVID_UNLABELLED_FINDINGS = ("todo",)   # upstream placeholder for "not yet labelled"
CHEXPERT_DIR = "CheXpert-v1.0-small"
CHEXPERT_TASKS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
# Azizi et al. 2021 (Sec. 4.1, App. A.2) re-split CheXpert's training set into 67,429 / 22,240 /
# 33,745 train / validation / test images. Those sum to 123,414, while the "full training set"
# they re-split has 223,414 images (train.csv of v1.0), which 167,429 + 22,240 + 33,745 gives
# exactly: the reading here is that "67,429" lost its leading 1. Fractions of the training set:
CHEXPERT_RESPLIT = {"resplit_train": 167_429 / 223_414, "resplit_val": 22_240 / 223_414,
                    "resplit_test": 33_745 / 223_414}
CHEXPERT_RESPLIT_SEED = 0


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
  """One split of a data set: labels, case ids and images (in memory) or image paths."""
  name: str
  labels: np.ndarray
  case_ids: np.ndarray
  image_ids: np.ndarray
  num_classes: int
  images: np.ndarray | None = None
  paths: np.ndarray | None = None
  class_names: tuple = ()

  def __post_init__(self):
    setattr_ = functools.partial(object.__setattr__, self)
    setattr_("labels", np.asarray(self.labels))
    setattr_("case_ids", np.asarray(self.case_ids).astype(str))
    setattr_("image_ids", np.asarray(self.image_ids).astype(str))
    setattr_("class_names", tuple(self.class_names))
    if (self.images is None) == (self.paths is None):
      raise UserError(f"{self.name}: exactly one of images / paths must be set")
    n = len(self.labels)
    if self.images is not None:
      setattr_("images", np.asarray(self.images))
      if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
        raise UserError(f"{self.name}: images must be uint8 (N, H, W, 1 or 3), got {self.images.dtype} "
                         f"{self.images.shape}")
    else:
      setattr_("paths", np.asarray(self.paths).astype(str))
    data = ("images",) if self.images is not None else ("paths",)
    for field in ("case_ids", "image_ids") + data:
      if len(getattr(self, field)) != n:
        raise UserError(f"{self.name}: {field} has {len(getattr(self, field))} entries for {n} labels")
    ids, counts = np.unique(self.image_ids, return_counts=True)
    if np.any(counts > 1):
      raise UserError(f"{self.name}: image ids are not unique, e.g. {ids[counts > 1][:5].tolist()}")
    if self.num_classes < 1:
      raise UserError(f"{self.name}: num_classes={self.num_classes} must be >= 1")
    if self.labels.ndim == 1:
      if not np.issubdtype(self.labels.dtype, np.integer):
        raise UserError(f"{self.name}: (N,) labels must be integer class ids, got {self.labels.dtype}")
      bad = np.flatnonzero((self.labels >= self.num_classes) | (self.labels < UNLABELLED))
      if len(bad):
        i = int(bad[0])
        raise UserError(f"{self.name}: label {self.labels[i]} of image {i} ({self.image_ids[i]}) is outside "
                         f"the class range [0, {self.num_classes}) ({len(bad)} such image(s); -1 = unlabelled)")
    elif self.labels.ndim == 2:
      if not np.issubdtype(self.labels.dtype, np.floating) or self.labels.shape[1] != self.num_classes:
        raise UserError(f"{self.name}: multi-label labels must be float (N, num_classes={self.num_classes}), "
                         f"got {self.labels.dtype} {self.labels.shape}")
    else:
      raise UserError(f"{self.name}: labels must be (N,) or (N, L), got shape {self.labels.shape}")
    if self.class_names and len(self.class_names) != self.num_classes:
      raise UserError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def is_multilabel(self) -> bool:
    return self.labels.ndim == 2

  def cases(self) -> dict:
    """case id -> ascending image indices, in sorted case-id order."""
    ids, inverse = np.unique(self.case_ids, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(inverse, minlength=len(ids)))[:-1])
    return dict(zip(ids.tolist(), groups))

  @property
  def num_cases(self) -> int:
    return len(np.unique(self.case_ids))


def patient_split(case_ids, fractions, seed: int) -> np.ndarray:
  """Split index (into `fractions`) of every image, drawn per patient: patient-disjoint.

  The patients are put in a random order (seeded) and laid end to end by their image counts;
  a patient goes to the split whose share of the images holds the middle of its images. Each
  split so gets its fraction of the *images*, within about one patient's images at each cut,
  and the result depends only on (the set of case ids and their image counts, fractions, seed),
  not on the order of the rows.
  """
  fractions = np.asarray(fractions, np.float64)
  if fractions.ndim != 1 or not len(fractions) or np.any(fractions < 0) or abs(fractions.sum() - 1) > 1e-6:
    raise UserError(f"split fractions {fractions.tolist()} must be >= 0 and sum to 1")
  uniq, inverse, counts = np.unique(np.asarray(case_ids).astype(str), return_inverse=True, return_counts=True)
  order = np.random.default_rng(seed).permutation(len(uniq))
  end = np.cumsum(counts[order])
  middle = (end - counts[order] / 2) / max(len(inverse), 1)
  split_of = np.empty(len(uniq), np.int64)
  split_of[order] = np.minimum(np.searchsorted(np.cumsum(fractions), middle, side="right"), len(fractions) - 1)
  return split_of[inverse.reshape(-1)]


def check_no_leakage(sources: dict) -> None:
  """Raises ValueError when a case/patient id appears in more than one split.

  Args:
    sources: split name -> Source (or an array of the split's case ids).
  """
  ids = {k: set(np.asarray(getattr(v, "case_ids", v)).astype(str).tolist()) for k, v in sources.items()}
  names, problems = sorted(ids), []
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      shared = sorted(ids[a] & ids[b])
      if shared:
        problems.append(f"{len(shared)} case(s) in both split {a!r} and split {b!r}, e.g. {shared[:5]}")
  if problems:
    raise UserError("patient leakage: " + "; ".join(problems) + ". Splits must be made per case/patient.")


def load_source(data_cfg, split: str) -> Source:
  """The `split` of the data set that `data_cfg` (the config's `data` section) describes."""
  loaders = {"synthetic": _synthetic, "npz": _npz, "manifest": _manifest, "tfds": _tfds}
  if data_cfg.source not in loaders:
    raise UserError(f"data.source={data_cfg.source!r}: expected one of {list(SOURCES)}")
  return loaders[data_cfg.source](data_cfg, split)


def _unknown_split(what, split, available):
  return UserError(f"{what} has splits {sorted(available)}, not {split!r} (set data.train_split / "
                    f"data.eval_split / eval.val_split to one of them)")


def _require_path(path, key="data.path", what="data file"):
  if not path:
    raise MissingFileError(f"no {what} given: set --config.{key}=PATH")
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise MissingFileError(f"{what} {path} does not exist (set --config.{key})")
  return path


# ---- synthetic ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _synthetic_split(num_cases, num_classes, max_images, size, colour, seed, split) -> Source:
  from input_pipeline import synthetic
  src = synthetic.make_synthetic(num_cases, num_classes, max_images, size, colour, seed, split)
  src.images.setflags(write=False)  # cached: shared by every caller
  return src


def _synthetic(data_cfg, split):
  from input_pipeline import synthetic
  if split not in synthetic.SPLITS:
    raise _unknown_split("synthetic data", split, synthetic.SPLITS)
  s = data_cfg.synthetic
  args = (int(s.num_cases), int(s.num_classes), int(s.max_images_per_case), int(s.image_size), bool(s.colour),
          int(s.get("seed", 0)))
  splits = {name: _synthetic_split(*args, name) for name in synthetic.SPLITS}
  check_no_leakage(splits)
  return splits[split]


# ---- MedMNIST .npz ----------------------------------------------------------------------------
def _npz(data_cfg, split):
  path = _require_path(data_cfg.path, what="MedMNIST .npz file")
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
      raise _unknown_split(path, split, available)
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
  return pd.read_csv(_require_path(table_csv, "data.group_table", "grouping table"), dtype=str,
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
    raise _unknown_split(table_csv, split, set(t[split_column]))
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


# ---- folder + CSV manifest --------------------------------------------------------------------
def covid_cxr_manifest(root: str, test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0,
                       out_csv: str | None = None):
  """Manifest of the covid_cxr_multi folder: one row per image file, split by patient.

  Columns path (relative to `root`; absolute in `out_csv`), case_id (patientid, 339 merged
  into 285), label (finding; '' for the 'todo' placeholder) and split. Rows naming the same
  file are kept once. Patients are assigned to 'test' / 'val' / 'train' by a seeded draw,
  stratified by each patient's most frequent finding.
  """
  import pandas as pd
  meta_csv = os.path.join(_require_path(root, what="covid_cxr_multi folder"), COVID_METADATA)
  meta = pd.read_csv(_require_path(meta_csv, what="covid_cxr_multi metadata"), dtype=str, keep_default_na=False)
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


def _manifest(data_cfg, split):
  import pandas as pd
  path = _require_path(data_cfg.path, what="manifest CSV (or covid_cxr_multi folder)")
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
    raise _unknown_split(f"manifest {path}", split, splits)
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


def _decode_problem(path: str):
  """None when Pillow decodes the whole image, else what went wrong. (`Image.verify()` alone
  reads only the headers: a JPEG cut short by an interrupted copy passes it.)"""
  from PIL import Image
  try:
    with Image.open(path) as im:
      im.load()
  except Exception as e:  # PIL raises many types for a bad file.
    return f"{type(e).__name__}: {e}"
  return None


def verify_images(paths, rows=None, chunk: int = 64) -> None:
  """Decodes every image fully with Pillow, on a thread pool (Pillow decodes without the GIL);
  UserError naming the files that cannot be decoded, with `rows[i]` (e.g. their manifest line)."""
  import concurrent.futures
  paths = [str(p) for p in paths]
  chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(16, os.cpu_count() or 1))) as pool:
    problems = [m for part in pool.map(lambda ps: [_decode_problem(p) for p in ps], chunks) for m in part]
  bad = [i for i, m in enumerate(problems) if m]
  if bad:
    shown = [f"unreadable image {paths[i]}" + (f" ({rows[i]})" if rows is not None else "") + f": {problems[i]}"
             for i in bad[:5]]
    raise UserError(f"{len(bad)} of {len(paths)} image file(s) cannot be decoded: " + "; ".join(shown)
                    + ". Replace or re-copy them, or leave them out of the data")


# ---- TFDS -------------------------------------------------------------------------------------
def _import_tfds():
  import tensorflow_datasets as tfds
  gcs = getattr(getattr(tfds.core.utils, "gcs_utils", None), "_is_gcs_disabled", None)
  if gcs is not None:
    tfds.core.utils.gcs_utils._is_gcs_disabled = True
  return tfds


def _manual_dirs(data_cfg):
  data_dir = os.path.expanduser(data_cfg.path or "~/tensorflow_datasets")
  return [os.path.join(data_dir, "downloads", "manual"), data_dir]


def _tfds(data_cfg, split):
  if not data_cfg.tfds_name:
    raise UserError("data.source='tfds' needs data.tfds_name (e.g. 'chexpert')")
  if data_cfg.tfds_name.split(":")[0] == "chexpert":
    return _chexpert(data_cfg, split)
  return _tfds_in_memory(data_cfg, split)


def _chexpert(data_cfg, split):
  """CheXpert from its manual download (the folder TFDS's own chexpert builder reads).

  Read directly rather than through the builder, which would copy 224k images into
  TFRecords and drop the file paths and patient ids this library splits and groups by.
  Splits 'train' and 'validation' (alias 'valid', 'val'), the official ones; and 'resplit_train',
  'resplit_val', 'resplit_test': Azizi et al.'s re-split of the official training set by patient
  (fractions CHEXPERT_RESPLIT, seed `data.resplit_seed` if the config has it, else
  CHEXPERT_RESPLIT_SEED; see `patient_split`), for fine-tuning with a validation split while the
  234-image official validation set stays out. Labels (N, L) float32 with 1, 0, -1 = uncertain
  and NaN = not mentioned, for the columns in data.label_column when it names CheXpert columns,
  else the 5 competition tasks.
  """
  import pandas as pd
  roots = _manual_dirs(data_cfg)
  found = [r for r in roots if os.path.isfile(os.path.join(r, CHEXPERT_DIR, "train.csv"))]
  if not found:
    raise MissingFileError(
        f"CheXpert is not there: no {CHEXPERT_DIR}/train.csv in {' or '.join(roots)}. Download "
        f"CheXpert-v1.0-small (stanfordmlgroup.github.io/competitions/chexpert, after agreeing to its terms) "
        f"into <data_dir>/downloads/manual/ and set --config.data.path=<data_dir>")
  root = found[0]
  files = {"train": "train.csv", "validation": "valid.csv"}
  aliases = {"valid": "validation", "val": "validation"}
  name = aliases.get(split, split)
  if name not in files and name not in CHEXPERT_RESPLIT:
    raise _unknown_split(f"chexpert (and its re-split {' / '.join(CHEXPERT_RESPLIT)})", split, files)
  tables = {s: pd.read_csv(os.path.join(root, CHEXPERT_DIR, f), dtype=str, keep_default_na=False)
            for s, f in files.items()}
  patient = lambda t: t["Path"].str.extract(r"(patient\d+)", expand=False).to_numpy()
  check_no_leakage({s: patient(t) for s, t in tables.items()})
  if name in CHEXPERT_RESPLIT:
    train = tables["train"]
    which = patient_split(patient(train), list(CHEXPERT_RESPLIT.values()),
                          int(data_cfg.get("resplit_seed", CHEXPERT_RESPLIT_SEED)))
    parts = {s: train[which == k] for k, s in enumerate(CHEXPERT_RESPLIT)}
    check_no_leakage({"validation": patient(tables["validation"])} | {s: patient(t) for s, t in parts.items()})
    tables[name] = parts[name].reset_index(drop=True)
    files[name] = f"train.csv ({name})"
  t = tables[name]
  wanted = [c.strip() for c in data_cfg.label_column.split(",")]
  cols = wanted if all(c in t.columns for c in wanted) else list(CHEXPERT_TASKS)
  labels = t[cols].replace("", "nan").astype(np.float32).to_numpy()
  paths = np.array([os.path.join(root, p) for p in t["Path"]])
  absent = [p for p in paths if not os.path.isfile(p)]
  if absent:
    raise MissingFileError(f"{len(absent)} CheXpert image(s) listed in {files[name]} are missing, e.g. {absent[:5]}")
  if data_cfg.verify_images:
    verify_images(paths)
  return Source(f"chexpert:{name}", labels, patient(t), t["Path"].to_numpy(), len(cols), paths=paths,
                class_names=tuple(cols))


def _tfds_in_memory(data_cfg, split, max_bytes=4 << 30):
  """Any other TFDS data set with fixed-size 'image' and 'label' features, read into memory."""
  tfds = _import_tfds()
  manual = _manual_dirs(data_cfg)[0]
  try:
    builder = tfds.builder(data_cfg.tfds_name, data_dir=data_cfg.path or None)
    if not builder.is_prepared():
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  except Exception as e:
    raise MissingFileError(f"TFDS data set {data_cfg.tfds_name!r} could not be prepared from {manual} (set "
                            f"--config.data.path to the TFDS data_dir holding it or downloads/manual): {e}") from e
  splits = builder.info.splits
  if split not in splits:
    raise _unknown_split(f"TFDS {data_cfg.tfds_name}", split, list(splits.keys()))
  shape = builder.info.features["image"].shape
  if None in shape:
    raise UserError(f"TFDS {data_cfg.tfds_name}: images of varying size {shape} cannot be held in memory; "
                     f"export them to a folder + manifest CSV")
  if splits[split].num_examples * int(np.prod(shape)) > max_bytes:
    raise UserError(f"TFDS {data_cfg.tfds_name}:{split} is too large to hold in memory; use a manifest")
  images, labels = [], []
  for ex in tfds.as_numpy(builder.as_dataset(split=split)):
    images.append(ex["image"] if ex["image"].ndim == 3 else ex["image"][..., None])
    labels.append(ex["label"])
  labels = np.asarray(labels)
  multi = labels.ndim == 2
  ids = np.array([f"{split}-{i}" for i in range(len(labels))])  # no patient ids: one case per image
  num_classes = labels.shape[1] if multi else builder.info.features["label"].num_classes
  return Source(f"{data_cfg.tfds_name}:{split}", labels.astype(np.float32 if multi else np.int64), ids, ids,
                num_classes, images=np.stack(images).astype(np.uint8))
