"""The fixed-size random crop, the evaluation centre crop and the Inception crop's fallbacks,
in both host pipelines (issue 18, items 1 and 7).

References are hand-computed sides and offsets (floor(0.875 x short side); centred offsets) and
plain NumPy slices of the input; the two pipelines are compared with each other on the same
seeds, directly and through their batch iterators.
"""
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from configs import chexpert_finetune, truong_linear
from configs.base import get_base_config
from input_pipeline import augment, augment_np, numpy_pipeline, pipeline, sources, view_plan

# (h, w) -> floor(0.875 x short side), by hand: 0.875 x 320 = 280, 0.875 x 28 = 24.5, 0.875 x 256 = 224.
SIDES = {(390, 320): 280, (320, 390): 280, (28, 28): 24, (28, 20): 17, (256, 300): 224}
SEEDS = [np.array(s, np.int64) for s in
         [(i, 0) for i in range(40)] + [(0, i) for i in range(1, 20)] + [(-1, -1), (-5, 3), (2**62, 7), (-2**63, 2**63 - 1)]]
FIXED_CONFIGS = [(chexpert_finetune, ""), (chexpert_finetune, "local"), (truong_linear, ""), (truong_linear, "finetune")]


def _only_crop(aug):
  """`aug` (a config's) with every op but the crop switched off."""
  aug = aug.to_dict() if hasattr(aug, "to_dict") else dict(aug)
  aug.update(flip=False, rotation_degrees=0.0, color_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
             additive_brightness=0.0, std_contrast=0.0)
  c = get_base_config()
  with c.aug.unlocked():
    c.aug.update(aug)
  return c.aug


def _aug(**overrides):
  return _only_crop(dict(get_base_config().aug.to_dict(), **overrides))


def _noise(h, w, c, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (h, w, c)).astype(np.uint8)


# ---- the fixed crop's box ------------------------------------------------------------------


@pytest.mark.parametrize("hw", list(SIDES))
def test_fixed_crop_box_has_the_requested_size_varies_and_is_the_same_in_both_pipelines(hw):
  h, w = hw
  side = SIDES[hw]
  image = _noise(h, w, 1)
  # Traced once (as in tf.data), not op by op.
  tf_box_fn = tf.function(lambda shape, seed: augment.fixed_crop_box(shape, seed, 0.875))
  tf_crop_fn = tf.function(lambda x, seed: augment.fixed_crop(x, seed, 0.875))
  offsets = set()
  for seed in SEEDS:
    ref = view_plan.fixed_crop_box(h, w, seed, 0.875)
    tf_box = tuple(int(v) for v in tf_box_fn(tf.constant([h, w, 1]), tf.constant(seed)))
    assert tf_box == ref, seed
    oy, ox, ch, cw = ref
    assert (ch, cw) == (side, side)
    assert 0 <= oy <= h - side and 0 <= ox <= w - side
    offsets.add((oy, ox))
    # The crops themselves, not only the box functions.
    expected = image[oy:oy + side, ox:ox + side]
    np.testing.assert_array_equal(augment_np.fixed_crop(image, seed, 0.875), expected)
    np.testing.assert_array_equal(tf_crop_fn(tf.constant(image), tf.constant(seed)).numpy(), expected)
  positions = (h - side + 1) * (w - side + 1)
  assert len(offsets) >= min(positions, len(SEEDS)) * 0.5   # offsets really vary with the seed


def test_fixed_crop_offsets_are_uniform_and_independent():
  # 28 x 28 -> side 24: 5 positions per axis, 2,000 seeds: 400 expected per position.
  ys, xs = np.array([view_plan.fixed_crop_box(28, 28, (s, 11), 0.875)[:2] for s in range(2000)]).T
  assert np.bincount(ys, minlength=5).tolist() == pytest.approx([400] * 5, abs=80)
  assert np.bincount(xs, minlength=5).tolist() == pytest.approx([400] * 5, abs=80)
  assert np.mean(ys == xs) == pytest.approx(0.2, abs=0.04)   # the two axes are separate draws


