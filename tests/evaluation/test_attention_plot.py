"""The DVME attention heat map (medssl_jax/evaluation/attention_plot.py), drawn from results.json."""
import json

import numpy as np
import pytest

from medssl_jax.errors import UserError
from medssl_jax.evaluation import attention_plot


def test_heat_map_shows_the_results_weights(tmp_path):
  results = {"attention_by_class": {"sources": ["dino", "simclr"], "classes": ["normal", "pneumonia", "rare"],
                                    "weights": [[0.7, 0.3], [0.6, 0.4], [float("nan")] * 2], "mean": [0.65, 0.35]}}
  (tmp_path / "results.json").write_text(json.dumps(results))
  matrix = attention_plot.write(tmp_path / "results.json", tmp_path / "a.png")
  expected = [[0.7, 0.3], [0.6, 0.4], [np.nan, np.nan], [0.65, 0.35]]
  np.testing.assert_array_equal(matrix, expected)
  assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
  fig = attention_plot.attention_figure(results)
  ax = fig.axes[0]
  np.testing.assert_array_equal(np.asarray(ax.images[0].get_array().filled(np.nan)), expected)
  assert [t.get_text() for t in ax.get_yticklabels()] == ["normal", "pneumonia", "rare", "all test images"]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["dino", "simclr"]
  assert "n/a" in [t.get_text() for t in ax.texts]


def test_a_run_without_attention_is_refused():
  with pytest.raises(UserError, match="no attention_by_class"):
    attention_plot.attention_table({"attention": False})
