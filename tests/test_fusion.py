"""DVME training on cached features (medssl_jax/fusion.py, feature_cache.py, configs/truong_dvme.py)."""
import json

import numpy as np
import pytest

from configs import truong_dvme
from medssl_jax import fusion
from medssl_jax.errors import UserError

SPLITS = {"train": 96, "val": 32, "test": 48}


def write_features(root, name, informative: bool, encoder="enc", data="data", dim=12, drop_test=False):
  """Features of a 2-class problem: `informative` ones separate the classes, the others are noise."""
  for k, (split, n) in enumerate(SPLITS.items()):
    rng = np.random.default_rng(100 * k + (7 if informative else 13))
    labels = np.arange(n) % 2
    x = rng.normal(size=(n, dim)).astype(np.float32)
    if informative:
      x[:, 0] += 3.0 * (2 * labels - 1)
    ids = np.array([f"{split}-{i}" for i in range(n)])
    order = rng.permutation(n)  # rows in another order than the other source: aligned by id
    if drop_test and split == "test":
      order = order[:-1]
    np.savez(root / f"{name}_{split}.npz", features=x[order], image_ids=ids[order], case_ids=ids[order],
             labels=labels[order], class_names=np.array(["a", "b"]), encoder_sha256=np.asarray(encoder),
             data_sha256=np.asarray(data), checkpoint=np.asarray(f"ckpt/{name}"), step=np.asarray(5),
             split=np.asarray(split))


def config(root, variant="", spec="good=G/good_{split}.npz,noise=G/noise_{split}.npz", epochs=25):
  c = truong_dvme.get_config(variant)
  with c.unlocked():
    c.dvme.features = spec.replace("G", str(root))
    c.dvme.proj_dim = c.dvme.hidden_dim = 16
    c.dvme.num_heads, c.dvme.batch_size, c.dvme.epochs = 2, 16, epochs
    c.eval.num_replicates = 50
  return c


@pytest.fixture(scope="module")
def features(tmp_path_factory):
  root = tmp_path_factory.mktemp("feats")
  write_features(root, "good", True)
  write_features(root, "noise", False)
  return root


def test_dvme_learns_separable_features_and_reports_attention(features, tmp_path):
  r = fusion.run(config(features), str(tmp_path / "dvme"))
  assert r["test"]["auc"]["value"] > 0.95 and r["test"]["top1"]["value"] > 0.85
  hist = [h["val_loss"] for h in r["val_history"]]
  assert r["best_epoch"] == int(np.argmin(hist)) and r["epochs_run"] <= 25
  att = np.asarray(r["attention_by_class"]["weights"])       # (classes, sources)
  assert att.shape == (2, 2) and r["attention_by_class"]["sources"] == ["good", "noise"]
  np.testing.assert_allclose(att.sum(1), 1.0, rtol=1e-5)     # a distribution over sources per class
  saved = json.loads((tmp_path / "dvme" / "results.json").read_text())
  assert saved["test"]["auc"]["value"] == r["test"]["auc"]["value"]
  with np.load(tmp_path / "dvme" / "predictions_test.npz") as p:
    assert p["probs"].shape == (48, 2) and set(p["image_ids"]) == {f"test-{i}" for i in range(48)}


def test_concatenation_ablation_on_a_small_subset(features, tmp_path):
  c = config(features, "concat", epochs=3)
  with c.unlocked():
    c.dvme.train_size, c.dvme.fold = 20, 2
  r = fusion.run(c, str(tmp_path / "concat"))
  assert "attention_by_class" not in r and not r["attention"] and r["epochs_run"] == 3
  assert (r["num_train_images"], r["fold"]) == (20, 2)


def test_plateau_cuts_the_rate_and_early_stopping_ends_the_run(features, tmp_path):
  # Noise only: the validation loss stops improving; the rate drops 10x after 5 epochs without a
  # new best, and the run stops 10 epochs after its best.
  c = config(features, spec="noise=G/noise_{split}.npz", epochs=50)
  with c.unlocked():
    c.dvme.lr = 3e-2
  r = fusion.run(c, str(tmp_path / "noise"))
  assert r["epochs_run"] < 50 and r["epochs_run"] == r["best_epoch"] + 11
  lrs = np.array([h["lr"] for h in r["val_history"]])
  losses = np.array([h["val_loss"] for h in r["val_history"]])
  drops = np.flatnonzero(lrs[1:] < lrs[:-1]) + 1
  assert lrs[0] == pytest.approx(3e-2) and len(drops)
  np.testing.assert_allclose(lrs[drops] / lrs[drops - 1], 0.1, rtol=1e-5)
  new_best = [i for i in range(len(losses)) if losses[i] < losses[:i].min(initial=np.inf) * (1 - 1e-4)]
  last_best = max(i for i in new_best if i < drops[0])
  assert drops[0] - last_best == 5


def test_a_cache_from_another_encoder_or_other_images_is_refused(features, tmp_path):
  write_features(tmp_path, "good", True)
  write_features(tmp_path, "other", True, encoder="enc2")
  for split in SPLITS:  # a test split of another encoder under the good source's name
    (tmp_path / f"mixed_{split}.npz").write_bytes((tmp_path / f"{'other' if split == 'test' else 'good'}_{split}.npz").read_bytes())
  with pytest.raises(UserError, match="feature source 'mixed': its splits were made from different encoder weights"):
    fusion.run(config(tmp_path, spec="mixed=G/mixed_{split}.npz"), str(tmp_path / "x"))
  write_features(tmp_path, "short", True, drop_test=True)
  with pytest.raises(UserError, match="hold different images"):
    fusion.run(config(tmp_path, spec="good=G/good_{split}.npz,short=G/short_{split}.npz"), str(tmp_path / "y"))
  c = config(tmp_path, spec="good=G/good_{split}.npz", epochs=0)
  with pytest.raises(UserError, match="dvme.epochs=0 and dvme.batch_size=16 must be >= 1"):
    fusion.run(c, str(tmp_path / "w"))
  with pytest.raises(UserError, match=r"has no '\{split\}'"):
    fusion.run(config(tmp_path, spec="good=G/good.npz"), str(tmp_path / "z"))


def test_balanced_subsets_per_fold():
  labels = np.repeat([0, 1, 2], [40, 30, 10])
  a = fusion.training_subset(labels, 25, fold=0, seed=0)
  assert np.bincount(labels[a]).tolist() == [9, 8, 8] and len(set(a)) == 25  # 25 // 3, remainder first
  b = fusion.training_subset(labels, 25, fold=1, seed=0)
  assert not np.array_equal(a, b) and np.array_equal(a, fusion.training_subset(labels, 25, fold=0, seed=0))
  assert len(fusion.training_subset(labels, 0, 0, 0)) == 80
  with pytest.raises(UserError, match="class 2 has 10 training images"):
    fusion.training_subset(labels, 60, 0, 0)
  multi = np.zeros((50, 3), np.float32)
  assert len(set(fusion.training_subset(multi, 20, 0, 0))) == 20