def test_crop_side_and_centre_box_by_hand():
  assert [view_plan.crop_side(n, 0.875) for n in (256, 320, 28, 20, 1)] == [224, 280, 24, 17, 1]
  assert view_plan.crop_side(10, 0.7) == 7   # 0.7 x 10 = 7.000000000000001 in floats: still 7
  assert view_plan.center_crop_box(390, 320, 0.875) == (55, 20, 280, 280)   # (110 + 1) // 2, (40 + 1) // 2
  assert view_plan.center_crop_box(320, 390, 0.875) == (20, 55, 280, 280)
  assert view_plan.center_crop_box(28, 28, 0.875) == (2, 2, 24, 24)
  assert view_plan.center_crop_box(390, 320, 1.0) == (0, 0, 390, 320)
  for hw in [(390, 320), (320, 390), (28, 28), (29, 20)]:
    assert tuple(int(v) for v in augment.center_crop_box([*hw, 3], 0.875)) == view_plan.center_crop_box(*hw, 0.875)
  with pytest.raises(ValueError, match="aug.fixed_crop_fraction=1.5"):
    view_plan.ViewPlan.from_config(_aug(crop_mode="fixed", fixed_crop_fraction=1.5), 28, 1)
  with pytest.raises(ValueError, match="aug.crop_mode='center'"):
    view_plan.ViewPlan.from_config(_aug(crop_mode="center"), 28, 1)


# ---- whole views and batches ---------------------------------------------------------------


@pytest.mark.parametrize("config,variant", FIXED_CONFIGS)
@pytest.mark.parametrize("hw", [(390, 320), (28, 28)])
def test_config_crop_fires_in_both_pipelines(config, variant, hw):
  """The configs' "random crop 224" on non-square and 28 px images is a crop in the tf.data
  pipeline too (it was the whole image in 100% of views), of the same box in both pipelines."""
  aug = _only_crop(config.get_config(variant).aug)
  h, w = hw
  size = 28 if h == 28 else 64
  image = _noise(h, w, 3, seed=1)
  tf_view = augment.make_view_fn(aug, size, 3)
  np_view = augment_np.make_view_fn(aug, size, 3)
  whole = augment.resize(augment.to_channels(image, 3), size).numpy()
  for s in range(6):
    seed = np.array([s, 5], np.int64)
    got_tf = tf_view(tf.constant(image), tf.constant(seed)).numpy()
    assert np.abs(got_tf - whole).max() > 0.05, f"seed {s}: the tf.data view is the whole image"
    oy, ox, ch, cw = view_plan.fixed_crop_box(h, w, seed, 0.875)
    assert ch == cw == SIDES[hw]
    crop = image[oy:oy + ch, ox:ox + cw]
    np.testing.assert_allclose(got_tf, augment.resize(augment.to_channels(crop, 3), size).numpy(), atol=1e-6)
    got_np = np_view(image, seed)   # resized in uint8 (OpenCV), then float: within a grey level of float
    np.testing.assert_array_equal(got_np, augment_np.resize(crop, size, size) / np.float32(255))
    np.testing.assert_allclose(got_np, augment_np.resize_bilinear(crop / np.float32(255), size, size), atol=1 / 255)


def _big_source(h=390, w=320, n=4, c=1):
  images = np.stack([_noise(h, w, c, seed=k) for k in range(n)])
  return sources.Source("big", np.arange(n) % 2, np.array([f"c{k}" for k in range(n)]),
                        np.array([f"i{k}" for k in range(n)]), 2, images=images)


