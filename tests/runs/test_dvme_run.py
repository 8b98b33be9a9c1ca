"""DVME training on cached features (medssl_jax/runs/dvme.py, feature_cache.py, configs/truong_dvme.py)."""
import json

import numpy as np
import pytest

from configs import truong_dvme
from medssl_jax.runs import dvme
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
  r = dvme.run(config(features), str(tmp_path / "dvme"))
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
    c.finetune.train_size, c.finetune.fold = 20, 2
  r = dvme.run(c, str(tmp_path / "concat"))
  assert "attention_by_class" not in r and not r["attention"] and r["epochs_run"] == 3
  assert (r["num_train_images"], r["fold"]) == (20, 2)


def test_plateau_cuts_the_rate_and_early_stopping_ends_the_run(features, tmp_path):
  # Noise only: the validation loss stops improving; the rate drops 10x after 5 epochs without a
  # new best, and the run stops 10 epochs after its best.
  c = config(features, spec="noise=G/noise_{split}.npz", epochs=50)
  with c.unlocked():
    c.dvme.lr = 3e-2
  r = dvme.run(c, str(tmp_path / "noise"))
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
    dvme.run(config(tmp_path, spec="mixed=G/mixed_{split}.npz"), str(tmp_path / "x"))
  write_features(tmp_path, "short", True, drop_test=True)
  with pytest.raises(UserError, match="hold different images"):
    dvme.run(config(tmp_path, spec="good=G/good_{split}.npz,short=G/short_{split}.npz"), str(tmp_path / "y"))
  c = config(tmp_path, spec="good=G/good_{split}.npz", epochs=0)
  with pytest.raises(UserError, match="dvme.epochs=0 and dvme.batch_size=16 must be >= 1"):
    dvme.run(c, str(tmp_path / "w"))
  with pytest.raises(UserError, match=r"has no '\{split\}'"):
    dvme.run(config(tmp_path, spec="good=G/good.npz"), str(tmp_path / "z"))


def _spy(monkeypatch, owner, name, calls):
  real = getattr(owner, name)

  def spy(*args, **kwargs):
    calls.append(args)
    return real(*args, **kwargs)
  monkeypatch.setattr(owner, name, spy)


def test_tsne_maps_and_attention_plot_of_a_run(features, tmp_path, monkeypatch):
  import jax
  from medssl_jax.evaluation import attention_plot, tsne
  tsne_calls, eval_calls, figures = [], [], []
  _spy(monkeypatch, tsne, "tsne_2d", tsne_calls)
  _spy(monkeypatch, dvme, "evaluate", eval_calls)
  real_figure = attention_plot.attention_figure
  monkeypatch.setattr(attention_plot, "attention_figure", lambda res: figures.append(real_figure(res)) or figures[-1])
  c = config(features, epochs=4)
  with c.unlocked():
    c.dvme.tsne_max_points = 40                                # of 48 test images
  r = dvme.run(c, str(tmp_path / "run"))
  out = tmp_path / "run"
  saved = json.loads((out / "results.json").read_text())
  assert saved["plots"]["tsne"]["files"] == {"good": "tsne_source_good.png", "noise": "tsne_source_noise.png",
                                             "dvme": "tsne_dvme.png"}
  for f in [*saved["plots"]["tsne"]["files"].values(), saved["plots"]["attention_by_class"]]:
    assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # t-SNE inputs: each source's test features of the 40 drawn images, then the 16-d DVME embedding
  assert [x[0].shape for x in tsne_calls] == [(40, 12), (40, 12), (40, 16)]
  with np.load(out / "tsne_test.npz") as z:
    ids, groups = z["image_ids"], z["groups"]
    assert z["coords_2"].shape == (40, 2) and list(z["panels"]) == ["good", "noise", "dvme"]
  assert len(set(ids)) == 40 and np.array_equal(groups, [int(i.split("-")[1]) % 2 for i in ids])
  feats = []
  for k, name in enumerate(("good", "noise")):
    with np.load(features / f"{name}_test.npz") as z:
      row = {v: i for i, v in enumerate(z["image_ids"])}
      feats.append(z["features"][[row[v] for v in ids]])
    np.testing.assert_array_equal(tsne_calls[k][0], feats[-1])
  # the embedding equals an independent forward pass with the tested (best-on-validation) weights:
  # the `proj` Dense output captured by Flax, after ReLU; and the classifier maps it to the logits
  params = jax.device_get(eval_calls[-1][0])
  model = dvme.make_model(c, 2)
  logits, state = model.apply({"params": params}, feats, capture_intermediates=True)
  emb = np.maximum(np.asarray(state["intermediates"]["proj"]["__call__"][0]), 0.0)
  np.testing.assert_allclose(tsne_calls[2][0], emb, rtol=1e-5, atol=1e-6)
  w = params["classifier"]
  np.testing.assert_allclose(emb @ np.asarray(w["kernel"]) + np.asarray(w["bias"]), logits, rtol=1e-5, atol=1e-5)
  # the attention heat map shows results.json's per-class weights and their mean, in that order
  (fig,) = figures
  shown = np.asarray(fig.axes[0].images[0].get_array())
  att = saved["attention_by_class"]
  np.testing.assert_allclose(shown, np.vstack([att["weights"], [att["mean"]]]), rtol=1e-6)
  assert att["classes"] == ["a", "b"] and r["plots"] == saved["plots"]
  assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b", "all test images"]


