"""Data sources behind one interface: every image with its label and its case (patient) id.

`load_source(data_cfg, split)` dispatches on `data_cfg.source`, one reader module each:
- 'synthetic' (`synthetic.py`): the embedded medical-like data set;
- 'npz' (`npz.py`): MedMNIST-format files ({split}_images, {split}_labels), read in place,
  optionally grouped into cases by a table (`group_by_table`);
- 'manifest' (`manifest.py`): a CSV of image paths, case ids, labels and splits; or the
  covid_cxr_multi folder itself (`covid_cxr_manifest`);
- 'tfds' (`tfds.py`): a TFDS data set prepared from a manual download ('chexpert': read from its
  manual folder, keeping paths and patient ids);
- 'records' (`records.py`): any of these written as ArrayRecord shards by `medssl-jax prepare-data`;
- 'nih' (`nih.py`): an NIH ChestX-ray14 folder (metadata.csv + images/), binary or 14-finding
  multi-label target, view and sex subgroups, seeded patient-disjoint re-split;
- 'folder' (`folder.py`): a folder of JPEG / PNG / DICOM files (`dicom.py`), unlabelled, case ids
  by `data.case_rule`, a seeded case-disjoint split.
`base.py` holds `Source` and the checks every reader shares; `images.py` the image-file checks.

Whenever one split of a source with case ids is loaded, all of its splits are checked for a
case (patient) that appears in more than one split, which is an error (patient leakage).
Labels: (N,) int64 class ids, -1 = no label (allowed for pretraining); or (N, L) float32
multi-label with 1 / 0, -1 = uncertain (CheXpert) and NaN = missing.
"""
from input_pipeline.sources import folder, manifest, nih, npz, records, synthetic, tfds
from input_pipeline.sources.base import UNLABELLED, Source, check_no_leakage, patient_split
from input_pipeline.sources.images import verify_images
from input_pipeline.sources.manifest import COVID_METADATA, covid_cxr_manifest
from input_pipeline.sources.npz import group_by_table
from input_pipeline.sources.tfds import CHEXPERT_DIR, CHEXPERT_RESPLIT, CHEXPERT_RESPLIT_SEED, CHEXPERT_TASKS
from medssl_jax.errors import UserError

__all__ = ["CHEXPERT_DIR", "CHEXPERT_RESPLIT", "CHEXPERT_RESPLIT_SEED", "CHEXPERT_TASKS", "COVID_METADATA",
           "READERS", "SOURCES", "UNLABELLED", "Source", "check_no_leakage", "covid_cxr_manifest",
           "group_by_table", "load_source", "patient_split", "verify_images"]

READERS = {"synthetic": synthetic.load, "npz": npz.load, "manifest": manifest.load, "tfds": tfds.load,
           "records": records.load, "nih": nih.load, "folder": folder.load}
SOURCES = tuple(READERS)


def load_source(data_cfg, split: str) -> Source:
  """The `split` of the data set that `data_cfg` (the config's `data` section) describes."""
  if data_cfg.source == "seg_manifest":  # image + mask pairs: sources/seg_manifest.py, read by segmentation
    raise UserError("data.source='seg_manifest' holds image + mask pairs for mode='finetune' with "
                    "finetune.task='segmentation' only; use another data.source for this run")
  if data_cfg.source not in READERS:
    raise UserError(f"data.source={data_cfg.source!r}: expected one of {list(SOURCES)}")
  return READERS[data_cfg.source](data_cfg, split)