def test_both_pipelines_batch_the_same_crops():
  """Through the iterators: the same indices and view seeds give the same boxes, so with every
  other op off and no resampling (image_size = crop side) the batches are equal."""
  src = _big_source()
  kw = dict(aug_cfg=_aug(crop_mode="fixed", fixed_crop_fraction=0.875), image_size=280, channels=1,
            global_batch=4, seed=3)
  tf_it, np_it = pipeline.supervised_iterator(src, **kw), numpy_pipeline.supervised_iterator(src, **kw)
  for _ in range(2):
    a, b = next(tf_it), next(np_it)
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_allclose(a["image"], b["image"], atol=1e-6)
    for k, i in enumerate(b["index"]):   # each is a 280 x 280 window of its source image
      image, crop = src.images[i][..., 0], np.round(b["image"][k][..., 0] * 255)
      rows = np.lib.stride_tricks.sliding_window_view(image, 280, axis=1)   # (390, 41, 280)
      hits = [(oy, ox) for oy, ox in np.argwhere(np.all(rows[:111] == crop[0], axis=-1))
              if np.array_equal(image[oy:oy + 280, ox:ox + 280], crop)]
      assert len(hits) == 1


def test_view_plan_passes_the_view_seed_to_the_fixed_crop():
  plan = view_plan.ViewPlan.from_config(_aug(crop_mode="fixed"), 28, 1)
  log = []
  ops = view_plan.Ops(**{f.name: (lambda name: lambda x, *a: log.append((name, a[:1])) or x)(f.name)
                         for f in view_plan.dataclasses.fields(view_plan.Ops)})
  view_plan.apply(plan, ops, "image", keys=list(range(view_plan.NUM_OPS)), seed="view-seed")
  assert log[0] == ("fixed_crop", ("view-seed",))
  with pytest.raises(ValueError, match="needs the view seed"):
    view_plan.apply(plan, ops, "image", keys=list(range(view_plan.NUM_OPS)))


# ---- Inception crop fallbacks --------------------------------------------------------------

EXACT = dict(area_range=(0.875 ** 2, 0.875 ** 2), aspect_range=(1.0, 1.0))


def test_inception_fallback_is_reported_by_the_box_check():
  for hw in [(28, 28), (390, 320)]:   # no exact 0.765625-area square exists: every box falls back
    for s in range(10):
      box = augment.crop_box([*hw, 1], np.array([s, 0], np.int64), **EXACT)
      assert tuple(int(v) for v in box) == (0, 0, *hw)
      assert view_plan.inception_crop_fell_back(*hw, box, **EXACT)
  box = augment.crop_box([320, 320, 1], np.array([0, 0], np.int64), **EXACT)   # exists: a real crop
  assert tuple(int(v) for v in box)[2:] == (280, 280)
  assert not view_plan.inception_crop_fell_back(320, 320, box, **EXACT)
  # A whole-image box the ranges allow is a draw, not a fallback; a smaller box never is.
  assert not view_plan.inception_crop_fell_back(30, 20, (0, 0, 30, 20), (0.5, 1.0), (0.5, 1.0))
  assert view_plan.inception_crop_fell_back(30, 20, (0, 0, 30, 20), (0.5, 1.0), (0.75, 1.33))
  assert not view_plan.inception_crop_fell_back(30, 20, (1, 0, 29, 20), (2.0, 3.0), (0.5, 1.0))
  assert view_plan.inception_crop_fell_back(30, 20, augment_np.crop_box(30, 20, np.random.default_rng(0), (2.0, 3.0)),
                                            (2.0, 3.0), (0.5, 2.0))


