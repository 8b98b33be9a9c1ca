"""Every shipped config loads, is locked, and carries the papers' numbers it claims."""
import glob
import math
import os
import subprocess
import sys

import pytest

from configs import (chexpert_finetune, chexpert_simclr, covid_cxr_micle, demo, derm_finetune, derm_micle,
                     derm_simclr, truong_dvme, truong_linear)
from medssl_jax import methods, settings
from medssl_jax.training import optim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {"demo": [""], "derm_simclr": ["", "local", "from_imagenet,weights=/w"],
            "chexpert_simclr": ["", "local", "from_imagenet,weights=/w,arch=r152_2x_sk0"],
            "derm_micle": ["", "partial", "local", "local,partial"], "covid_cxr_micle": ["", "simclr"],
            "derm_finetune": ["", "linear", "local", "local_linear", "imagenet,weights=/w"],
            "chexpert_finetune": ["", "mococxr", "mococxr,fraction=0.001", "mococxr,fraction=0.01",
                                  "mococxr,fraction=0.1", "mococxr,fraction=1", "local", "imagenet,weights=/w"],
            "truong_linear": ["", "finetune", "dino_finetune"], "moco_v2": ["", "demo", "local"],
            "chexpert_moco": ["", "densenet121", "from_imagenet,weights=/w"], "shenzhen_transfer": ["", "fraction=0.0625", "fraction=0.25"],
            "truong_dvme": ["", "concat", "multilabel"],
            "lung_segmentation": ["", "small", "smoke", "smoke,root=/tmp/lungseg", "small,size=32"],
            "fundus_segmentation": ["", "small", "smoke"], "ct_pe_classification": ["", "small"],
            "folder_simclr": ["", "linear", "local", "local_linear"], "byol": ["", "local"],
            "simsiam": ["", "local"], "barlow_twins": ["", "local"],
            "vicreg": ["", "local"], "dino": ["", "local"], "swav": ["", "local"]}


def _config(name, variant):
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  return module.get_config(variant) if variant else module.get_config()


def test_every_config_file_is_covered():
  names = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py"))}
  assert names - {"__init__", "base", "presets"} == set(VARIANTS)  # presets.py: what variants set, not a config


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
  assert (m.method, m.pairing, m.train.batch_size, m.optim.base_lr, m.train.num_steps) == ("simclr", "case", 128, 0.1, 100_000)
  p = derm_micle.get_config("partial")
  assert (p.aug.color_prob, p.aug.blur_prob, p.aug.flip, p.aug.crop) == (0.0, 0.0, False, True)
  f = derm_finetune.get_config()
  assert (f.optim.name, f.optim.momentum, f.train.batch_size, f.train.num_steps, f.data.image_size) == \
      ("sgd", 0.9, 256, 30_000, 448)
  cx = chexpert_finetune.get_config()
  assert (cx.finetune.task, cx.aug.rotation_degrees, cx.aug.additive_brightness, cx.aug.std_contrast) == \
      ("multilabel", 20.0, 0.2, 0.2)
  mc = chexpert_finetune.get_config("mococxr")
  assert (mc.optim.base_lr, mc.train.batch_size, mc.aug.rotation_degrees) == (3e-5, 16, 10.0)
  v = truong_dvme.get_config()
  assert (v.mode, v.dvme.lr, v.dvme.batch_size, v.dvme.plateau_factor, v.dvme.lr_patience, v.dvme.stop_patience,
          v.dvme.dropout_rate, v.dvme.proj_dim) == ("dvme", 1e-3, 64, 0.1, 5, 10, 0.2, 512)
  assert truong_dvme.get_config("concat").dvme.attention is False
  t = truong_linear.get_config()
  assert (t.mode, t.optim.name, t.optim.base_lr, t.train.batch_size) == ("linear_eval", "adam", 1e-3, 64)
  # Truong et al. App. B.1: 30-50 epochs, ReduceLROnPlateau x0.1 after 5 epochs, early stop after 10.
  f = t.finetune
  assert (f.num_epochs, f.min_epochs, f.eval_every_epochs, f.eval_every) == (50, 30, 1, 0)
  assert (f.plateau_factor, f.plateau_patience, f.early_stop_patience, f.select_metric) == (0.1, 5, 10, "loss")
  dino = truong_linear.get_config("dino_finetune")  # App. B.2
  assert (dino.mode, dino.optim.base_lr, dino.train.batch_size) == ("finetune", 1e-4, 16)
  assert demo.get_config().probe.enabled


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match="unknown variant"):
    derm_simclr.get_config("huge")


