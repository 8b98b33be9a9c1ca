"""Training subsets and oversampling (input_pipeline/subsets.py): class balance per fold by hand,
oversampled frequencies against the hand-computed shares, the pipelines' per-epoch order."""
import pickle

import numpy as np
import pytest

from input_pipeline import numpy_pipeline, subsets
from medssl_jax.errors import UserError
from tests.helpers import TOY_CASE_SIZES, toy_pretrain_config, toy_source


def test_balanced_subsets_per_fold():
  labels = np.repeat([0, 1, 2], [40, 30, 10])
  a = subsets.training_subset(labels, 25, fold=0, seed=0)
  assert np.bincount(labels[a]).tolist() == [9, 8, 8] and len(set(a)) == 25  # 25 // 3, remainder first
  b = subsets.training_subset(labels, 25, fold=1, seed=0)
  assert not np.array_equal(a, b) and np.array_equal(a, subsets.training_subset(labels, 25, fold=0, seed=0))
  assert len(subsets.training_subset(labels, 0, 0, 0)) == 80
  with pytest.raises(UserError, match="class 2 has 10 training images"):
    subsets.training_subset(labels, 60, 0, 0)
  multi = np.zeros((50, 3), np.float32)
  assert len(set(subsets.training_subset(multi, 20, 0, 0))) == 20
  # The largest balanced size, by hand: [40, 30, 10] -> 3 x 10 = 30, and the remainder goes to the
  # first classes, so 32 = 11 + 11 + 10 still fits; 33 needs 11 of class 2, which has 10.
  assert subsets.largest_balanced_size(labels) == 32
  assert len(subsets.training_subset(labels, 32, 0, 0)) == 32
  with pytest.raises(UserError, match="class 2 has 10 training images"):
    subsets.training_subset(labels, 33, 0, 0)
  assert subsets.largest_balanced_size(np.repeat([0, 1], [147, 399])) == 294  # BreastMNIST's train split


def test_oversampled_epochs_equalise_classes():
  labels = np.repeat([0, 1, 2], [60, 30, 10])
  a = subsets.oversample_rows(labels, seed=3, epoch=0)
  assert len(a) == 100 and np.array_equal(a, subsets.oversample_rows(labels, seed=3, epoch=0))
  assert not np.array_equal(a, subsets.oversample_rows(labels, seed=3, epoch=1))
  assert not np.array_equal(a, subsets.oversample_rows(labels, seed=4, epoch=0))
  rows = np.concatenate([subsets.oversample_rows(labels, 0, e) for e in range(200)])   # 20,000 draws
  np.testing.assert_allclose(np.bincount(labels[rows]) / len(rows), [1 / 3] * 3, atol=0.015)


def test_oversampled_multilabel_frequencies_match_the_hand_computed_ones():
  # 100 images, 3 labels: 50 {0}, 20 {0, 1}, 10 {1}, 5 {1, 2}, 15 none (one with an ignored NaN).
  # Positives per label 70, 35, 5, so the groups (rarest positive label) are {0}: 50 images,
  # {1}: the 20 + 10, {2}: 5, none: 15; each group drawn 1/4 of the time. Expected share of draws
  # with label 0: 1/4 + 1/4 * 20/30 = 5/12; label 1: 1/4 + 1/4 = 1/2; label 2: 1/4; none: 1/4
  # (without oversampling 0.70, 0.35, 0.05, 0.15).
  y = np.zeros((100, 3), np.float32)
  y[:70, 0] = 1
  y[50:85, 1] = 1
  y[80:85, 2] = 1
  y[85, 2] = np.nan
  assert np.array_equal(np.bincount(subsets.oversample_groups(y)), [50, 30, 5, 15])
  rows = np.concatenate([subsets.oversample_rows(y, 0, e) for e in range(200)])
  pos = np.nan_to_num(y[rows]) > 0.5
  np.testing.assert_allclose(pos.mean(0), [5 / 12, 1 / 2, 1 / 4], atol=0.015)
  assert abs((~pos.any(1)).mean() - 1 / 4) < 0.015


def test_the_pipelines_order_is_oversample_order_per_epoch_and_survives_pickling():
  groups = np.repeat([0, 1], [90, 10])
  order = subsets.Oversampled(groups, seed=5)
  np.testing.assert_array_equal(order(3), subsets.oversample_order(groups, 5, 3))
  np.testing.assert_array_equal(order(0), subsets.oversample_rows(groups, 5, 0))  # class labels: their own groups
  again = pickle.loads(pickle.dumps(order))  # a grain worker's copy
  np.testing.assert_array_equal(again(3), order(3))
  draws = np.concatenate([order(e) for e in range(100)])
  assert abs(np.mean(groups[draws] == 1) - 0.5) < 0.02  # 10% of the images, half of the draws


def _indices(it, steps):
  out = [next(it)["index"] for _ in range(steps)]
  if hasattr(it, "close"):
    it.close()
  return np.concatenate(out)


def test_oversampled_supervised_batches_follow_the_order_in_every_pipeline():
  """finetune.oversample in the host pipelines: the images of each epoch are `indices` in the order
  `oversample_order` draws for that epoch (14 images of class 0, 6 of class 1 -> half and half),
  the same in the NumPy, tf.data and grain pipelines, and a resumed stream continues it."""
  src, c = toy_source(TOY_CASE_SIZES), toy_pretrain_config()
  indices = np.arange(len(src))
  kw = dict(aug_cfg=c.aug, image_size=8, channels=1, global_batch=4, seed=3, indices=indices, oversample=True)
  got = _indices(numpy_pipeline.supervised_iterator(src, **kw), 10)  # two epochs of 5 steps
  groups = subsets.oversample_groups(np.asarray(src.labels))
  want = np.concatenate([indices[subsets.oversample_order(groups, 3, e)] for e in (0, 1)])
  np.testing.assert_array_equal(got, want)
  resumed = _indices(numpy_pipeline.supervised_iterator(src, **kw, start_step=7), 3)
  np.testing.assert_array_equal(resumed, want[28:40])
  plain = _indices(numpy_pipeline.supervised_iterator(src, **(kw | {"oversample": False})), 5)
  assert sorted(plain.tolist()) == list(range(20))  # without: every image once per epoch
  for name in ("tf", "grain"):  # optional pipelines: compared where installed
    module = pytest.importorskip({"tf": "input_pipeline.pipeline", "grain": "input_pipeline.grain_pipeline"}[name])
    np.testing.assert_array_equal(_indices(module.supervised_iterator(src, **kw), 10), want, err_msg=name)
