"""aug.on_device: the JAX ops equal the NumPy pipeline's ops, the draws are keyed by
(seed, step, global example, view), and the train step with it is sharding-invariant."""
import copy
import dataclasses
import json
import pickle

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from input_pipeline import augment_device as ad
from input_pipeline import augment_np as an
from input_pipeline import view_plan
from tests.helpers import tiny_config


def _image(channels=3, size=12, seed=0):
  return np.random.default_rng(seed).random((size, size, channels), np.float32)


def _plan(**changes):
  aug = tiny_config().aug
  plan = view_plan.ViewPlan.from_config(aug, 12, 3)
  return dataclasses.replace(plan, **changes)


@pytest.mark.parametrize("channels", [1, 3])
def test_each_op_equals_the_numpy_op_for_the_same_parameters(channels):
  x = _image(channels)
  pairs = {
      "flip": (ad.flip(x), x[:, ::-1]),
      "contrast": (ad.contrast(x, 1.37), an._contrast(x, 1.37)),
      "grayscale": (ad.grayscale(x), an.to_grayscale(x)),
      "blur": (ad.gaussian_blur(x, 1.3, 5), an.gaussian_blur(x, 1.3, 5)),
      "blur_wide": (ad.gaussian_blur(x, 0.4, 11), an.gaussian_blur(x, 0.4, 11)),
  }
  if channels == 3:
    pairs["saturation"] = (ad.saturation(x, 0.4), an._saturation(x, 0.4))
    pairs["hue"] = (ad.adjust_hue(x, 0.13), an.adjust_hue(x, 0.13))
    pairs["hue_negative"] = (ad.adjust_hue(x, -0.17), an.adjust_hue(x, -0.17))
  for name, (ours, theirs) in pairs.items():
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=2e-6, err_msg=name)


def test_colour_jitter_in_a_given_order_equals_the_numpy_composition():
  x = _image(3)
  factors = (1.3, 0.6, 1.5, -0.12)
  numpy_ops = [lambda y: y * factors[0], lambda y: an._contrast(y, factors[1]),
               lambda y: an._saturation(y, factors[2]), lambda y: an.adjust_hue(y, factors[3])]
  for order in ([0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]):
    want = x
    for i in order:
      want = np.clip(numpy_ops[i](want), 0.0, 1.0)
    got = jax.jit(ad.color_jitter)(x, jnp.asarray(factors), jnp.asarray(order))
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-6, err_msg=str(order))


def _views(plan, images, seed=0, step=0):
  batch = {"view_a": images, "view_b": images}
  return jax.jit(lambda b, s: ad.augment_batch(plan, b, seed, s))(batch, jnp.int32(step))


def test_views_are_keyed_by_seed_step_and_global_example():
  images = (np.random.default_rng(1).random((8, 12, 12, 3)) * 255).astype(np.uint8)
  plan = _plan()
  a = _views(plan, images, step=3)
  again = _views(plan, images, step=3)
  np.testing.assert_array_equal(np.asarray(a["view_a"]), np.asarray(again["view_a"]))
  # Example i's view does not depend on the batch it travels in (multi-process / resume exactness).
  first_half = _views(plan, images[:4], step=3)
  np.testing.assert_array_equal(np.asarray(a["view_a"])[:4], np.asarray(first_half["view_a"]))
  # The two views of an example, another step and another seed draw differently.
  assert not np.allclose(np.asarray(a["view_a"]), np.asarray(a["view_b"]))
  assert not np.allclose(np.asarray(a["view_a"]), np.asarray(_views(plan, images, step=4)["view_a"]))
  assert not np.allclose(np.asarray(a["view_a"]), np.asarray(_views(plan, images, seed=1, step=3)["view_a"]))
  assert a["view_a"].dtype == jnp.float32
  assert float(jnp.min(a["view_a"])) >= 0.0 and float(jnp.max(a["view_a"])) <= 1.0