# SimCLR's own peak learning rate: 0.3 x 4096/256 = 4.8 at its batch of 4096, the largest batch
# its defaults train at. No shipped LARS run should step harder.
SIMCLR_PEAK_LR = 4.8


def _study_pretraining_configs():
  """The LARS runs of both studies at every scale (built without touching the data)."""
  from benchmarks import common
  from benchmarks import label_efficiency as study_a
  from benchmarks import micle_vs_simclr as study_b
  for scale, s in common.SCALES.items():
    yield f"study A pretrain ({scale})", study_a.pretrain_config("unused", s), s["batch"]
    for arm in study_b.ARMS:
      yield f"study B {arm} ({scale})", study_b.continue_config("unused", "ckpt", arm, s), s["covid_batch"]


def test_lars_base_lr_is_paired_with_its_scaling_rule_as_in_simclr():
  """Issue 18 item 2: base lr 0.5 (a linear-rule value) under the square-root rule gave a peak of
  5.66 at batch 128. Every LARS config and study run uses a base lr the SimCLR reference pairs
  with its rule, and a peak no higher than SimCLR's own."""
  runs = [(f"{n}:{v}", _config(n, v)) for n, vs in VARIANTS.items() for v in vs]
  runs += [(label, c) for label, c, _ in _study_pretraining_configs()]
  lars = [(label, c) for label, c in runs if c.optim.name == "lars"]
  assert len(lars) >= 15, [label for label, _ in lars]
  for label, c in lars:
    assert c.optim.lr_scaling in optim.SIMCLR_BASE_LR, label   # LARS pretraining scales with the batch
    lo, hi = optim.SIMCLR_BASE_LR[c.optim.lr_scaling]
    assert lo <= c.optim.base_lr <= hi, (label, c.optim.base_lr, c.optim.lr_scaling)
    optim.check_lr_pairing(c.optim.name, c.optim.base_lr, c.optim.lr_scaling)
    peak = optim.scaled_learning_rate(c.optim.base_lr, c.train.batch_size, c.optim.lr_scaling)
    assert 0 < peak <= SIMCLR_PEAK_LR, (label, peak)
  # The pairs chosen (docstrings say why): square-root rule at the small batches, linear at full scale.
  assert (lambda o: (o.base_lr, o.lr_scaling))(chexpert_simclr.get_config("local").optim) == (0.075, "sqrt")
  assert (lambda o: (o.base_lr, o.lr_scaling))(demo.get_config().optim) == (0.075, "sqrt")
  assert (lambda o: (o.base_lr, o.lr_scaling))(chexpert_simclr.get_config().optim) == (0.5, "linear")
  assert (lambda o: (o.base_lr, o.lr_scaling))(derm_simclr.get_config("local").optim) == (0.3, "linear")
  # Study runs at their own batch: 0.075 x sqrt(128) for study A's small-scale pretraining.
  small = {label: (c, batch) for label, c, batch in _study_pretraining_configs() if "(small)" in label}
  c, batch = small["study A pretrain (small)"]
  assert math.isclose(optim.scaled_learning_rate(c.optim.base_lr, batch, c.optim.lr_scaling), 0.075 * math.sqrt(128))


def test_micle_warms_up_like_the_simclr_run_it_continues():
  """Issue 18 item 3: Azizi et al. Sec. 4.2 keep "optimizer, weight decay, and warmup step" of the
  SimCLR pretraining for MICLe; 10 epochs of MICLe's own cases (1,198 steps) was not that."""
  simclr = derm_simclr.get_config()
  assert simclr.optim.warmup_steps == math.ceil(10 * 454_295 / 512) == 8873
  for variant in ("", "partial"):
    micle = derm_micle.get_config(variant)
    assert micle.optim.warmup_steps == simclr.optim.warmup_steps, variant
    assert (micle.optim.name, micle.optim.weight_decay, micle.optim.lr_scaling, micle.optim.schedule) == \
        (simclr.optim.name, simclr.optim.weight_decay, simclr.optim.lr_scaling, simclr.optim.schedule)
  # The CPU-sized MICLe continues chexpert_simclr:local, and takes its warm-up.
  start, cont = chexpert_simclr.get_config("local"), covid_cxr_micle.get_config()
  assert cont.optim.warmup_steps == start.optim.warmup_steps == 50
  assert (cont.optim.name, cont.optim.weight_decay) == (start.optim.name, start.optim.weight_decay)


