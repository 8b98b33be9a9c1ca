"""configs/shenzhen_transfer.py (MoCo-CXR's external transfer) and `finetune.num_epochs`, the
fine-tuning length in epochs over the labelled images that it uses."""
import json
import math

import pytest

from configs import chexpert_finetune, shenzhen_transfer
from medssl_jax.runs import supervised
from medssl_jax import main as main_lib
from medssl_jax.errors import UserError
from tests.helpers import write_manifest


def test_paper_settings_and_fractions():
  c = shenzhen_transfer.get_config("fraction=0.0625")
  assert c.finetune.label_fraction == 0.0625 and c.finetune.num_epochs == 220
  assert (c.optim.name, c.optim.base_lr, c.train.batch_size) == ("adam", 3e-5, 16)
  assert (c.model.arch, c.model.depth, c.data.image_size) == ("resnet", 18, 224)
  # The same fine-tuning settings as MoCo-CXR's CheXpert protocol (the paper reuses them).
  cx = chexpert_finetune.get_config("mococxr")
  for key in ("optim.name", "optim.base_lr", "optim.weight_decay", "optim.schedule", "train.batch_size",
              "aug.rotation_degrees", "aug.flip", "aug.crop", "aug.eval_crop_fraction"):
    group, name = key.split(".")
    assert c[group][name] == cx[group][name], key
  assert shenzhen_transfer.get_config().finetune.label_fraction == 1.0
  for bad in ("fraction=0.1", "fraction=x", "frac=0.25"):
    with pytest.raises(ValueError, match="0.0625, 0.25, 1"):
      shenzhen_transfer.get_config(bad)


def test_training_steps_from_epochs():
  c = shenzhen_transfer.get_config()
  assert supervised.training_steps(c, 29) == math.ceil(220 * 29 / 16) == 399
  assert supervised.training_steps(c, 463) == 6367  # 220 x 463 / 16 = 6366.25
  with c.unlocked():
    c.finetune.num_epochs = 0.0
    c.train.num_steps = 123
  assert supervised.training_steps(c, 463) == 123
  with c.unlocked():
    c.finetune.num_epochs = -1.0
  with pytest.raises(UserError, match="finetune.num_epochs=-1 must be >= 0"):
    supervised.training_steps(c, 463)


def test_a_run_trains_its_epochs_over_the_labelled_images(tmp_path):
  # 48 training images (24 cases per class), 4 val, 4 test; 25% of the cases labelled = 12 images;
  # 2 epochs at batch 8 = ceil(2 x 12 / 8) = 3 steps, whatever train.num_steps says.
  manifest = write_manifest(tmp_path / "data", 56, splits=lambda i: "train" if i < 48 else ("val" if i < 52 else "test"))
  c = shenzhen_transfer.get_config("fraction=0.25")
  with c.unlocked():
    c.data.path, c.data.image_size = manifest, 16
    c.model.depth, c.model.width, c.model.stem = 18, 0.125, "small"
    c.train.batch_size, c.train.num_steps, c.train.log_every, c.train.checkpoint_every = 8, 1000, 1, 1000
    c.finetune.init, c.finetune.num_epochs, c.eval.num_replicates = "random", 2.0, 10
  out = main_lib.run(c, str(tmp_path / "run"))
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert out["num_steps"] == results["num_steps"] == 3 and results["completed"]
  assert results["num_train_images"] == 12
