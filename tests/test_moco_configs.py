"""configs/moco_v2.py and configs/chexpert_moco.py: the papers' numbers, validation by the MoCo v2
method, and one real step of the CPU variants."""
import math

import jax
import numpy as np
import pytest

from configs import chexpert_moco, chexpert_simclr, demo, moco_v2
from medssl_jax import methods
from medssl_jax.training import optim
from medssl_jax.training.sharding import make_mesh, to_global

ALL = [(moco_v2, ""), (moco_v2, "demo"), (moco_v2, "local"), (chexpert_moco, ""), (chexpert_moco, "densenet121")]
# Published parameter counts without the 1000-way classifier (torchvision): resnet18 11,689,512 -
# (512 x 1000 + 1000); resnet50 25,557,032 - (2048 x 1000 + 1000); densenet121 7,978,856 - (1024 x 1000 + 1000).
ENCODER_PARAMS = {("resnet", 18): 11_689_512 - 513_000, ("resnet", 50): 25_557_032 - 2_049_000,
                  ("densenet", 121): 7_978_856 - 1_025_000}


def _get(module, variant):
  return module.get_config(variant) if variant else module.get_config()


@pytest.mark.parametrize("module,variant", ALL)
def test_validates_as_moco_v2_and_builds_its_optimiser(module, variant):
  c = _get(module, variant)
  assert c.method == "moco_v2" and c.pairing == "views"
  methods.get("moco_v2").validate(c)
  # SGD is not subject to the LARS base-lr pairing check.
  optim.make_optimizer(c.optim, c.train.batch_size, c.train.num_steps)
  assert c.optim.name == "sgd"


def test_lars_check_refuses_lars_only():
  optim.check_lr_pairing("sgd", 0.03, "linear")
  optim.check_lr_pairing("sgd", 1e-4, "none")
  with pytest.raises(ValueError, match="not a pairing the SimCLR reference uses for LARS"):
    optim.check_lr_pairing("lars", 0.03, "linear")


def test_moco_v2_defaults_are_the_references():
  c = moco_v2.get_config()
  assert (c.moco.queue_size, c.moco.momentum, c.moco.temperature, c.model.head_dim, c.model.head_layers) == \
      (65_536, 0.999, 0.2, 128, 2)
  assert (c.optim.name, c.optim.base_lr, c.optim.lr_scaling, c.optim.weight_decay, c.optim.momentum,
          c.optim.schedule, c.optim.warmup_steps) == ("sgd", 0.03, "linear", 1e-4, 0.9, "cosine", 0)
  assert (c.model.arch, c.model.depth, c.model.width, c.data.image_size, c.train.batch_size) == \
      ("resnet", 50, 1.0, 224, 256)
  assert optim.scaled_learning_rate(c.optim.base_lr, c.train.batch_size, c.optim.lr_scaling) == 0.03
  assert c.train.num_steps == 200 * 5004  # 200 epochs of floor(1,281,167 / 256) batches
  # "aug+": crop 0.2-1, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8 = strength 0.5, grayscale 0.2, blur 0.5, flip
  a = c.aug
  assert (a.crop, a.crop_mode, a.crop_area_min, a.crop_area_max) == (True, "inception", 0.2, 1.0)
  assert (0.8 * a.color_strength, 0.2 * a.color_strength, a.color_prob) == (0.4, 0.1, 0.8)
  assert (a.grayscale_prob, a.blur_prob, a.flip, a.rotation_degrees) == (0.2, 0.5, True, 0.0)
  assert (c.moco.bn, c.moco.bn_groups) == ("shuffle", 8)


def test_local_variant_matches_the_simclr_local_run_it_is_compared_with():
  m, s = moco_v2.get_config("local"), chexpert_simclr.get_config("local")
  for key in ("data.source", "data.path", "data.image_size", "data.channels", "model.arch", "model.depth",
              "model.width", "model.stem", "model.head_layers", "model.head_dim", "model.dtype",
              "train.batch_size", "train.num_steps", "aug.crop_area_min", "aug.color_strength",
              "aug.color_prob", "aug.blur_prob", "aug.rotation_degrees", "aug.flip", "probe.enabled"):
    group, name = key.split(".")
    assert m[group][name] == s[group][name], key
  # MoCo's own objective and optimiser rule.
  assert (m.moco.temperature, m.optim.name, m.optim.base_lr, m.optim.lr_scaling) == (0.2, "sgd", 0.03, "linear")
  assert optim.scaled_learning_rate(m.optim.base_lr, 128, m.optim.lr_scaling) == 0.015
  assert m.moco.queue_size == 1024 and m.moco.queue_size % m.train.batch_size == 0
  assert m.train.batch_size % m.moco.bn_groups == 0