def test_inception_fallbacks_are_counted_and_logged_in_both_pipelines(monkeypatch):
  counter = view_plan.FallbackCounter()
  monkeypatch.setattr(view_plan, "CROP_FALLBACKS", counter)
  aug = _aug(crop_mode="inception", crop_area_min=EXACT["area_range"][0], crop_area_max=EXACT["area_range"][1],
             crop_aspect_min=1.0, crop_aspect_max=1.0)
  image = _noise(28, 28, 1)
  with mock.patch.object(view_plan.logging, "warning") as warn:
    # tf.data: inside Dataset.map, as the pipeline runs it.
    view = augment.make_view_fn(aug, 28, 1)
    seeds = tf.data.Dataset.from_tensor_slices(np.stack([[s, 0] for s in range(6)]).astype(np.int64))
    views = list(seeds.map(lambda s: view(tf.constant(image), s), num_parallel_calls=2).as_numpy_iterator())
    assert len(views) == 6 and counter.count() == 6
    # NumPy: its box draw finds a 24 x 24 box here, so use a request no box can meet.
    np_view = augment_np.make_view_fn(_aug(crop_mode="inception", crop_area_min=1.5, crop_area_max=2.0), 28, 1)
    for s in range(3):
      np_view(image, [s, 0])
    assert counter.count() == 9
    # Square-friendly default ranges on a square image: whole-image draws are allowed, none counted.
    ok = augment_np.make_view_fn(_aug(crop_mode="inception", crop_area_min=0.9, crop_area_max=1.0), 28, 1)
    for s in range(20):
      ok(image, [s, 0])
    assert counter.count() == 9
  assert warn.call_count == 4   # at the 1st, 2nd, 4th and 8th fallback
  assert counter.reset() == 9 and counter.count() == 0


def test_fixed_crop_never_counts_a_fallback(monkeypatch):
  counter = view_plan.FallbackCounter()
  monkeypatch.setattr(view_plan, "CROP_FALLBACKS", counter)
  aug = _only_crop(chexpert_finetune.get_config("local").aug)
  for hw in [(28, 28), (390, 320)]:
    image = _noise(*hw, 1)
    for s in range(3):
      augment.make_view_fn(aug, 28, 1)(tf.constant(image), tf.constant([s, 0], tf.int64))
      augment_np.make_view_fn(aug, 28, 1)(image, [s, 0])
  assert counter.count() == 0


# ---- evaluation centre crop ----------------------------------------------------------------


def _file_source(tmp_path, images):
  paths = []
  for k, im in enumerate(images):
    Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(tmp_path / f"{k}.png")
    paths.append(str(tmp_path / f"{k}.png"))
  n = len(images)
  return sources.Source("files", np.arange(n) % 2, np.array([f"c{k}" for k in range(n)]),
                        np.array([f"i{k}" for k in range(n)]), 2, paths=np.array(paths))


@pytest.mark.parametrize("hw,box", [((390, 320), (55, 20)), ((320, 390), (20, 55))])
@pytest.mark.parametrize("channels", [1, 3])
def test_eval_centre_crop_is_the_same_in_both_pipelines(tmp_path, hw, box, channels):
  h, w = hw
  images = [_noise(h, w, channels, seed=k) for k in range(3)]
  oy, ox = box   # hand-computed: ((h - 280 + 1) // 2, (w - 280 + 1) // 2)
  expected = np.stack([im[oy:oy + 280, ox:ox + 280] for im in images]).astype(np.float32) / 255
  for src in (_file_source(tmp_path, images), sources.Source("mem", np.arange(3) % 2, np.array(list("abc")),
                                                              np.array(list("xyz")), 2, images=np.stack(images))):
    # Side 280 = image_size: no resampling, so the arrays are the crop itself in both pipelines.
    got_tf, _ = pipeline.make_eval_arrays(src, 280, channels, crop_fraction=0.875)
    got_np, _ = numpy_pipeline.make_eval_arrays(src, 280, channels, crop_fraction=0.875)
    np.testing.assert_allclose(got_tf, expected, atol=1e-6)
    np.testing.assert_allclose(got_np, got_tf, atol=1e-6)
  # Resized (280 -> 70) on a smooth image: the two resizes (bicubic / bilinear) agree closely.
  yy, xx = np.mgrid[0:h, 0:w]
  smooth = (127 + 100 * np.sin(yy / 40.0) * np.cos(xx / 55.0)).astype(np.uint8)[..., None]
  smooth = np.repeat(smooth, channels, -1)[None]
  src = sources.Source("smooth", np.array([0]), np.array(["c"]), np.array(["i"]), 2, images=smooth)
  got_tf, _ = pipeline.make_eval_arrays(src, 70, channels, crop_fraction=0.875)
  got_np, _ = numpy_pipeline.make_eval_arrays(src, 70, channels, crop_fraction=0.875)
  np.testing.assert_allclose(got_np, got_tf, atol=0.01)
  crop = smooth[0, oy:oy + 280, ox:ox + 280]
  np.testing.assert_array_equal(got_np[0], augment_np.resize(crop, 70, 70) / np.float32(255))
  np.testing.assert_allclose(got_np[0], augment_np.resize_bilinear(crop / np.float32(255), 70, 70), atol=1 / 255)
  whole, _ = numpy_pipeline.make_eval_arrays(src, 70, channels)   # 1.0: the whole image, not the crop
  assert np.abs(whole - got_np).max() > 0.05


