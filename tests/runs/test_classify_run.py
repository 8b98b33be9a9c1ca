"""Fine-tuning and linear evaluation runs on the synthetic data."""
import json

import jax
import numpy as np
import pytest

from input_pipeline import backends, sources, subsets
from medssl_jax.errors import UserError
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.runs import classify
from medssl_jax.runs import supervised
from medssl_jax import main as main_lib
from tests.helpers import tiny_config
from tests.helpers import pretrain_run_config as run_config


SIZE, WIDTH = 32, 0.25   # the synthetic motifs need a few pixels: 32 px, ResNet-18 (0.25x)


def ft_config(mode="finetune", init="random", checkpoint="", steps=60, fraction=1.0):
  c = tiny_config(batch_size=32, image_size=SIZE, width=WIDTH, steps=steps)
  c.mode = mode
  c.data.source = "synthetic"
  c.data.synthetic.num_cases = 120
  c.data.synthetic.image_size = SIZE
  c.aug.blur_prob, c.aug.color_prob, c.aug.crop_area_min = 0.0, 0.0, 0.5
  c.optim.name, c.optim.lr_scaling, c.optim.base_lr, c.optim.warmup_steps = "sgd", "none", 0.1, 0
  c.train.log_every = c.train.checkpoint_every = 20
  c.train.prefetch = 1
  c.finetune.init, c.train.init_checkpoint, c.finetune.label_fraction = init, checkpoint, fraction
  c.eval.num_replicates = 200
  return c


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("pre") / "simclr")
  c = run_config(steps=40, batch=32)
  c.model.width, c.data.image_size, c.data.synthetic.image_size = WIDTH, SIZE, SIZE
  c.data.synthetic.num_cases = 120
  c.optim.base_lr = 1.0
  c.train.log_every = c.train.checkpoint_every = 20
  main_lib.run(c, workdir)
  return workdir


def test_finetune_starts_from_exactly_the_pretrained_encoder(pretrained, tmp_path):
  from medssl_jax.training.sharding import make_mesh
  c = ft_config(init="pretrained", checkpoint=pretrained)
  state = classify.create_state(c, make_mesh(), num_outputs=4, rng=jax.random.key(1))
  state = supervised.load_encoder(state, pretrained)
  saved, saved_bs, _ = ckpt_lib.restore_weights(pretrained)
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(state.params["encoder"])),
                  jax.tree_util.tree_leaves(saved["encoder"])):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(state.batch_stats["encoder"])),
                  jax.tree_util.tree_leaves(saved_bs["encoder"])):
    np.testing.assert_array_equal(a, b)
  assert "head" not in state.params  # projection head dropped, new classifier instead
  assert "classifier" in state.params


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
  """A short supervised fine-tune from random init: its encoder separates the classes."""
  workdir = str(tmp_path_factory.mktemp("ft") / "ft")
  return workdir, main_lib.run(ft_config(steps=80), workdir)


def test_short_finetune_beats_chance(finetuned):
  workdir, results = finetuned
  top1 = results["test"]["top1"]
  assert top1["ci_low"] <= top1["value"] <= top1["ci_high"]
  assert top1["value"] > 0.25 + 0.15, results["test"]      # 4 balanced classes: chance 0.25
  saved = np.load(f"{workdir}/predictions_test.npz", allow_pickle=False)
  assert saved["probs"].shape[1] == 4 and len(saved["case_ids"]) == len(saved["labels"])
  assert json.load(open(f"{workdir}/results.json"))["test"]["top1"]["value"] == top1["value"]


def test_linear_eval_freezes_the_encoder_and_learns_a_head(finetuned, tmp_path):
  # Linear evaluation of an encoder whose features separate the classes (the fine-tune above,
  # 0.65 top-1): a new head on the frozen, standardised features must reach well above chance
  # (0.61 on the 74 test images here), and the encoder and its statistics must not move. An
  # encoder of a few SimCLR steps gives too weak a signal for a bound that holds across CPUs
  # (its head reached 0.34-0.43; the loss stayed near ln 4).
  source, _ = finetuned
  c = ft_config(mode="linear_eval", init="pretrained", checkpoint=source, steps=60)
  c.finetune.feature_norm = "batchnorm"  # the benchmarks' protocol; tests/test_feature_norm.py covers both
  results = main_lib.run(c, str(tmp_path / "lin"))
  assert results["feature_norm"] == "batchnorm"
  losses = [loss for _, loss in results["loss_history"]]
  assert losses[-1] < losses[0], losses
  assert results["test"]["top1"]["value"] > 0.25 + 0.15, results["test"]
  before, before_bs, _ = ckpt_lib.restore_weights(source)
  after, after_bs, _ = ckpt_lib.restore_weights(str(tmp_path / "lin"))
  for a, b in zip(jax.tree_util.tree_leaves(after["encoder"]), jax.tree_util.tree_leaves(before["encoder"])):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree_util.tree_leaves(after_bs["encoder"]), jax.tree_util.tree_leaves(before_bs["encoder"])):
    np.testing.assert_array_equal(a, b)
  assert np.abs(after["classifier"]["kernel"]).max() > 0  # the head starts at zero in linear evaluation


def test_label_fraction_uses_fewer_cases(tmp_path):
  c = ft_config(steps=2, fraction=0.2)
  c.train.batch_size = 16
  results = main_lib.run(c, str(tmp_path / "frac"))
  assert results["num_train_cases"] == 24   # 20% of the 30 cases of each of the 4 classes
  c.finetune.label_fraction = 0.01              # 1 case per class: fewer images than one batch
  with pytest.raises(ValueError, match="larger than the .* labelled images"):
    main_lib.run(c, str(tmp_path / "tiny"))