# MoCo-CXR Sec. 3.3: epochs per label fraction; steps = ceil(epochs x labelled images / 16) over the
# 167,429 training images of the CheXpert re-split (hand-computed: 167 x 220 / 16 = 2,296.25 -> 2,297).
MOCOCXR_STEPS = {0.001: 2297, 0.01: 9940, 0.1: 42904, 1.0: 188358}


@pytest.mark.parametrize("fraction", sorted(MOCOCXR_STEPS))
def test_mococxr_variant_is_the_papers_protocol(fraction):
  c = chexpert_finetune.get_config(f"mococxr,fraction={fraction:g}")
  assert c.finetune.label_fraction == fraction
  assert c.train.num_steps == MOCOCXR_STEPS[fraction]
  epochs = {0.001: 220, 0.01: 95, 0.1: 41, 1.0: 18}[fraction]
  assert c.train.num_steps * 16 >= epochs * round(fraction * 167_429) > (c.train.num_steps - 1) * 16
  assert (c.model.depth, c.model.width, c.model.stem) == (18, 1.0, "imagenet")    # ResNet-18
  assert (c.data.label_column, c.finetune.task) == ("Pleural Effusion", "multilabel")  # one sigmoid output
  assert (c.optim.name, c.optim.base_lr, c.optim.schedule, c.train.batch_size) == ("adam", 3e-5, "constant", 16)
  assert c.data.image_size == 224 and c.aug.rotation_degrees == 10.0 and c.aug.flip
  assert c.data.train_split == chexpert_finetune.get_config().data.train_split  # same training set as the default
  assert c.eval.num_replicates == 500 != chexpert_finetune.get_config().eval.num_replicates  # MoCo-CXR's bootstrap


def test_mococxr_default_fraction_and_unsupported_fractions():
  assert chexpert_finetune.get_config("mococxr").to_dict() == chexpert_finetune.get_config("mococxr,fraction=1").to_dict()
  for bad in ("0.05", "0.5", "0"):
    with pytest.raises(ValueError, match=r"supported fractions: 0\.001, 0\.01, 0\.1, 1$"):
      chexpert_finetune.get_config(f"mococxr,fraction={bad}")
  for bad in ("mococxr,frac=0.1", "mococxr,fraction=ten", "mococxr,fraction=0.1,fraction=1"):
    with pytest.raises(ValueError, match="unknown variant option"):
      chexpert_finetune.get_config(bad)
  with pytest.raises(ValueError, match="unknown variant"):
    chexpert_finetune.get_config("local,fraction=0.1")


