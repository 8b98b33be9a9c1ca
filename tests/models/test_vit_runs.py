"""`model.arch='vit'` in runs: a SimCLR pretraining run, a fine-tuning run starting from its
encoder, linear evaluation and `medssl-jax features` (dimension k x width), and the one-line
refusals of ViT settings. Tiny ViT ('test' variant: 2 blocks, width 48, patch 8) on 16 px images."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax.commands import features
from medssl_jax import main as main_lib
from medssl_jax.errors import UserError
from medssl_jax.models import classifier_from_config
from medssl_jax.models.contrastive import from_config, vit_feature_dim
from medssl_jax.models.vit import ViT, PRESETS
from medssl_jax.training import checkpoint as ckpt_lib
from tests.helpers import capture_loaded_encoder
from tests.helpers import tiny_config

SIZE = 16


def vit_config(mode="pretrain", steps=2, tokens=1):
  c = tiny_config(batch_size=8, image_size=SIZE, steps=steps)
  c.mode = mode
  c.model.arch, c.model.vit_variant, c.model.vit_tokens = "vit", "test", tokens
  c.data.source = "synthetic"
  c.data.synthetic.num_cases, c.data.synthetic.image_size = 16, SIZE
  c.aug.blur_prob = 0.0
  c.train.log_every = c.train.checkpoint_every = steps
  c.train.prefetch = 1
  c.optim.name, c.optim.lr_scaling, c.optim.base_lr, c.optim.warmup_steps = "sgd", "none", 0.01, 0
  c.finetune.val_split, c.eval.num_replicates = "", 20
  return c


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("vit") / "simclr")
  results = main_lib.run(vit_config("pretrain", steps=2, tokens=2), workdir)
  return workdir, results


def test_simclr_run_trains_a_vit_encoder(pretrained):
  workdir, results = pretrained
  assert results["completed"]
  assert all(np.isfinite(loss) for _, loss in results["loss_history"])
  params, batch_stats, step = ckpt_lib.restore_weights(workdir)
  assert step == 2
  enc = params["encoder"]
  p = PRESETS["test"]
  assert enc["pos_embed"].shape == (1, (SIZE // p["patch_size"]) ** 2 + 1, p["dim"])
  assert sorted(k for k in enc if k.startswith("blocks_")) == ["blocks_0", "blocks_1"]
  # the ViT's only batch_stats entry is the documented constant placeholder; the head's BN has real ones
  np.testing.assert_array_equal(batch_stats["encoder"]["placeholder"], 0.0)
  assert "head" in batch_stats
  # the head sees k x width features (2 x 48)
  first = params["head"]["dense_0"]["kernel"]
  assert first.shape[0] == 2 * p["dim"]


def test_finetune_and_linear_eval_start_from_the_vit_encoder(pretrained, tmp_path, monkeypatch):
  workdir, _ = pretrained
  saved, _, _ = ckpt_lib.restore_weights(workdir)
  at_start = capture_loaded_encoder(monkeypatch)
  for mode in ("finetune", "linear_eval"):
    c = vit_config(mode, steps=2, tokens=2)
    c.finetune.init, c.train.init_checkpoint = "pretrained", workdir
    results = main_lib.run(c, str(tmp_path / mode))
    assert results["completed"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, at_start["params"], saved["encoder"])
    after, _, _ = ckpt_lib.restore_weights(str(tmp_path / mode))
    assert after["classifier"]["kernel"].shape == (2 * PRESETS["test"]["dim"], 4)
    if mode == "linear_eval":  # the frozen encoder did not move
      jax.tree_util.tree_map(np.testing.assert_array_equal, after["encoder"], saved["encoder"])


def test_features_are_k_class_tokens_of_the_encoder(pretrained):
  workdir, _ = pretrained
  c = vit_config("finetune", tokens=2)
  c.data.eval_split = "test"
  out = features.extract(c, workdir, "test", batch_size=8)
  assert out["features"].shape[1] == 2 * 48 == vit_feature_dim(c.model)
  # against the ViT applied directly to the same preprocessed images, with the checkpoint's weights
  params, _, _ = ckpt_lib.restore_weights(workdir)
  from input_pipeline import backends, sources
  src = sources.load_source(c.data, "test")
  images, _ = backends.get("auto").make_eval_arrays(src, SIZE, 3, crop_fraction=c.aug.eval_crop_fraction)
  want = ViT(**PRESETS["test"], return_last_k_cls=2).apply({"params": params["encoder"]}, images, train=False)
  np.testing.assert_allclose(out["features"], np.asarray(want), rtol=1e-5, atol=1e-5)
  assert np.std(out["features"], axis=0).mean() > 0
  # the last `width` features are those of the usual class token (k = 1)
  c1 = vit_config("finetune", tokens=1)
  out1 = features.extract(c1, workdir, "test", batch_size=8)
  np.testing.assert_allclose(out["features"][:, 48:], out1["features"], rtol=1e-5, atol=1e-5)


def test_vit_settings_are_refused_in_one_line(pretrained):
  workdir, _ = pretrained
  c = vit_config()
  c.model.vit_variant = "L/16"
  with pytest.raises(UserError, match="model.vit_variant='L/16'"):
    from_config(c.model)
  c = vit_config()
  c.model.vit_tokens = 3
  with pytest.raises(UserError, match="model.vit_tokens=3: expected an integer from 1 .* the 2 blocks"):
    from_config(c.model)
  c = vit_config()
  c.model.downsample_padding = "symmetric"
  with pytest.raises(UserError, match="does not have the ResNet settings"):
    classifier_from_config(c.model, 2, frozen_encoder=True)
  model = from_config(vit_config().model)
  with pytest.raises(UserError, match=r"image size 20x20 \(data.image_size\) is not a multiple of the patch size 8 of the ViT"):
    model.init(jax.random.key(0), jnp.zeros((2, 20, 20, 3)), train=False)
  # a checkpoint made at another image size (position embeddings) or variant is refused in one line
  other = vit_config("finetune")
  other.data.image_size = other.data.synthetic.image_size = 24
  other.finetune.init, other.train.init_checkpoint = "pretrained", workdir
  with pytest.raises(UserError, match=r"data.image_size=16 there, 24 here.*--config.data.image_size=16") as e:
    main_lib.run(other, workdir + "_other_size")
  assert "\n" not in str(e.value)
  # a ResNet run that points at the ViT checkpoint is refused naming the architecture
  from medssl_jax import weights
  resnet = vit_config("finetune")
  resnet.model.arch = "resnet"
  with pytest.raises(UserError, match="its weights are a model.arch='vit' encoder, this run builds model.arch='resnet'"):
    weights.check_settings(workdir, resnet.model, "train.init_checkpoint", data_cfg=resnet.data)
  # another variant: refused by its name, not by a shape listing
  variant = vit_config("finetune")
  variant.model.vit_variant = "Ti/16"
  with pytest.raises(UserError, match="model.vit_variant='test' there, 'Ti/16' here.*compute something else"):
    weights.check_settings(workdir, variant.model, "train.init_checkpoint", data_cfg=variant.data)


def test_a_vit_without_a_timm_counterpart_is_not_exported(pretrained, tmp_path):
  from medssl_jax.commands import export_weights
  workdir, _ = pretrained
  with pytest.raises(UserError, match=r"the checkpoint's ViT-test has no timm counterpart here"):
    export_weights.export_weights(workdir, "timm", str(tmp_path / "x.safetensors"))
