"""TFDS data sets prepared from a manual download; 'chexpert' is read from its manual folder
directly, keeping paths and patient ids."""
import os

import numpy as np

from input_pipeline.sources.base import Source, check_no_leakage, patient_split, unknown_split
from input_pipeline.sources.images import verify_images
from medssl_jax.errors import MissingFileError, UserError

os.environ.setdefault("TFDS_DISABLE_GCS", "1")  # before any TFDS import: never reach the network

CHEXPERT_DIR = "CheXpert-v1.0-small"
CHEXPERT_DIRS = (CHEXPERT_DIR, "CheXpert-v1.0")  # data.chexpert_folder: downsampled or full resolution
CHEXPERT_TASKS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
# Azizi et al. 2021 (Sec. 4.1, App. A.2) re-split CheXpert's training set into 67,429 / 22,240 /
# 33,745 train / validation / test images. Those sum to 123,414, while the "full training set"
# they re-split has 223,414 images (train.csv of v1.0), which 167,429 + 22,240 + 33,745 gives
# exactly: the reading here is that "67,429" lost its leading 1. Fractions of the training set:
CHEXPERT_RESPLIT = {"resplit_train": 167_429 / 223_414, "resplit_val": 22_240 / 223_414,
                    "resplit_test": 33_745 / 223_414}
CHEXPERT_RESPLIT_SEED = 0


def _import_tfds():
  import tensorflow_datasets as tfds
  gcs = getattr(getattr(tfds.core.utils, "gcs_utils", None), "_is_gcs_disabled", None)
  if gcs is not None:
    tfds.core.utils.gcs_utils._is_gcs_disabled = True
  return tfds


def _manual_dirs(data_cfg):
  data_dir = os.path.expanduser(data_cfg.path or "~/tensorflow_datasets")
  return [os.path.join(data_dir, "downloads", "manual"), data_dir]


def load(data_cfg, split):
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
  folder = str(data_cfg.get("chexpert_folder", CHEXPERT_DIR))
  if folder not in CHEXPERT_DIRS:
    raise UserError(f"data.chexpert_folder={folder!r}: expected one of {CHEXPERT_DIRS} (the downsampled or the "
                    f"full-resolution download)")
  roots = _manual_dirs(data_cfg)
  found = [r for r in roots if os.path.isfile(os.path.join(r, folder, "train.csv"))]
  if not found:
    raise MissingFileError(
        f"CheXpert is not there: no {folder}/train.csv in {' or '.join(roots)}. Download "
        f"{folder} (stanfordmlgroup.github.io/competitions/chexpert, after agreeing to its terms) "
        f"into <data_dir>/downloads/manual/ and set --config.data.path=<data_dir>")
  root = found[0]
  files = {"train": "train.csv", "validation": "valid.csv"}
  aliases = {"valid": "validation", "val": "validation"}
  name = aliases.get(split, split)
  if name not in files and name not in CHEXPERT_RESPLIT:
    raise unknown_split(f"chexpert (and its re-split {' / '.join(CHEXPERT_RESPLIT)})", split, files)
  tables = {s: pd.read_csv(os.path.join(root, folder, f), dtype=str, keep_default_na=False)
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
    raise unknown_split(f"TFDS {data_cfg.tfds_name}", split, list(splits.keys()))
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
