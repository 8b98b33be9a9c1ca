"""Per-image Dice and IoU against hand-computed cases, the empty-mask convention, the bootstrap
interval over images, and the overlay PNG."""
import numpy as np
import pytest

from medssl_jax.evaluation import segmentation as seg
from medssl_jax.evaluation.bootstrap import bootstrap_ci


def _mask(rows, cols, shape=(4, 4)):
  m = np.zeros(shape, bool)
  m[rows, cols] = True
  return m


def test_hand_cases():
  empty = np.zeros((4, 4), bool)
  left = _mask(slice(None), slice(0, 2))        # 8 pixels
  left_col = _mask(slice(None), slice(0, 1))    # 4 pixels, inside `left`
  mid = _mask(slice(None), slice(1, 3))         # 8 pixels, 4 shared with `left`
  right = _mask(slice(None), slice(2, 4))       # 8 pixels, none shared with `left`
  masks = np.stack([empty, left, left, left, left, left, empty])
  preds = np.stack([empty, left, mid, right, left_col, empty, left])
  dice = seg.dice_per_image(masks, preds)
  iou = seg.iou_per_image(masks, preds)
  # both empty; perfect; half overlap 2*4/16 and 4/12; disjoint; prediction inside the mask
  # 2*4/12 and 4/8; empty prediction; empty truth.
  np.testing.assert_allclose(dice, [1.0, 1.0, 0.5, 0.0, 2 / 3, 0.0, 0.0])
  np.testing.assert_allclose(iou, [1.0, 1.0, 1 / 3, 0.0, 0.5, 0.0, 0.0])


def test_dice_iou_relation_and_channel_axis():
  rng = np.random.default_rng(0)
  masks = rng.random((20, 9, 7, 1)) > 0.6
  preds = rng.random((20, 9, 7, 1)) > 0.5
  d, j = seg.dice_per_image(masks, preds), seg.iou_per_image(masks, preds)
  np.testing.assert_allclose(d, 2 * j / (1 + j))  # Dice = 2 IoU / (1 + IoU) per image
  ref = [2 * np.sum(m & p) / (m.sum() + p.sum()) for m, p in zip(masks, preds)]
  np.testing.assert_allclose(d, ref)


def test_refuses_probabilities_and_mismatched_shapes():
  m = np.zeros((2, 4, 4))
  with pytest.raises(ValueError, match="binary"):
    seg.dice_per_image(m, np.full((2, 4, 4), 0.7))
  with pytest.raises(ValueError, match="shape"):
    seg.iou_per_image(m, np.zeros((2, 4, 5)))


def test_threshold_is_inclusive():
  probs = np.array([[[0.49, 0.5], [0.51, 0.0]]])
  np.testing.assert_array_equal(seg.binarize(probs), [[[False, True], [True, False]]])


def test_segmentation_metrics_mean_and_bootstrap_interval():
  rng = np.random.default_rng(1)
  masks = rng.random((30, 8, 8)) > 0.5
  probs = np.where(rng.random((30, 8, 8)) < 0.8, masks.astype(float), 1 - masks.astype(float))
  probs = np.clip(probs + rng.normal(0, 0.1, probs.shape), 0, 1)
  out = seg.segmentation_metrics(masks, probs, num_replicates=300, seed=3)
  preds = probs >= 0.5
  dice = np.array([2 * np.sum(m & p) / (m.sum() + p.sum()) for m, p in zip(masks, preds)])
  iou = np.array([np.sum(m & p) / np.sum(m | p) for m, p in zip(masks, preds)])
  assert out["num_images"] == 30
  assert out["dice"]["value"] == pytest.approx(dice.mean())
  assert out["iou"]["value"] == pytest.approx(iou.mean())
  # The interval is the percentile bootstrap of the per-image mean: recompute it by hand with the
  # project's helper on the per-image scores.
  ref = bootstrap_ci(dice, dice, lambda s, _: float(np.mean(s)), num_replicates=300, seed=3)
  assert (out["dice"]["ci_low"], out["dice"]["ci_high"]) == (pytest.approx(ref["ci_low"]), pytest.approx(ref["ci_high"]))
  assert out["dice"]["ci_low"] < dice.mean() < out["dice"]["ci_high"]
  # about +- 2 standard errors of the mean
  se = dice.std(ddof=1) / np.sqrt(len(dice))
  assert out["dice"]["ci_high"] - out["dice"]["ci_low"] == pytest.approx(4 * se, rel=0.3)
  assert out["dice"]["n_valid"] == 300


def test_identical_images_give_a_zero_width_interval():
  masks = np.zeros((5, 4, 4), bool)
  out = seg.segmentation_metrics(masks, np.zeros((5, 4, 4)), num_replicates=50)
  assert out["dice"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n_valid": 50}


def test_overlay_png(tmp_path):
  import matplotlib.image as mpimg
  yy, xx = np.mgrid[:32, :32]
  masks = np.stack([(yy - 16) ** 2 + (xx - 16) ** 2 < 64 + 8 * i for i in range(5)])
  preds = np.roll(masks, 2, axis=2)
  images = masks[..., None] * 0.8 + np.random.default_rng(0).random((5, 32, 32, 1)) * 0.2
  path = seg.overlay_png(images, masks, preds, tmp_path / "overlay.png", max_images=3, columns=2)
  img = mpimg.imread(path)
  assert img.shape[0] > 100 and img.shape[1] > 100
  rgb = img[..., :3]
  red = (rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)
  green = (rgb[..., 1] > 0.8) & (rgb[..., 0] < 0.3) & (rgb[..., 2] < 0.3)
  assert red.sum() > 20 and green.sum() > 20  # both outlines are drawn
  with pytest.raises(ValueError, match="do not match"):
    seg.overlay_png(images[:, :16], masks, preds, tmp_path / "bad.png")


def test_overlay_titles_are_cut_in_the_middle():
  assert seg.short_title("16672_1_1.jpg") == "16672_1_1.jpg"
  long = "23E99E2E-447C-46E5-8EB2-D35D12473C39.png"
  assert seg.short_title(long) == "23E99E2E-447…D12473C39.png" and len(seg.short_title(long)) == 26
  assert seg.short_title("abcdefgh", limit=5) == "ab…gh"
