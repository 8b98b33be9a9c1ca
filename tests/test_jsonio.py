"""Strict JSON (medssl_jax/jsonio.py): no NaN in the files, NaN again in the metric fields on reading."""
import json
import math

import numpy as np
import pytest

from medssl_jax import jsonio
from medssl_jax.training import loop


def _strict_load(text):
  def refuse(name):
    raise AssertionError(f"not strict JSON: {name}")
  return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_null_and_numpy_types_plain(tmp_path):
  obj = {"test": {"auc": {"value": float("nan"), "ci_low": np.float32(0.25), "ci_high": np.inf}},
         "steps": np.int64(3), "flag": np.bool_(True), "history": [(1, np.float64(-np.inf)), (2, 0.5)],
         "early_stop_step": None, "name": "run"}
  loop.write_json(str(tmp_path / "r.json"), obj)
  on_disk = _strict_load((tmp_path / "r.json").read_text())
  assert on_disk == {"test": {"auc": {"value": None, "ci_low": 0.25, "ci_high": None}}, "steps": 3, "flag": True,
                     "history": [[1, None], [2, 0.5]], "early_stop_step": None, "name": "run"}
  back = jsonio.read_json(str(tmp_path / "r.json"))
  assert math.isnan(back["test"]["auc"]["value"]) and math.isnan(back["test"]["auc"]["ci_high"])
  assert back["test"]["auc"]["ci_low"] == 0.25
  assert back["early_stop_step"] is None and back["history"] == [[1, None], [2, 0.5]]  # not a metric field: kept


def test_strict_refuses_nothing_json_cannot_hold():
  with pytest.raises(ValueError):
    json.dumps({"x": float("nan")}, allow_nan=False)  # what write_json would meet without `strict`
  assert json.dumps(jsonio.strict({"x": float("nan"), "y": (1, 2)}), allow_nan=False) == '{"x": null, "y": [1, 2]}'