def test_eval_crop_fraction_is_checked():
  for mod in (augment, augment_np):
    with pytest.raises(ValueError, match="aug.eval_crop_fraction=0.0"):
      mod.make_eval_fn(28, 1, 0.0)


# ---- configs -------------------------------------------------------------------------------


def test_configs_use_the_fixed_crop_and_the_centre_crop_at_evaluation():
  base = get_base_config().aug
  assert (base.crop_mode, base.eval_crop_fraction) == ("inception", 1.0)
  for config, variant in FIXED_CONFIGS:
    aug = config.get_config(variant).aug
    assert (aug.crop, aug.crop_mode, aug.fixed_crop_fraction, aug.eval_crop_fraction) == (True, "fixed", 0.875, 0.875)
  moco = chexpert_finetune.get_config("mococxr").aug   # MoCo-CXR: no crop, so the whole image at test
  assert (moco.crop, moco.eval_crop_fraction) == (False, 1.0)


def test_finetune_evaluation_reads_the_eval_crop_fraction(monkeypatch, tmp_path):
  """The runs' test metrics use aug.eval_crop_fraction (else the configs' 0.875 would be inert)."""
  from medssl_jax.runs import classify
  seen = []

  class Recording:
    @staticmethod
    def make_eval_arrays(source, image_size, channels, indices=None, batch_size=256, crop_fraction=1.0):
      seen.append(crop_fraction)
      return np.zeros((len(source), image_size, image_size, channels), np.float32), np.asarray(source.labels)

  monkeypatch.setattr(classify, "predict", lambda state, images, mesh, task, *a, **k: np.tile([0.6, 0.4], (len(images), 1)))
  src = _big_source(28, 28, n=6)
  for config, expected in [(chexpert_finetune.get_config("local"), 0.875), (get_base_config(), 1.0)]:
    with config.unlocked():
      config.eval.num_replicates, config.finetune.task = 5, "multiclass"
      config.data.image_size, config.data.channels = 28, 1
    classify.evaluate(config, None, None, src, Recording, "test", str(tmp_path))
    assert seen[-1] == expected


def test_study_a_recipe_without_crops_tests_on_whole_images(monkeypatch):
  """Study A's MedMNIST v2 recipe (no augmentation) starts from chexpert_finetune:local, whose
  0.875 centre crop belongs with its training crops; the recipe must test on whole images."""
  from benchmarks import common, label_efficiency
  monkeypatch.setattr(common, "labelled_batch", lambda data_cfg, fraction, draw, batch: (batch, 1000))
  s = dict(num_replicates=10, val_split="val", recipe_batch=128, recipe_epochs=1)
  c = label_efficiency.recipe_config("unused.npz", s, 0.25)
  assert (c.aug.crop, c.aug.eval_crop_fraction) == (False, 1.0)
  arm = label_efficiency.eval_config("unused.npz", dict(s, width=0.25, eval_steps=10, batch=64), mode="finetune",
                                     init="random", checkpoint="", fraction=1.0, draw=0)
  assert (arm.aug.crop_mode, arm.aug.eval_crop_fraction) == ("fixed", 0.875)   # the App. A.2 arms crop