def test_draw_frequencies_follow_the_plan():
  n = 512
  image = (_image(3, 8, seed=2) * 255).astype(np.uint8)
  images = np.broadcast_to(image, (n,) + image.shape).copy()
  x = image.astype(np.float32) / 255.0
  off = dict(flip=False, color_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, additive_brightness=0.0,
             std_contrast=0.0)
  flipped = np.asarray(_views(_plan(**{**off, "flip": True}), images)["view_a"])
  is_flip = np.all(np.isclose(flipped, x[:, ::-1], atol=1e-6), axis=(1, 2, 3))
  is_same = np.all(np.isclose(flipped, x, atol=1e-6), axis=(1, 2, 3))
  assert np.all(is_flip | is_same)
  assert 0.42 < is_flip.mean() < 0.58  # Binomial(512, 0.5): +-3.5 sd
  gray = np.asarray(_views(_plan(**{**off, "grayscale_prob": 0.2}), images)["view_a"])
  is_gray = np.all(np.isclose(gray, an.to_grayscale(x), atol=1e-6), axis=(1, 2, 3))
  assert np.all(is_gray | np.all(np.isclose(gray, x, atol=1e-6), axis=(1, 2, 3)))
  assert 0.14 < is_gray.mean() < 0.26  # Binomial(512, 0.2): +-3.4 sd
  colour = np.asarray(_views(_plan(**{**off, "color_prob": 0.8}), images)["view_a"])
  changed = ~np.all(np.isclose(colour, x, atol=1e-6), axis=(1, 2, 3))
  assert 0.74 < changed.mean() < 0.86  # Binomial(512, 0.8): +-3.4 sd


def test_host_part_sends_uint8_of_the_geometric_ops_only():
  aug = tiny_config().aug
  aug.crop_mode, aug.rotation_degrees = "fixed", 10.0
  image = (np.random.default_rng(3).random((20, 24, 3)) * 255).astype(np.uint8)
  sent = an.make_view_fn(aug, 12, 3, on_device=True)(image, (5, 7))
  host_plan = view_plan.ViewPlan.from_config(aug, 12, 3).host_part()
  float_view = view_plan.apply(host_plan, an.NUMPY_OPS, image, an.op_rngs((5, 7)), seed=(5, 7))
  assert sent.dtype == np.uint8
  np.testing.assert_array_equal(sent, np.round(float_view * 255).astype(np.uint8))
  assert not host_plan.flip and host_plan.color_prob == 0 and host_plan.blur_prob == 0
  assert host_plan.rotation_degrees == 10.0 and host_plan.crop


