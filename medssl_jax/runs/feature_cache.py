"""Cached frozen features of several encoders (files of `medssl-jax features`), read for heads
that train on them (DVME, linear heads of the transfer benchmark).

A source is named and given as a path template with `{split}`, e.g.
`simclr=feats/simclr_{split}.npz`. For each split, every source's file must hold the same images
(by image id; rows are put in the first source's order) with the same labels. Across the splits
of one source, the encoder and the data file must be the same (their SHA-256 fingerprints, written
by the features command): a cache made from another checkpoint or data file is refused, naming the
source, the splits and what differs.
"""
import dataclasses

import numpy as np
from etils import epath

from medssl_jax.errors import MissingFileError, UserError


@dataclasses.dataclass(frozen=True)
class SplitFeatures:
  """One split: a (N, d_i) array per source, in `names` order, and the images' ids and labels."""
  names: tuple
  features: tuple
  labels: np.ndarray
  image_ids: np.ndarray
  case_ids: np.ndarray
  class_names: tuple
  fingerprints: dict   # source name -> {'encoder_sha256', 'data_sha256', 'checkpoint', 'step'}


def parse_spec(spec: str) -> dict:
  """'name=template,name=template' -> {name: template}; each template holds '{split}'."""
  out = {}
  for part in [p.strip() for p in spec.split(",") if p.strip()]:
    name, sep, template = part.partition("=")
    name, template = name.strip(), template.strip()
    if not sep or not name or not template:
      raise UserError(f"feature source {part!r}: expected name=path_template (e.g. simclr=feats/simclr_{{split}}.npz)")
    if "{split}" not in template:
      raise UserError(f"feature source {name!r}: path {template!r} has no '{{split}}' in it")
    if name in out:
      raise UserError(f"feature source {name!r} is given twice")
    out[name] = template
  if not out:
    raise UserError("no feature sources given: set dvme.features='name=path_{split}.npz,...' (files of "
                    "`medssl-jax features`)")
  return out


def _read(path: str) -> dict:
  p = epath.Path(path)
  if not p.exists():
    raise MissingFileError(f"feature file {path} does not exist; make it with `medssl-jax features ... --out={path}`")
  with p.open("rb") as f, np.load(f, allow_pickle=False) as z:
    missing = [k for k in ("features", "image_ids", "labels", "encoder_sha256", "data_sha256") if k not in z.files]
    if missing:
      raise UserError(f"{path} is not a file of `medssl-jax features` (no {missing}); re-extract it")
    return {k: z[k] for k in z.files}


def load_split(sources: dict, split: str) -> SplitFeatures:
  names, feats, fps = tuple(sources), [], {}
  ref = None
  for name in names:
    path = sources[name].format(split=split)
    z = _read(path)
    fps[name] = {"encoder_sha256": str(z["encoder_sha256"]), "data_sha256": str(z["data_sha256"]),
                 "checkpoint": str(z.get("checkpoint", "")), "step": int(z.get("step", -1))}
    ids = z["image_ids"].astype(str)
    if ref is None:
      ref = dict(ids=ids, labels=z["labels"], case_ids=z["case_ids"].astype(str),
                 class_names=tuple(z["class_names"].astype(str).tolist()), path=path)
      feats.append(np.asarray(z["features"], np.float32))
      continue
    if len(ids) != len(ref["ids"]) or set(ids) != set(ref["ids"]):
      only = sorted(set(ref["ids"]) ^ set(ids))[:3]
      raise UserError(f"split {split!r}: {path} and {ref['path']} hold different images ({len(ids)} vs "
                      f"{len(ref['ids'])}, e.g. {only} in one only); extract both from the same data split")
    order = {v: i for i, v in enumerate(ids)}
    rows = np.array([order[v] for v in ref["ids"]])
    if not np.array_equal(np.asarray(z["labels"])[rows], ref["labels"], equal_nan=True):
      raise UserError(f"split {split!r}: {path} and {ref['path']} give the same images different labels")
    feats.append(np.asarray(z["features"], np.float32)[rows])
  return SplitFeatures(names, tuple(feats), np.asarray(ref["labels"]), ref["ids"], ref["case_ids"],
                       ref["class_names"], fps)


def check_same_origin(splits: dict) -> None:
  """Refuses a source whose splits come from different encoders or data files.

  Args:
    splits: split name -> SplitFeatures (the same source names in each).
  """
  names = list(splits)
  for source in splits[names[0]].names:
    for key, what in (("encoder_sha256", "encoder weights"), ("data_sha256", "data file")):
      seen = {s: splits[s].fingerprints[source][key] for s in names}
      if len(set(seen.values())) > 1:
        detail = "; ".join(f"{s}: {splits[s].fingerprints[source]['checkpoint']} step "
                           f"{splits[s].fingerprints[source]['step']}, {key} {v[:12]}" for s, v in seen.items())
        raise UserError(f"feature source {source!r}: its splits were made from different {what} ({detail}); "
                        f"re-extract every split from one checkpoint and one data file")


def load(spec: str, split_names) -> dict:
  """{split: SplitFeatures} for the sources of `spec` (see `parse_spec`), checked for one origin."""
  sources = parse_spec(spec)
  splits = {s: load_split(sources, s) for s in split_names}
  check_same_origin(splits)
  return splits
