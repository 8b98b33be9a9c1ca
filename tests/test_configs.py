"""Every shipped config loads, is locked, and carries the papers' numbers it claims."""
import glob
import os

import pytest

from configs import (chexpert_finetune, chexpert_simclr, demo, derm_finetune, derm_micle, derm_simclr,
                     truong_linear)
from medssl_jax import optim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {"demo": [""], "derm_simclr": ["", "local"], "chexpert_simclr": ["", "local"],
            "derm_micle": ["", "partial", "local", "local,partial"], "covid_cxr_micle": ["", "simclr"],
            "derm_finetune": ["", "linear", "local", "local_linear"],
            "chexpert_finetune": ["", "mococxr", "local"], "truong_linear": ["", "finetune"]}


def test_every_config_file_is_covered():
  names = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py"))}
  assert names - {"__init__", "base"} == set(VARIANTS)


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in VARIANTS.items() for v in vs])
def test_loads_locked(name, variant):
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  c = module.get_config(variant) if variant else module.get_config()
  with pytest.raises(AttributeError):
    c.train.no_such_key = 1
  optim.learning_rate_schedule(c.optim, c.train.batch_size, c.train.num_steps)  # valid schedule
  assert c.train.batch_size > 0 and c.data.image_size > 0


def test_paper_numbers():
  d, x = derm_simclr.get_config(), chexpert_simclr.get_config()
  assert (d.train.batch_size, d.optim.base_lr, d.train.num_steps, d.data.image_size) == (512, 0.3, 150_000, 224)
  assert (x.train.batch_size, x.optim.base_lr, x.train.num_steps, x.aug.blur_prob, x.aug.rotation_degrees,
          x.aug.color_strength) == (1024, 0.5, 100_000, 0.0, 45.0, 0.5)
  m = derm_micle.get_config()
  assert (m.method, m.train.batch_size, m.optim.base_lr, m.train.num_steps) == ("micle", 128, 0.1, 100_000)
  p = derm_micle.get_config("partial")
  assert (p.aug.color_prob, p.aug.blur_prob, p.aug.flip, p.aug.crop) == (0.0, 0.0, False, True)
  f = derm_finetune.get_config()
  assert (f.optim.name, f.optim.momentum, f.train.batch_size, f.train.num_steps, f.data.image_size) == \
      ("sgd", 0.9, 256, 30_000, 448)
  cx = chexpert_finetune.get_config()
  assert (cx.eval.task, cx.aug.rotation_degrees, cx.aug.additive_brightness, cx.aug.std_contrast) == \
      ("multilabel", 20.0, 0.2, 0.2)
  mc = chexpert_finetune.get_config("mococxr")
  assert (mc.optim.base_lr, mc.train.batch_size, mc.aug.rotation_degrees) == (3e-5, 16, 10.0)
  t = truong_linear.get_config()
  assert (t.mode, t.optim.name, t.optim.base_lr, t.train.batch_size) == ("linear_eval", "adam", 1e-3, 64)
  assert demo.get_config().probe.enabled


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match="unknown variant"):
    derm_simclr.get_config("huge")