def test_demo_variant_is_the_readme_demo_data_and_model():
  m, d = moco_v2.get_config("demo"), demo.get_config()
  for group in ("data",):
    assert m[group].to_dict() == d[group].to_dict()
  for key in ("depth", "width", "stem", "head_dim"):
    assert m.model[key] == d.model[key], key
  assert (m.train.batch_size, m.train.num_steps) == (d.train.batch_size, d.train.num_steps) == (128, 300)
  assert m.moco.queue_size % m.train.batch_size == 0 and m.train.batch_size % m.moco.bn_groups == 0


@pytest.mark.parametrize("variant,arch,depth", [("", "resnet", 18), ("densenet121", "densenet", 121)])
def test_mococxr_numbers_from_the_paper(variant, arch, depth):
  c = chexpert_moco.get_config(variant)
  assert (c.model.arch, c.model.depth, c.model.width, c.model.stem) == (arch, depth, 1.0, "imagenet")
  assert (c.data.tfds_name, c.data.train_split, c.data.image_size) == ("chexpert", "train", 224)
  a = c.aug  # rotation 10 degrees + horizontal flip only (Sec. 3.2)
  assert (a.crop, a.rotation_degrees, a.flip, a.color_prob, a.grayscale_prob, a.blur_prob) == \
      (False, 10.0, True, 0.0, 0.0, 0.0)
  assert (a.additive_brightness, a.std_contrast) == (0.0, 0.0)
  assert chexpert_moco.LR_SWEEP == (1e-2, 1e-3, 1e-4, 1e-5)
  assert (c.optim.name, c.optim.base_lr, c.optim.lr_scaling) == ("sgd", 1e-4, "none")  # Table 2's best
  assert optim.scaled_learning_rate(c.optim.base_lr, c.train.batch_size, c.optim.lr_scaling) == 1e-4
  # MoCo defaults kept: momentum, weight decay, feature dimension; MoCo-CXR's queue; batch 16.
  assert (c.moco.momentum, c.optim.weight_decay, c.model.head_dim, c.moco.temperature) == (0.999, 1e-4, 128, 0.2)
  assert (c.moco.queue_size, c.train.batch_size, c.moco.bn) == (24_576, 16, "global")
  assert c.train.num_steps == math.ceil(20 * 223_414 / 16) == 279_268
  assert c.train.init_checkpoint == ""   # ImageNet init not available (docstring)


@pytest.mark.parametrize("module,variant", ALL)
def test_encoder_is_the_published_size(module, variant):
  c = _get(module, variant)
  model = methods.get("moco_v2").build_model(c)
  x = np.zeros((2, c.data.image_size, c.data.image_size, c.data.channels), np.float32)
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=True))
  n = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(v["params"]["encoder"]))
  if c.model.width == 1.0:
    assert n == ENCODER_PARAMS[(c.model.arch, c.model.depth)]
  else:  # ResNet-18 at 0.25x: 16 base channels, small stem
    assert n < ENCODER_PARAMS[("resnet", 18)] / 10
  # MoCo v2 head: Linear(d, d) + ReLU + Linear(d, head_dim), with biases, no batch norm.
  d = v["params"]["head"]["dense_0"]["kernel"].shape[0]
  assert "bn_0" not in v["params"]["head"] and v["params"]["head"]["dense_1"]["kernel"].shape == (d, c.model.head_dim)


@pytest.mark.parametrize("variant", ["demo", "local"])
def test_cpu_variants_build_a_state_and_take_a_step(variant):
  c = moco_v2.get_config(variant)
  with c.unlocked():   # cheap: 16 pairs of 16 px (16 = 8 BN groups x 2, divides the queue)
    c.data.image_size, c.train.batch_size = 16, 16
  methods.get("moco_v2").validate(c)
  mesh = make_mesh()
  state = methods.create_state(c, mesh, jax.random.key(0))
  assert state.extra["queue"].shape == (c.moco.queue_size, c.model.head_dim)
  p0 = jax.device_get(state.params)
  step = methods.jit_train_step(c)
  batch = methods.synthetic_batch(c, np.random.default_rng(0))
  state, metrics = step(state, to_global(batch, mesh))
  m = jax.device_get(metrics)
  assert np.isfinite(m["loss"]) and int(state.step) == 1 and int(state.extra["queue_ptr"]) == 16
  # InfoNCE over 1 positive + K queued keys, unit vectors: logits in [-1/T, 1/T], so the loss lies in
  # (0, log(1 + K) + 2/T); a random network scores its two views alike, so below log(1 + K).
  assert 0.0 < float(m["loss"]) < math.log(1 + c.moco.queue_size)
  assert 0.0 <= float(m["contrastive_acc"]) <= 1.0
  # The first step's learning rate is the peak (no warm-up): the query head moved.
  p1 = jax.device_get(state.params)
  assert np.abs(p1["head"]["dense_1"]["kernel"] - p0["head"]["dense_1"]["kernel"]).max() > 0
