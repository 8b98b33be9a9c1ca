"""Data sources behind one interface: every image with its label and its case (patient) id.

- 'synthetic': the embedded medical-like data set (input_pipeline/synthetic.py);
- 'npz': MedMNIST-format files ({split}_images, {split}_labels), read in place;
- 'manifest': a folder of images with a CSV (path, case id, label(s), split), or the
  covid_cxr_multi folder itself (its metadata CSV, grouped by patientid);
- 'tfds': a TFDS builder (e.g. 'chexpert') prepared from a manual download.

Splits are made per case/patient, and loading a split of a source that shares a case with
another split is an error (patient leakage).
"""
import dataclasses
import functools
import os

import numpy as np

from input_pipeline import synthetic

os.environ.setdefault("TFDS_DISABLE_GCS", "1")
SOURCES = ("synthetic", "npz", "manifest", "tfds")


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
  name: str
  labels: np.ndarray
  case_ids: np.ndarray
  image_ids: np.ndarray
  num_classes: int
  images: np.ndarray | None = None
  paths: np.ndarray | None = None
  class_names: tuple = ()

  def __post_init__(self):
    n = len(self.labels)
    if (self.images is None) == (self.paths is None):
      raise ValueError(f"{self.name}: exactly one of images / paths must be set")
    for field in ("case_ids", "image_ids") + (("images",) if self.images is not None else ("paths",)):
      if len(getattr(self, field)) != n:
        raise ValueError(f"{self.name}: {field} has {len(getattr(self, field))} entries for {n} labels")
    if len(set(self.image_ids.tolist())) != n:
      raise ValueError(f"{self.name}: image ids are not unique")
    if self.labels.ndim == 1:
      bad = np.flatnonzero((self.labels >= self.num_classes) | (self.labels < -1))
      if len(bad):
        raise ValueError(f"{self.name}: label {self.labels[bad[0]]} of image {bad[0]} ({self.image_ids[bad[0]]}) "
                         f"is outside the class range [0, {self.num_classes})")

  def __len__(self):
    return len(self.labels)

  @property
  def is_multilabel(self) -> bool:
    return self.labels.ndim == 2

  def cases(self) -> dict:
    """case id -> sorted image indices."""
    out = {}
    for i, c in enumerate(self.case_ids.tolist()):
      out.setdefault(c, []).append(i)
    return {c: np.asarray(v) for c, v in out.items()}

  @property
  def num_cases(self) -> int:
    return len(set(self.case_ids.tolist()))


def check_no_leakage(splits: dict) -> None:
  """Raises when a case/patient id appears in more than one split."""
  names = sorted(splits)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      shared = set(splits[a].case_ids.tolist()) & set(splits[b].case_ids.tolist())
      if shared:
        raise ValueError(f"patient leakage: {len(shared)} case(s) appear in both split {a!r} and split {b!r}, "
                         f"e.g. {sorted(shared)[:5]}; splits must be made per patient/case")


def load_source(data_cfg, split: str) -> Source:
  if data_cfg.source not in SOURCES:
    raise ValueError(f"data.source={data_cfg.source!r}: expected one of {SOURCES}")
  return {"synthetic": _synthetic, "npz": _npz, "manifest": _manifest, "tfds": _tfds}[data_cfg.source](data_cfg, split)


# ---- synthetic ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _synthetic_split(num_cases, num_classes, max_images, size, colour, seed, split):
  images, labels, case_ids, image_ids = synthetic.make_synthetic(num_cases, num_classes, max_images, size,
                                                                 colour, seed, split)
  return Source(f"synthetic:{split}", labels, case_ids, image_ids, num_classes, images=images)


def _synthetic(data_cfg, split):
  s = data_cfg.synthetic
  args = (s.num_cases, s.num_classes, s.max_images_per_case, s.image_size, s.colour, 0)
  splits = {name: _synthetic_split(*args, name) for name in synthetic.SPLIT_OFFSETS}
  if split not in splits:
    raise ValueError(f"synthetic data has splits {sorted(splits)}, not {split!r}")
  check_no_leakage(splits)
  return splits[split]