def test_an_oversampled_multilabel_run_writes_its_plots(tmp_path):
  # 3 labels, one of them rare; a one-epoch run with oversampling and t-SNE of multi-label images
  root = tmp_path / "feats"
  root.mkdir()
  for k, (split, n) in enumerate(SPLITS.items()):
    rng = np.random.default_rng(k)
    y = (rng.random((n, 3)) < [0.5, 0.3, 0.08]).astype(np.float32)
    x = rng.normal(size=(n, 8)).astype(np.float32) + y @ rng.normal(size=(3, 8)).astype(np.float32)
    ids = np.array([f"{split}-{i}" for i in range(n)])
    np.savez(root / f"m_{split}.npz", features=x, image_ids=ids, case_ids=ids, labels=y,
             class_names=np.array(["p", "q", "r"]), encoder_sha256=np.asarray("e"), data_sha256=np.asarray("d"),
             checkpoint=np.asarray("c"), step=np.asarray(1), split=np.asarray(split))
  c = config(root, "multilabel", spec="m=G/m_{split}.npz", epochs=1)
  with c.unlocked():
    c.finetune.oversample = True
  r = dvme.run(c, str(tmp_path / "ml"))
  assert r["oversample"] and r["attention_by_class"]["classes"] == ["p", "q", "r"]
  assert (tmp_path / "ml" / "tsne_dvme.png").exists() and (tmp_path / "ml" / "attention_by_class.png").exists()
  with np.load(tmp_path / "ml" / "tsne_test.npz") as z:
    assert list(z["group_names"]) == ["p", "q", "r", "none", "several"] and len(z["groups"]) == 48


def test_a_finished_dvme_run_is_not_replaced_under_other_settings(features, tmp_path):
  """The settings check the other modes have: the same settings re-run (and replace the results
  atomically, with provenance); other settings are refused before any work, naming the key."""
  work = tmp_path / "dvme"
  first = dvme.run(config(features, epochs=2), str(work))
  assert json.loads((work / "results.json").read_text())["provenance"]["package_version"]
  again = dvme.run(config(features, epochs=2), str(work))
  assert again["test"]["auc"]["value"] == first["test"]["auc"]["value"]
  before = (work / "results.json").read_bytes()
  with pytest.raises(UserError, match=r"holds a DVME run made with other settings \(.*dvme\.epochs.*\)"):
    dvme.run(config(features, epochs=3), str(work))
  assert (work / "results.json").read_bytes() == before
  assert not [p.name for p in work.iterdir() if p.name.endswith(".tmp")]
