"""What every source gives: `Source` (one split's images or paths, labels and case ids), the
patient-disjoint split draw, the patient-leakage check and the path/split errors the readers share."""
import dataclasses
import functools
import os

import numpy as np

from medssl_jax.errors import MissingFileError, UserError

UNLABELLED = -1


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
  """One split of a data set: labels, case ids and images (in memory), image paths, or records
  (random access to encoded images: `records.RecordImages`)."""
  name: str
  labels: np.ndarray
  case_ids: np.ndarray
  image_ids: np.ndarray
  num_classes: int
  images: np.ndarray | None = None
  paths: np.ndarray | None = None
  class_names: tuple = ()
  records: object = None
  # Subgroup columns for evaluation: name -> one value per image (e.g. {'view': PA/AP, 'sex': F/M});
  # fine-tuning and linear evaluation report their metrics per value (results.json `test_subgroups`).
  subgroups: dict | None = None

  def __post_init__(self):
    setattr_ = functools.partial(object.__setattr__, self)
    setattr_("labels", np.asarray(self.labels))
    setattr_("case_ids", np.asarray(self.case_ids).astype(str))
    setattr_("image_ids", np.asarray(self.image_ids).astype(str))
    setattr_("class_names", tuple(self.class_names))
    if sum(x is not None for x in (self.images, self.paths, self.records)) != 1:
      raise UserError(f"{self.name}: exactly one of images / paths / records must be set")
    n = len(self.labels)
    if self.images is not None:
      setattr_("images", np.asarray(self.images))
      if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
        raise UserError(f"{self.name}: images must be uint8 (N, H, W, 1 or 3), got {self.images.dtype} "
                         f"{self.images.shape}")
    elif self.paths is not None:
      setattr_("paths", np.asarray(self.paths).astype(str))
    data = ("images",) if self.images is not None else ("paths",) if self.paths is not None else ("records",)
    for field in ("case_ids", "image_ids") + data:
      if len(getattr(self, field)) != n:
        raise UserError(f"{self.name}: {field} has {len(getattr(self, field))} entries for {n} labels")
    ids, counts = np.unique(self.image_ids, return_counts=True)
    if np.any(counts > 1):
      raise UserError(f"{self.name}: image ids are not unique, e.g. {ids[counts > 1][:5].tolist()}")
    if self.subgroups:
      setattr_("subgroups", {str(k): np.asarray(v).astype(str) for k, v in self.subgroups.items()})
      for k, v in self.subgroups.items():
        if v.shape != (n,):
          raise UserError(f"{self.name}: subgroup {k!r} has shape {v.shape} for {n} images")
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


def unknown_split(what, split, available):
  return UserError(f"{what} has splits {sorted(available)}, not {split!r} (set data.train_split / "
                    f"data.eval_split / finetune.val_split to one of them)")


def require_path(path, key="data.path", what="data file"):
  if not path:
    raise MissingFileError(f"no {what} given: set --config.{key}=PATH")
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise MissingFileError(f"{what} {path} does not exist (set --config.{key})")
  return path