def test_checkpoint_of_another_architecture_is_refused(pretrained, tmp_path):
  c = ft_config(init="pretrained", checkpoint=pretrained, steps=2)
  c.model.width = 0.5
  with pytest.raises(ValueError, match="does not match the configured architecture"):
    main_lib.run(c, str(tmp_path / "bad"))


def test_pretrained_init_needs_a_checkpoint(tmp_path):
  with pytest.raises(ValueError, match="needs train.init_checkpoint"):
    main_lib.run(ft_config(init="pretrained"), str(tmp_path / "x"))


def test_uncertain_label_policies():
  labels = np.array([[1, 0, -1], [-1, 1, 0]], np.float32)
  np.testing.assert_array_equal(supervised.apply_uncertain_policy(labels, "ones"), [[1, 0, 1], [1, 1, 0]])
  np.testing.assert_array_equal(supervised.apply_uncertain_policy(labels, "zeros"), [[1, 0, 0], [0, 1, 0]])
  got = supervised.apply_uncertain_policy(labels, "ignore")
  assert np.isnan(got[0, 2]) and np.isnan(got[1, 0]) and got[0, 0] == 1
  with pytest.raises(ValueError, match="uncertain_policy"):
    supervised.apply_uncertain_policy(labels, "maybe")


def test_zero_shot_with_label_map_and_subgroups(tmp_path):
  from configs.base import get_base_config
  from medssl_jax.commands import zero_shot
  ft = ft_config(steps=20)
  main_lib.run(ft, str(tmp_path / "ft"))
  target = get_base_config()
  target.data = ft.data            # same synthetic data, its test split as the "other" dataset
  from input_pipeline import sources
  test = sources.load_source(ft.data, "test")
  table = tmp_path / "meta.csv"
  table.write_text("image_id,site\n" + "\n".join(f"{i},{'A' if k % 2 else 'B'}" for k, i in enumerate(test.image_ids)))
  out = zero_shot.run(str(tmp_path / "ft"), target, "0:0,1:1,2:2,3:3", str(table), "site", str(tmp_path / "zs"),
                      num_replicates=50)
  assert set(out["metrics"]) == {"all", "A", "B"}
  assert out["metrics"]["A"]["num_images"] + out["metrics"]["B"]["num_images"] == len(test)
  ft_results = json.load(open(tmp_path / "ft" / "results.json"))
  assert out["metrics"]["all"]["top1"]["value"] == pytest.approx(ft_results["test"]["top1"]["value"])
  with pytest.raises(ValueError, match="'sex' is not a column"):
    zero_shot.run(str(tmp_path / "ft"), target, "", str(table), "sex", str(tmp_path / "zs2"))


@pytest.mark.parametrize("group", ["finetune", "eval"])  # eval: a run saved before the rename
def test_zero_shot_refuses_a_label_map_for_a_multilabel_model(tmp_path, group):
  from medssl_jax.commands import zero_shot
  (tmp_path / "config.json").write_text(json.dumps({"mode": "finetune", group: {"task": "multilabel"}}))
  with pytest.raises(ValueError, match=r"--label_map maps the classes of a multiclass model, and .* is 'multilabel' "
                                       r"\(one sigmoid per label\); its labels are scored as they are: drop --label_map"):
    zero_shot.run(str(tmp_path), None, "0:1,1:0", "", "", str(tmp_path / "zs"))


def test_label_map_merges_probabilities():
  from medssl_jax.commands import zero_shot
  m = zero_shot.parse_label_map("0:1,1:0,2:1", 3)
  np.testing.assert_allclose(zero_shot.map_probs(np.array([[.2, .3, .5]]), m, 2), [[.3, .7]])
  with pytest.raises(ValueError, match="unmapped"):
    zero_shot.parse_label_map("0:1", 3)


def test_truongs_balanced_subset_and_oversampling_in_linear_evaluation(tmp_path, monkeypatch):
  """finetune.train_size / fold / oversample outside DVME: the run trains on the rows
  subsets.training_subset draws (the same as mode='dvme' draws for these labels), with the
  pipeline's oversampled order; a mistaken subset is one line."""
  c = ft_config(steps=2)
  c.finetune.train_size, c.finetune.fold, c.finetune.oversample = 40, 3, True
  c.train.log_every = c.train.checkpoint_every = 2
  seen = {}
  numpy_backend = backends.get("numpy")
  real = numpy_backend.supervised_iterator

  def spy(source, **kw):
    seen.update(indices=np.asarray(kw["indices"]), oversample=kw["oversample"])
    return real(source, **kw)
  monkeypatch.setattr(numpy_backend, "supervised_iterator", spy)
  c.data.pipeline = "numpy"
  results = main_lib.run(c, str(tmp_path / "sub"))
  labels = np.asarray(sources.load_source(c.data, c.data.train_split).labels)
  want = subsets.training_subset(labels, 40, 3, c.seed)
  np.testing.assert_array_equal(seen["indices"], want)
  assert seen["oversample"] is True and np.ptp(np.bincount(labels[want])) <= 1  # class-balanced
  assert (results["num_train_images"], results["train_size"], results["fold"], results["oversample"]) == (40, 40, 3, True)
  for bad, message in ((dict(train_size=10_000), r"finetune.train_size=10000 is more than the \d+ training images"),
                       (dict(train_size=40, label_fraction=0.5), "both choose the training images"),
                       (dict(fold=-1), r"finetune.fold=-1: expected an integer >= 0")):
    other = ft_config(steps=2)
    for k, v in bad.items():
      setattr(other.finetune, k, v)
    with pytest.raises(UserError, match=message):
      main_lib.run(other, str(tmp_path / f"bad{len(message)}"))