def test_train_step_with_device_augmentation_is_sharding_invariant_and_moves_the_parameters(tmp_path):
  from medssl_jax import methods
  from medssl_jax.training.checkpoint import Checkpointer
  from medssl_jax.training.sharding import make_mesh, to_global

  config = tiny_config(batch_size=8, image_size=16)
  config.aug.on_device = True
  batch = methods.synthetic_batch(config, np.random.default_rng(0))
  assert batch["view_a"].dtype == np.uint8
  finals = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = make_mesh(devices)
    state = methods.create_state(config, mesh, jax.random.key(0))
    before = jax.tree_util.tree_map(np.asarray, state.params)
    step = methods.jit_train_step(config)
    for _ in range(2):
      state, metrics = step(state, to_global(batch, mesh))
    finals.append(jax.tree_util.tree_map(np.asarray, state.params))
    assert np.isfinite(float(metrics["loss"]))
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(before),
                                                            jax.tree_util.tree_leaves(finals[0])))
  assert moved > 1e-4
  for a, b in zip(jax.tree_util.tree_leaves(finals[0]), jax.tree_util.tree_leaves(finals[1])):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=2e-4)
  # Resume: one step, checkpoint, restore into a fresh state, one more step == two steps straight.
  mesh = make_mesh(jax.devices()[:1])
  step = methods.jit_train_step(config)
  state, _ = step(methods.create_state(config, mesh, jax.random.key(0)), to_global(batch, mesh))
  ckpt = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
  ckpt.save(1, state)
  restored = ckpt.restore(methods.create_state(config, mesh, jax.random.key(1)))
  assert int(restored.step) == 1
  restored, _ = step(restored, to_global(batch, mesh))
  for a, b in zip(jax.tree_util.tree_leaves(finals[0]), jax.tree_util.tree_leaves(restored.params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_fine_tuning_refuses_device_augmentation(tmp_path):
  from medssl_jax.runs import classify
  from medssl_jax.errors import UserError

  config = tiny_config()
  config.mode, config.finetune.init, config.aug.on_device = "finetune", "random", True
  with pytest.raises(UserError, match="aug.on_device=True applies to pretraining only"):
    classify.finetune(config, str(tmp_path))


# ---- aug.on_device = True | False | 'auto' ----------------------------------------------------


@pytest.mark.parametrize("backend,want", [("gpu", True), ("tpu", True), ("cuda", True), ("cpu", False),
                                          ("METAL", False)])
def test_auto_is_on_for_an_accelerator_and_off_on_the_cpu(backend, want):
  assert ad.resolve_on_device("auto", backend) is want
  assert ad.resolve_on_device(tiny_config().aug.on_device, backend) is want  # the default is 'auto'
  assert ad.resolve_on_device(True, backend) is True and ad.resolve_on_device(False, backend) is False
  assert ad.resolve_on_device(np.bool_(True), backend) is True


def test_the_setting_holds_true_false_or_auto_and_refuses_anything_else():
  from medssl_jax import settings
  from medssl_jax.errors import UserError
  aug = tiny_config().aug
  assert aug.on_device == "auto" and not aug.on_device  # unresolved, 'auto' reads as off
  assert json.loads(tiny_config().to_json_best_effort())["aug"]["on_device"] == "auto"
  for value, want in [(True, True), ("FALSE", False), ("true", True), (" Auto ", "auto"), (False, False)]:
    aug.on_device = value
    assert aug.on_device == want and type(aug.on_device) is (bool if isinstance(want, bool) else settings.OnDeviceAuto)
  for bad in ("yes", 1, None):
    with pytest.raises(ValueError, match="expected True, False or 'auto'"):
      aug.on_device = bad
  with pytest.raises(UserError, match="expected True, False or 'auto'"):
    ad.resolve_on_device("sometimes", "gpu")
  copied = copy.deepcopy(tiny_config())
  copied.aug.on_device = True  # a copy keeps the field's type: True, False and 'auto' all fit
  assert pickle.loads(pickle.dumps(copied)).aug.on_device is True
  assert not pickle.loads(pickle.dumps(tiny_config())).aug.on_device  # grain workers get the config pickled


@pytest.mark.parametrize("arg,want", [("True", True), ("false", False), ("auto", "auto"), (None, True)])
def test_the_command_line_sets_it(arg, want):
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  flag = "--config.aug.on_device" + ("" if arg is None else f"={arg}")  # bare: a boolean flag
  argv = ["x", "--config=configs/demo.py", flag]
  config_flags.DEFINE_config_file("config", None, "c", flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  assert fv.config.aug.on_device == want and bool(fv.config.aug.on_device) is bool(want is True)


def test_pretraining_resolves_auto_once_and_leaves_the_callers_config(tmp_path):
  from medssl_jax.runs import pretrain
  config = tiny_config()
  on_gpu, on = pretrain.resolve_on_device(config, "gpu")
  assert on is True and on_gpu.aug.on_device is True and on_gpu is not config
  assert config.aug.on_device == "auto"
  same, on = pretrain.resolve_on_device(on_gpu, "cpu")  # an explicit value stands, no copy
  assert on is True and same is on_gpu
  on_cpu, on = pretrain.resolve_on_device(config, "cpu")
  assert on is False and on_cpu.aug.on_device is False
  plain = ml_collections.ConfigDict(json.loads(config.to_json_best_effort()))  # rebuilt from JSON: a str field
  assert type(plain.aug.on_device) is str
  assert pretrain.resolve_on_device(plain, "tpu")[0].aug.on_device is True


def test_segmentation_takes_auto_as_host_augmentation_and_refuses_true():
  from medssl_jax.runs import segment
  from medssl_jax.errors import UserError
  config = tiny_config()
  config.mode, config.finetune.task, config.data.source, config.data.pipeline = "finetune", "segmentation", "seg_manifest", "numpy"
  config.finetune.val_split = ""
  config.aug.on_device = True
  with pytest.raises(UserError, match="aug.on_device=True applies to pretraining only"):
    segment.check_config(config)
  config.aug.on_device = "auto"
  try:
    segment.check_config(config)
  except UserError as e:  # a later check may refuse this tiny config; not for aug.on_device
    assert "on_device" not in str(e)