# ---- MedMNIST .npz ----------------------------------------------------------------------------
def _require_file(path, key):
  if not path:
    raise FileNotFoundError(f"no data file given: set --config.{key}=PATH")
  if not os.path.exists(path):
    raise FileNotFoundError(f"data file {path} does not exist (set --config.{key})")


def _npz(data_cfg, split):
  _require_file(data_cfg.path, "data.path")
  with np.load(data_cfg.path) as f:
    available = sorted(k[:-len("_images")] for k in f.files if k.endswith("_images"))
    if split not in available:
      raise ValueError(f"{data_cfg.path} has splits {available}, not {split!r}")
    images, labels = f[f"{split}_images"], f[f"{split}_labels"]
  if images.ndim == 3:
    images = images[..., None]
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0].astype(np.int64)
    num_classes = int(labels.max()) + 1
  elif labels.ndim == 2:
    labels, num_classes = labels.astype(np.float32), labels.shape[1]
  else:
    labels = labels.astype(np.int64)
    num_classes = int(labels.max()) + 1
  ids = np.array([f"{split}-{i}" for i in range(len(images))])
  # MedMNIST drops patient ids and splits by image: each image is its own case.
  return Source(f"{os.path.basename(data_cfg.path)}:{split}", labels, ids, ids, num_classes,
                images=images.astype(np.uint8))


def group_by_table(source: Source, table_csv: str, split: str, case_column: str = "lesion_id",
                   index_column: str = "index", split_column: str = "split", label_column: str = "label") -> Source:
  """Re-groups a MedMNIST split into cases with an external table (e.g. DermaMNIST by lesion)."""
  import pandas as pd
  _require_file(table_csv, "data.group_table")
  t = pd.read_csv(table_csv)
  t = t[t[split_column] == split]
  idx = t[index_column].to_numpy()
  if len(t) != len(source) or idx.min() < 0 or idx.max() >= len(source):
    raise ValueError(f"{table_csv}: split {split!r} has {len(t)} rows for {len(source)} images")
  order = np.argsort(idx)
  if label_column in t and not np.array_equal(t[label_column].to_numpy()[order], source.labels):
    raise ValueError(f"{table_csv}: labels disagree with {source.name}; is it the matching file?")
  cases = t[case_column].astype(str).to_numpy()[order]
  return dataclasses.replace(source, case_ids=cases)


# ---- folder + CSV manifest --------------------------------------------------------------------
def covid_cxr_manifest(root: str, test_fraction: float = 0.2, seed: int = 0):
  """Manifest of covid_cxr_multi: one row per image file, patients 285 and 339 merged."""
  import pandas as pd
  meta = pd.read_csv(os.path.join(root, "metadata_subset.csv"), dtype=str)
  meta = meta.drop_duplicates(subset="filename", keep="first")
  patient = meta["patientid"].replace({"339": "285"})   # PROVENANCE.md: one patient entered twice
  patients = np.array(sorted(set(patient)))
  rng = np.random.default_rng(seed)
  test = set(rng.choice(patients, size=int(round(test_fraction * len(patients))), replace=False).tolist())
  return pd.DataFrame({"path": "images/" + meta["filename"], "case_id": patient.to_numpy(),
                       "label": meta["finding"].fillna("").to_numpy(),
                       "split": ["test" if p in test else "train" for p in patient]})


