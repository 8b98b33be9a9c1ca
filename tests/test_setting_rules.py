"""The settings' rules (medssl_jax/setting_rules.py), key by key: each key of the table exists in the
base config, its default and every shipped config's value pass, a value outside it is refused in
one line naming the key, the value and the range, and the enums equal the code's own constants."""
import importlib
import math

import pytest

from configs.base import get_base_config
from input_pipeline import backends, view_plan
from input_pipeline.sources import nih
from medssl_jax import setting_rules
from medssl_jax.methods import base as methods_base
from medssl_jax.methods import moco_v2
from medssl_jax.models import classifier, contrastive, resnet
from medssl_jax.models.vit import INPUT_NORMS as VIT_INPUT_NORMS
from medssl_jax.runs import classify, supervised
from medssl_jax.training import optim
from tests.test_configs import VARIANTS

RULES = setting_rules.RULES


def _set(config, key, value):
  *groups, name = key.split(".")
  node = config
  for part in groups:
    node = node[part]
  node._fields[name] = value  # past ml_collections' type check: the rule is what is tested


def _outside(rule):
  """A value the rule refuses, of the key's own type where one exists."""
  if isinstance(rule, setting_rules.OneOf):
    return "no-such-value" if isinstance(rule.values[0], str) else 2
  if rule.lo > -math.inf:
    below = rule.lo - (1 if rule.integer else 0.5)
    return int(below) if rule.integer else (rule.lo if rule.lo_open else below)
  return rule.hi + 1


def test_every_rule_is_a_key_of_the_base_config():
  base = get_base_config()
  for key in RULES:
    assert setting_rules._get(base, key) is not setting_rules._MISSING, key


@pytest.mark.parametrize("key", sorted(RULES))
def test_a_value_outside_the_rule_is_one_line_naming_key_and_range(key):
  c = get_base_config()
  bad = _outside(RULES[key])
  _set(c, key, bad)
  with pytest.raises(setting_rules.SettingError) as e:
    setting_rules.check(c)
  message = str(e.value)
  assert message == f"{key}={bad!r}: expected {RULES[key].describe()}; set --config.{key} to such a value"
  assert "\n" not in message


def test_the_defaults_and_every_shipped_config_pass():
  setting_rules.check(get_base_config())
  for name, variants in VARIANTS.items():
    module = importlib.import_module(f"configs.{name}")
    for variant in variants:
      setting_rules.check(module.get_config(variant) if variant else module.get_config())


def test_range_descriptions_by_hand():
  assert setting_rules.POSITIVE_INT.describe() == "an integer >= 1"
  assert setting_rules.PROB.describe() == "a number in [0, 1]"
  assert setting_rules.FRACTION.describe() == "a number in (0, 1]"
  assert setting_rules.Range(0.0, 1.0, hi_open=True).describe() == "a number in [0, 1)"
  assert setting_rules.POSITIVE.describe() == "a number > 0"
  assert not setting_rules.PROB.ok(float("nan")) and not setting_rules.POSITIVE_INT.ok(True)


@pytest.mark.parametrize("values,message", [
    ({"aug.crop_area_min": 0.9, "aug.crop_area_max": 0.5}, "aug.crop_area_min=0.9, aug.crop_area_max=0.5: expected "
                                                           "aug.crop_area_min <= aug.crop_area_max"),
    ({"data.val_fraction": 0.5, "data.test_fraction": 0.5}, "expected data.val_fraction + data.test_fraction < 1"),
    ({"train.profile_steps": (5, 3)}, "train.profile_steps=(5, 3): expected train.profile_steps = (N, M) with "
                                      "0 < N <= M, or (0, 0) for no trace"),
])
def test_relations(values, message):
  c = get_base_config()
  for k, v in values.items():
    _set(c, k, v)
  with pytest.raises(setting_rules.SettingError, match=None) as e:
    setting_rules.check(c)
  assert message in str(e.value)


def test_enums_are_the_codes_own():
  """The table's enums against the constants the code dispatches on (so neither drifts)."""
  one_of = {k: set(r.values) for k, r in RULES.items() if isinstance(r, setting_rules.OneOf)}
  assert one_of["pairing"] == set(methods_base.PAIRINGS)
  assert one_of["data.pipeline"] == set(backends.NAMES)
  assert one_of["data.nih_target"] == set(nih.NIH_TARGETS) and one_of["data.nih_split"] == set(nih.NIH_SPLITS)
  assert one_of["aug.crop_mode"] == set(view_plan.CROP_MODES)
  assert one_of["model.arch"] == set(contrastive.ARCHS)
  assert one_of["model.downsample_padding"] == set(resnet.DOWNSAMPLE_PADDINGS)
  assert one_of["finetune.feature_norm"] == set(classifier.FEATURE_NORMS)
  assert one_of["finetune.init"] == set(supervised.INITS)
  assert one_of["finetune.task"] == set(classify.TASKS) | {"segmentation"}
  assert one_of["moco.bn"] == set(moco_v2.BN_MODES)
  assert one_of["model.input_norm"] == set(resnet.INPUT_NORMS) | set(VIT_INPUT_NORMS)
  assert one_of["finetune.head_init"] == set(classifier.HEAD_INITS) | {"auto"}
  base = get_base_config()
  for name in one_of["optim.name"]:  # each builds an optimiser, and another name does not
    for schedule in one_of["optim.schedule"]:
      base.optim.name, base.optim.schedule = name, schedule
      assert optim.make_optimizer(base.optim, 256, 10) is not None
  base.optim.name = "adamw"
  with pytest.raises(Exception):
    optim.make_optimizer(base.optim, 256, 10)
