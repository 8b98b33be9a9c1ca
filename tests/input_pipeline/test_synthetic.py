"""The synthetic medical-like data set: determinism, case structure, splits, difficulty."""
import time

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from configs.base import get_base_config
from input_pipeline import sources
from input_pipeline.sources import synthetic


def test_deterministic_per_seed():
  a = synthetic.make_synthetic(num_cases=40, image_size=16, seed=3)
  b = synthetic.make_synthetic(num_cases=40, image_size=16, seed=3)
  c = synthetic.make_synthetic(num_cases=40, image_size=16, seed=4)
  for field in ("images", "labels", "case_ids", "image_ids"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  assert not np.array_equal(a.images[:5], c.images[:5])


def test_shapes_and_channels():
  colour = synthetic.make_synthetic(num_cases=8, image_size=24, colour=True)
  grey = synthetic.make_synthetic(num_cases=8, image_size=24, colour=False)
  assert isinstance(colour, sources.Source) and colour.paths is None
  assert colour.images.dtype == np.uint8 and colour.images.shape[1:] == (24, 24, 3)
  assert grey.images.shape[1:] == (24, 24, 1)
  assert colour.labels.dtype == np.int64 and colour.num_classes == 4
  with pytest.raises(ValueError, match="too small"):
    synthetic.make_synthetic(num_cases=8, image_size=8)
  with pytest.raises(ValueError, match=r"splits \['train', 'val', 'test'\]"):
    synthetic.make_synthetic(num_cases=8, split="holdout")


def test_cases_have_one_label_and_varying_sizes():
  src = synthetic.make_synthetic(num_cases=200, num_classes=4, max_images_per_case=6, image_size=16, seed=1)
  cases = src.cases()
  sizes = np.array([len(v) for v in cases.values()])
  assert len(cases) == src.num_cases == 200
  assert sizes.min() == 1 and sizes.max() == 6 and len(np.unique(sizes)) == 6
  for cid, idx in cases.items():
    assert len(np.unique(src.labels[idx])) == 1   # one condition per case
    assert all(i.startswith(cid + "-img") for i in src.image_ids[idx])
  assert list(cases)[:2] == ["train-case-00000", "train-case-00001"]
  single = synthetic.make_synthetic(num_cases=20, max_images_per_case=1, image_size=16)
  assert len(single) == single.num_cases == 20


def test_class_balance():
  src = synthetic.make_synthetic(num_cases=203, num_classes=5, image_size=16)
  first = np.array([idx[0] for idx in src.cases().values()])
  per_case = np.bincount(src.labels[first], minlength=5)
  assert per_case.max() - per_case.min() <= 1           # exact round robin over cases
  per_image = np.bincount(src.labels, minlength=5) / len(src)
  assert np.all(np.abs(per_image - 0.2) < 0.07)


def test_splits_are_disjoint_and_sized():
  cfg = get_base_config().data
  cfg.synthetic.num_cases, cfg.synthetic.image_size = 40, 16
  splits = {s: sources.load_source(cfg, s) for s in ("train", "val", "test")}
  assert [splits[s].num_cases for s in ("train", "val", "test")] == [40, 10, 10]
  sources.check_no_leakage(splits)
  assert splits["val"].case_ids[0].startswith("val-case-")
  assert not np.array_equal(splits["val"].images[:3], splits["test"].images[:3])
  assert sources.load_source(cfg, "train") is splits["train"]   # cached, read-only
  assert not splits["train"].images.flags.writeable
  with pytest.raises(ValueError, match=r"splits \['test', 'train', 'val'\], not 'holdout'"):
    sources.load_source(cfg, "holdout")


def test_fast_enough():
  t = time.perf_counter()
  src = synthetic.make_synthetic(num_cases=600, num_classes=4, max_images_per_case=6, image_size=32)
  # About 0.5 s alone on one core; the bound leaves room for a loaded CI machine.
  assert time.perf_counter() - t < 10.0 and len(src) > 1000


def test_case_appearance_is_shared():
  """Images of a case look alike globally (background, tint), more than images of other cases."""
  src = synthetic.make_synthetic(num_cases=100, image_size=32, seed=2)
  means = src.images.reshape(len(src), -1, 3).mean(1)
  within = [means[idx].std(0).mean() for idx in src.cases().values() if len(idx) > 1]
  assert np.mean(within) < 0.3 * means.std(0).mean()


def _motif_detector_accuracy(src):
  """Classifies by the best normalised correlation with each class motif anywhere in the image."""
  x = src.images[..., 0].astype(np.float32) / 255
  best = np.full((len(x), src.num_classes), -np.inf, np.float32)
  for scale in (1, 2):
    for k, motif in enumerate(synthetic.motifs(src.num_classes)):
      f = np.kron(motif, np.ones((scale, scale))).astype(np.float32)
      f = (f - f.mean()) / np.linalg.norm(f - f.mean())
      w = sliding_window_view(x, f.shape, axis=(1, 2))
      w = w - w.mean(axis=(-2, -1), keepdims=True)
      r = np.einsum("nhwij,ij->nhw", w, f) / (np.linalg.norm(w, axis=(-2, -1)) + 1e-6)
      best[:, k] = np.maximum(best[:, k], r.max(axis=(1, 2)))
  return np.mean(best.argmax(1) == src.labels)


def test_class_is_local_texture_not_global_colour():
  train = synthetic.make_synthetic(num_cases=200, image_size=32, colour=False, seed=1)
  test = synthetic.make_synthetic(num_cases=200, image_size=32, colour=False, seed=1, split="test")
  # Local pattern detectors (what a CNN can learn) recover the class ...
  assert _motif_detector_accuracy(test) > 0.9
  # ... a linear classifier on raw pixels does not (chance = 0.25).
  linear_model = pytest.importorskip("sklearn.linear_model")
  x, xt = (s.images.reshape(len(s), -1) / 255.0 for s in (train, test))
  clf = linear_model.LogisticRegression(C=0.01, max_iter=500).fit(x, train.labels)
  assert clf.score(xt, test.labels) < 0.45
  # Global brightness says nothing either: nearest class mean of the image mean.
  m, mt = x.mean(1), xt.mean(1)
  centroids = np.array([m[train.labels == k].mean() for k in range(4)])
  assert np.mean(np.abs(mt[:, None] - centroids).argmin(1) == test.labels) < 0.4
