"""The label-efficiency plot and table from small fake results files."""
import json

import numpy as np
import pytest

from medssl_jax import errors
from medssl_jax.commands import common
from medssl_jax.commands import label_efficiency as label_efficiency_command
from medssl_jax.evaluation import label_efficiency


def _write(tmp_path, name, init, fraction, value):
  r = {"mode": "finetune", "init": init, "label_fraction": fraction,
       "test": {"top1": {"value": value, "ci_low": value - 0.05, "ci_high": value + 0.05}}}
  path = tmp_path / f"{name}.json"
  path.write_text(json.dumps(r))
  return str(path)


def test_table_and_plot(tmp_path):
  paths = [_write(tmp_path, "a1", "pretrained", 0.01, 0.6), _write(tmp_path, "a2", "pretrained", 0.01, 0.7),
           _write(tmp_path, "b", "pretrained", 1.0, 0.9), _write(tmp_path, "c", "random", 1.0, 0.8)]
  out = tmp_path / "plot.png"
  assert common.call(label_efficiency_command.cli, ["medssl-jax label-efficiency", *paths, "--out", str(out)]) == 0
  assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
  summary = label_efficiency.summarise(label_efficiency.load_points(paths, "top1"))
  (f, n, v, lo, hi), _ = summary["finetune / pretrained"]
  assert (f, n) == (0.01, 2)
  np.testing.assert_allclose([v, lo, hi], [0.65, 0.60, 0.70])
  table = (tmp_path / "plot.md").read_text()
  assert "| finetune / pretrained | 0.01 | 2 | 0.6500 | [0.6000, 0.7000] |" in table
  assert "| finetune / random | 1 | 1 | 0.8000 | [0.7500, 0.8500] |" in table


def test_missing_metric_is_an_error(tmp_path):
  path = _write(tmp_path, "a", "random", 1.0, 0.5)
  with pytest.raises(ValueError, match="no test metric 'auc'"):
    label_efficiency.load_points([path], "auc")


def test_the_command_needs_results_files(capsys, monkeypatch):
  monkeypatch.setattr(errors, "arm_exit_watchdog", lambda code: None)  # never in the test process
  assert common.call(label_efficiency_command.cli, ["medssl-jax label-efficiency", "--metric=auc"]) == 2
  assert capsys.readouterr().err == ("error: label-efficiency needs the results.json files of fine-tuning / "
                                     "linear-evaluation runs; e.g. medssl-jax label-efficiency workdirs/ft_*/results.json\n")