def test_mococxr_label_column_reads_one_chexpert_label(tmp_path):
  """The variant's data.label_column makes the CheXpert source return pleural effusion alone."""
  import pandas as pd
  from input_pipeline import sources
  root = tmp_path / sources.CHEXPERT_DIR
  columns = ["Path", "Sex", *sources.CHEXPERT_TASKS]
  for csv, split, n in (("train.csv", "train", 6), ("valid.csv", "valid", 2)):
    rows = []
    for i in range(n):
      rel = f"{sources.CHEXPERT_DIR}/{split}/patient{(split == 'valid') * 900 + i:05d}/study1/view1_frontal.jpg"
      (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
      (tmp_path / rel).write_bytes(b"")
      rows.append([rel, "Male", "1.0", "", "0.0", "-1.0", ["1.0", "-1.0", "0.0"][i % 3]])
    pd.DataFrame(rows, columns=columns).to_csv(root / csv, index=False)
  c = chexpert_finetune.get_config("mococxr")
  with c.unlocked():
    c.data.path, c.data.verify_images = str(tmp_path), False
  src = sources.load_source(c.data, "train")
  assert src.labels.shape == (6, 1) and tuple(src.class_names) == ("Pleural Effusion",)
  assert src.labels[:, 0].tolist() == [1.0, -1.0, 0.0] * 2


def test_imagenet_variants_start_from_imported_weights_under_their_settings():
  """:from_imagenet / :imagenet name the import-weights directory and take the settings its format
  implies (what import-weights stores and check_settings enforces); without weights= they are refused."""
  from configs import chexpert_moco
  from medssl_jax.errors import UserError
  from medssl_jax.weights import simclr_tf
  from medssl_jax.weights import torchvision as tv
  d = derm_simclr.get_config("from_imagenet,weights=/w")
  assert d.train.init_checkpoint == "/w" and d.method == "simclr"
  assert {k: d.model[k] for k in simclr_tf.model_settings("r50_1x_sk0")} == simclr_tf.model_settings("r50_1x_sk0")
  assert (d.model.downsample_padding, d.model.input_norm, d.model.head_layers) == ("tf_fixed", "none", 3)
  v1 = chexpert_simclr.get_config("from_imagenet,weights=/w,arch=resnet50_4x")
  assert (v1.model.width, v1.model.head_layers, v1.model.head_dim) == (4.0, 2, 128)  # v1 files: no head
  m = chexpert_moco.get_config("from_imagenet,weights=/w")
  assert m.train.init_checkpoint == "/w" and {k: m.model[k] for k in tv.model_settings("resnet18")} == \
      tv.model_settings("resnet18")
  f = chexpert_finetune.get_config("imagenet,weights=/w")
  assert (f.finetune.init, f.train.init_checkpoint, f.model.depth, f.model.downsample_padding, f.model.input_norm) == \
      ("pretrained", "/w", 50, "symmetric", "imagenet")
  assert derm_finetune.get_config("imagenet,weights=/w,arch=resnet101").model.depth == 101
  # Azizi's strongest supervised baseline, BiT-M ResNet-101x3 (Sec. 5.3), from import-weights --format bit
  b = chexpert_finetune.get_config("imagenet,weights=/w,arch=BiT-M-R101x3")
  assert (b.model.arch, b.model.depth, b.model.width, b.model.input_norm) == ("bit", 101, 3.0, "inception")
  from medssl_jax.models.contrastive import check_arch
  check_arch(b.model)
  for module, variant in ((derm_simclr, "from_imagenet"), (chexpert_moco, "from_imagenet"),
                          (derm_finetune, "imagenet,arch=resnet50"), (chexpert_finetune, "imagenet,weight=/w")):
    with pytest.raises(UserError):
      module.get_config(variant)


def test_ct_pe_classification_is_the_papers_ct_task():
  from configs import ct_pe_classification
  c = ct_pe_classification.get_config()
  assert c.data.image_size == 576 and c.model.depth == 50  # App. B: CT inputs 576 px, ResNet-50
  assert (c.optim.name, c.optim.base_lr) == ("adam", 4e-4)  # App. B: lr 4e-4 for PE
  assert c.finetune.plateau_factor == 0.1 and c.finetune.early_stop_patience > 0  # ReduceLROnPlateau, early stop
  assert c.finetune.val_split == "val" and c.finetune.select_metric == "auc"
  assert c.aug.crop and c.aug.flip and c.aug.rotation_degrees > 0  # crop, horizontal flip, rotation
  assert ct_pe_classification.get_config("small").data.image_size == 128


def test_lung_segmentation_size_variant_and_decoder_widths():
  from configs import lung_segmentation
  small, resized = lung_segmentation.get_config("small"), lung_segmentation.get_config("small,size=32")
  assert (small.data.image_size, resized.data.image_size) == (64, 32)
  assert small.seg.decoder_width == resized.seg.decoder_width == 0.25
  assert lung_segmentation.get_config().seg.decoder_width == 1.0  # the paper's U-Net at full scale
  for bad in ("size=abc", "size=4", "tiny"):
    with pytest.raises(ValueError, match="variant part"):
      lung_segmentation.get_config(bad)


def test_loading_any_config_imports_no_jax():
  """Configs are data: every shipped variant (imported-weight variants aside, whose model settings
  come from the weight formats) loads without importing JAX, Flax, optax, Orbax or TensorFlow."""
  plain = [(n, v) for n, vs in VARIANTS.items() for v in vs if "weights=" not in v]
  code = ("import sys, importlib\n"
          f"for name, variant in {plain!r}:\n"
          "  m = importlib.import_module('configs.' + name)\n"
          "  m.get_config(variant) if variant else m.get_config()\n"
          "heavy = sorted(k for k in ('jax', 'flax', 'optax', 'orbax', 'tensorflow') if k in sys.modules)\n"
          "print(','.join(heavy))\n")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == "", f"loading configs imported {r.stdout.strip()}"


def test_builtin_method_blocks_are_the_methods_defaults():
  """settings.METHOD_DEFAULTS (what every config carries) is what each built-in method declares."""
  base = settings.get_base_config()
  groups = {m.config_group: m for m in map(methods.get, methods.names()) if m.config_group}
  assert set(groups) == set(settings.METHOD_DEFAULTS) == {"moco", "simclr", "byol", "simsiam", "barlow", "vicreg", "dino",
                                                                   "swav"}
  for group, method in groups.items():
    assert base[group].to_dict() == method.default_config() == settings.METHOD_DEFAULTS[group]