def _manifest(data_cfg, split):
  import pandas as pd
  _require_file(data_cfg.path, "data.path")
  if os.path.isdir(data_cfg.path):
    if not os.path.isfile(os.path.join(data_cfg.path, "metadata_subset.csv")):
      raise FileNotFoundError(f"{data_cfg.path} is a folder without metadata_subset.csv; point data.path at a CSV")
    table, root = covid_cxr_manifest(data_cfg.path), data_cfg.path
    cols = ("path", "case_id", "label", "split")
  else:
    table = pd.read_csv(data_cfg.path, dtype=str, keep_default_na=False)
    root = data_cfg.image_dir or os.path.dirname(os.path.abspath(data_cfg.path))
    cols = (data_cfg.path_column, data_cfg.case_column, data_cfg.label_column, data_cfg.split_column)
  path_col, case_col, label_col, split_col = cols
  label_cols = [c.strip() for c in label_col.split(",")]
  missing = [c for c in (path_col, case_col, split_col, *label_cols) if c not in table.columns]
  if missing:
    raise ValueError(f"manifest {data_cfg.path} has no column(s) {missing}; columns: {list(table.columns)}")
  splits = {}
  for name, rows in table.groupby(split_col, sort=True):
    splits[name] = rows
  if split not in splits:
    raise ValueError(f"manifest {data_cfg.path} has splits {sorted(splits)}, not {split!r}")
  # Leakage across all splits of the manifest, whichever one is loaded.
  check_no_leakage({k: _CaseOnly(v[case_col].astype(str).to_numpy()) for k, v in splits.items()})
  rows = splits[split]
  if len(label_cols) > 1:
    labels = rows[label_cols].replace("", "nan").astype(np.float32).to_numpy()
    num_classes, class_names = len(label_cols), tuple(label_cols)
  else:
    values = table[label_cols[0]].astype(str)
    if values[values != ""].str.fullmatch(r"-?\d+").all():
      labels = np.array([int(v) if v != "" else -1 for v in rows[label_cols[0]]], np.int64)
      num_classes, class_names = int(max(values[values != ""].astype(int).max(), 0)) + 1, ()
    else:
      class_names = tuple(sorted(set(values) - {""}))
      lookup = {n: i for i, n in enumerate(class_names)}
      labels = np.array([lookup.get(v, -1) for v in rows[label_cols[0]]], np.int64)
      num_classes = len(class_names)
  paths = np.array([p if os.path.isabs(p) else os.path.join(root, p) for p in rows[path_col]])
  absent = [p for p in paths if not os.path.isfile(p)]
  if absent:
    raise FileNotFoundError(f"{len(absent)} image file(s) of manifest {data_cfg.path} are missing, e.g. {absent[:3]}")
  if data_cfg.verify_images:
    _verify_images(paths)
  return Source(f"{os.path.basename(os.path.normpath(data_cfg.path))}:{split}", labels,
                rows[case_col].astype(str).to_numpy(), np.array([os.path.relpath(p, root) for p in paths]),
                num_classes, paths=paths, class_names=class_names)


@dataclasses.dataclass
class _CaseOnly:
  case_ids: np.ndarray


def _verify_images(paths) -> None:
  from PIL import Image
  for p in paths:
    try:
      with Image.open(p) as im:
        im.verify()
    except Exception as e:  # PIL raises many types for a bad file
      raise ValueError(f"unreadable image {p}: {e}") from None


# ---- TFDS -------------------------------------------------------------------------------------
def _tfds(data_cfg, split):
  import tensorflow_datasets as tfds
  if not data_cfg.tfds_name:
    raise ValueError("data.source='tfds' needs data.tfds_name (e.g. 'chexpert')")
  manual = os.path.join(data_cfg.path or "~/tensorflow_datasets", "downloads", "manual")
  try:
    builder = tfds.builder(data_cfg.tfds_name, data_dir=data_cfg.path or None)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual)))
  except Exception as e:
    raise FileNotFoundError(f"TFDS dataset {data_cfg.tfds_name!r} could not be prepared from the manual download "
                            f"in {manual} (set --config.data.path to the TFDS data_dir holding downloads/manual): {e}") from e
  ds = tfds.as_numpy(builder.as_dataset(split=split))
  images, labels, ids = [], [], []
  for k, ex in enumerate(ds):
    images.append(ex["image"] if ex["image"].ndim == 3 else ex["image"][..., None])
    labels.append(ex["label"])
    ids.append(str(ex.get("name", k)))
  labels = np.asarray(labels)
  return Source(f"{data_cfg.tfds_name}:{split}", labels.astype(np.float32 if labels.ndim == 2 else np.int64),
                np.array(ids), np.array(ids), int(labels.shape[1] if labels.ndim == 2 else labels.max() + 1),
                images=np.stack(images).astype(np.uint8))
