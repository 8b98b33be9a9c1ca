"""BiT's ResNet v2 (medssl_jax/models/bit.py): weight standardisation by hand, the settings it refuses,
and a short fine-tuning run with `model.arch='bit'` (its forward pass against timm's BiT is in
tests/weights/test_bit_weights.py)."""
import jax
import numpy as np
import pytest
from scipy import signal

from configs.base import get_base_config
from medssl_jax import main as main_lib
from medssl_jax.errors import UserError
from medssl_jax.models import bit
from medssl_jax.models.contrastive import check_arch
from medssl_jax.training import checkpoint as ckpt_lib


def test_std_conv_standardises_each_output_kernel_then_convolves():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 6, 6, 2)).astype(np.float32)
  conv = bit.StdConv(3, (3, 3), padding=1)
  params = conv.init(jax.random.key(0), x)
  kernel = rng.normal(2.0, 3.0, (3, 3, 2, 3)).astype(np.float32)
  y = np.asarray(conv.apply({"params": {"kernel": kernel}}, x))
  # NumPy: per output channel, (w - mean) / sqrt(var + eps) over (h, w, in); then a cross-correlation.
  w = (kernel - kernel.mean(axis=(0, 1, 2))) / np.sqrt(kernel.var(axis=(0, 1, 2)) + bit.WS_EPS)
  want = np.zeros((6, 6, 3))
  for o in range(3):
    for i in range(2):
      want[..., o] += signal.correlate2d(x[0, ..., i], w[..., i, o], mode="same")
  np.testing.assert_allclose(y[0], want, rtol=1e-4, atol=1e-4)
  assert params["params"]["kernel"].shape == (3, 3, 2, 3)
  # A kernel's scale and offset do not matter: standardisation removes them.
  y2 = np.asarray(conv.apply({"params": {"kernel": 5.0 * kernel + 1.0}}, x))
  np.testing.assert_allclose(y2, y, rtol=1e-4, atol=1e-4)


def test_shapes_widths_and_the_same_output_in_train_and_eval():
  x = np.random.default_rng(1).random((2, 32, 32, 3)).astype(np.float32)
  m = bit.BiT(depth=50, width=0.5, input_norm="inception")
  v = m.init(jax.random.key(0), x)
  assert set(v) == {"params", "batch_stats"} and set(v["batch_stats"]) == {"placeholder"}
  f_train, f_eval = m.apply(v, x, train=True), m.apply(v, x, train=False)
  assert f_train.shape == (2, bit.feature_dim(0.5)) == (2, 1024)
  np.testing.assert_array_equal(np.asarray(f_train), np.asarray(f_eval))  # no batch statistics
  assert bit.valid_width(1.0) and bit.valid_width(0.5) and bit.valid_width(3) and not bit.valid_width(0.25)


def _model_cfg(**kw):
  c = get_base_config().model
  c.arch, c.depth, c.width = "bit", 50, 1.0
  for k, v in kw.items():
    setattr(c, k, v)
  return c


@pytest.mark.parametrize("kw,message", [
    ({"depth": 18}, r"model\.depth=18 is not a BiT depth"),
    ({"width": 0.25}, r"model\.width=0\.25 for model\.arch='bit': expected a multiple of 0\.5"),
    ({"input_norm": "imagenet"}, r"model\.input_norm='imagenet': expected one of \['inception', 'none'\] for BiT"),
    ({"downsample_padding": "symmetric"}, r"model\.arch='bit' does not have the ResNet settings"),
])
def test_settings_bit_does_not_have_are_refused_in_one_line(kw, message):
  with pytest.raises(UserError, match=message):
    check_arch(_model_cfg(**kw))
  check_arch(_model_cfg())


def test_a_short_finetune_with_a_bit_encoder_moves_its_weights(tmp_path):
  c = get_base_config()
  c.mode = "finetune"
  c.finetune.task, c.finetune.init, c.finetune.val_split = "multiclass", "random", ""
  c.data.source, c.data.image_size, c.data.channels = "synthetic", 32, 3
  c.data.synthetic.num_cases, c.data.synthetic.image_size = 32, 32
  c.data.eval_split = "test"
  c.model.arch, c.model.depth, c.model.width, c.model.input_norm = "bit", 50, 0.5, "inception"
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling, c.optim.warmup_steps = "adam", 1e-3, "none", 0
  c.train.batch_size, c.train.num_steps, c.train.log_every, c.train.checkpoint_every = 8, 2, 1, 1
  c.eval.num_replicates = 50
  workdir = str(tmp_path / "run")
  results = main_lib.run(c, workdir)
  assert results["completed"] and results["final_step"] == 2
  assert np.isfinite(results["test"]["top1"]["value"])
  first, _, _ = ckpt_lib.restore_weights(workdir, step=1)
  last, batch_stats, step = ckpt_lib.restore_weights(workdir)
  assert step == 2 and set(batch_stats["encoder"]) == {"placeholder"}
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(first["encoder"]),
                                                     jax.tree_util.tree_leaves(last["encoder"]))]
  assert all(moved), f"{sum(moved)} of {len(moved)} encoder arrays moved in step 2"
