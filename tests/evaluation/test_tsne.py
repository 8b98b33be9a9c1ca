"""t-SNE maps (medssl_jax/evaluation/tsne.py): colour groups, the settings passed to sklearn, PNGs."""
import numpy as np
import pytest

from medssl_jax.evaluation import tsne


def test_class_groups_multiclass_and_multilabel():
  g, names = tsne.class_groups(np.array([2, 0, 1, 2]), "multiclass", ("a", "b", "c"))
  assert g.tolist() == [2, 0, 1, 2] and names == ["a", "b", "c"]
  g, names = tsne.class_groups(np.array([1, 0]), "multiclass", ())
  assert names == ["class 0", "class 1"]
  y = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0], [1, 1, 0], [np.nan, 1, 0], [np.nan, 0, 0]], np.float32)
  g, names = tsne.class_groups(y, "multilabel", ("p", "q", "r"))
  assert g.tolist() == [0, 2, 3, 4, 1, 3] and names == ["p", "q", "r", "none", "several"]


def test_tsne_settings_and_output(monkeypatch, tmp_path):
  from sklearn import manifold
  seen = []

  class FakeTSNE:  # records what sklearn is asked for (sklearn's t-SNE itself is not under test)
    def __init__(self, **kw):
      seen.append(kw)

    def fit_transform(self, x):
      return np.asarray(x, np.float64)[:, :2]
  monkeypatch.setattr(manifold, "TSNE", FakeTSNE)
  x = np.arange(40, dtype=np.float32).reshape(10, 4)
  out = tsne.tsne_2d(x, seed=7)
  assert out.shape == (10, 2) and out.dtype == np.float32
  assert seen[-1] == {"n_components": 2, "perplexity": 3.0, "init": "pca", "learning_rate": "auto",
                      "random_state": 7}                          # (10 - 1) / 3 < 30
  tsne.tsne_2d(np.zeros((200, 4)), seed=0)
  assert seen[-1]["perplexity"] == 30.0
  with pytest.raises(ValueError, match="N >= 4"):
    tsne.tsne_2d(np.zeros((3, 4)), seed=0)
  tsne.write_png(out, np.arange(10) % 3, ["a", "b", "c"], "title", tmp_path / "m.png")
  assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_real_tsne_is_seeded():
  x = np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32)
  a, b = tsne.tsne_2d(x, seed=1), tsne.tsne_2d(x, seed=1)
  assert a.shape == (30, 2) and np.array_equal(a, b) and np.all(np.isfinite(a))
