"""compare scores what the runs report (case level, excluded classes); classes excluded by name."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn import metrics as skm

from medssl_jax import errors
from medssl_jax import main as main_lib
from medssl_jax.commands import common
from medssl_jax.commands import compare as compare_command
from medssl_jax.evaluation import compare, metrics
from tests.helpers import tiny_config

# Sorted, 'Other' is class 2 of 4 (not the last): an index written for integer labels would miss it.
CLASSES = ("Acne", "Eczema", "Other", "Psoriasis")


def write_manifest(root, cases_per_split=None, seed=0):
  """A folder of 16 px PNGs and a manifest with string labels; cases of 1-3 images."""
  cases_per_split = cases_per_split or {"train": 24, "val": 8, "test": 12}
  rng = np.random.default_rng(seed)
  rows = []
  for split, n_cases in cases_per_split.items():
    for c in range(n_cases):
      label = CLASSES[c % len(CLASSES)]
      for i in range(int(rng.integers(1, 4))):
        img = rng.integers(0, 60, (16, 16, 3)).astype(np.uint8)
        img[:, :, CLASSES.index(label) % 3] += np.uint8(60 * (1 + CLASSES.index(label) // 3))  # a learnable cue
        path = f"{split}_{c}_{i}.png"
        Image.fromarray(img).save(root / path)
        rows.append({"path": path, "case_id": f"{split}-case{c}", "label": label, "split": split})
  pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
  return root / "manifest.csv"


def manifest_config(manifest, seed=0, steps=4):
  c = tiny_config(batch_size=8, image_size=16, steps=steps)
  c.mode, c.seed = "finetune", seed
  c.data.source, c.data.path = "manifest", str(manifest)
  c.aug.blur_prob, c.aug.color_prob = 0.0, 0.0
  c.optim.name, c.optim.lr_scaling, c.optim.base_lr, c.optim.warmup_steps = "sgd", "none", 0.1, 0
  c.train.log_every = c.train.checkpoint_every = steps
  c.train.prefetch = 1
  c.finetune.init, c.eval.num_replicates = "random", 20
  c.eval.case_level, c.eval.exclude_classes = True, ("Other",)
  return c


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("derm")
  manifest = write_manifest(root)
  out = []
  for seed in (0, 1):
    wd = root / f"run{seed}"
    main_lib.run(manifest_config(manifest, seed=seed), str(wd))
    out.append(wd)
  return out


def test_compare_reproduces_the_reported_case_level_metrics(two_runs):
  wa, wb = two_runs
  ra, rb = (json.loads((w / "results.json").read_text()) for w in (wa, wb))
  assert ra["case_level"] and ra["exclude_classes"] == [2] and ra["excluded_class_names"] == ["Other"]
  a, b = (compare.load_predictions(w / "predictions_test.npz") for w in (wa, wb))
  assert a["case_level"] and a["exclude_classes"] == (2,) and a["class_names"] == CLASSES
  result = compare.compare(a, b, num_replicates=30, seed=0)
  assert set(result) == set(ra["test"])
  for name in result:  # exactly what each run's results.json says
    assert result[name]["a"] == ra["test"][name]["value"], name
    assert result[name]["b"] == rb["test"][name]["value"], name
    assert result[name]["difference"] == ra["test"][name]["value"] - rb["test"][name]["value"]
  # Independent reference: case means with pandas, recall per class with sklearn, 'Other' left out.
  df = pd.DataFrame(a["probs"]).assign(case=a["case_ids"], y=a["labels"]).groupby("case").mean()
  y, pred = df["y"].to_numpy().astype(int), np.argmax(df[list(range(4))].to_numpy(), 1)
  recall = skm.recall_score(y, pred, labels=[0, 1, 2, 3], average=None, zero_division=0)
  assert result["top1_sensitivity"]["a"] == pytest.approx(np.mean(recall[[0, 1, 3]]), abs=1e-12)
  assert result["top1"]["a"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
  assert len(y) == 12 < len(a["labels"])   # case level: 12 test cases, more images
  # The command prints and writes the same values.
  assert common.call(compare_command.cli, ["medssl-jax compare", str(wa / "predictions_test.npz"),
                                           str(wb / "predictions_test.npz"), "--num_replicates", "30",
                                           "--out", str(wa / "diff.json")]) == 0
  written = json.loads((wa / "diff.json").read_text())
  assert written["metrics"]["top1"]["a"] == ra["test"]["top1"]["value"]
  assert written["metric_settings"]["case_level"] and written["metric_settings"]["exclude_classes"] == [2]


def test_compare_refuses_files_scored_differently(two_runs, tmp_path):
  wa, wb = two_runs
  a = compare.load_predictions(wa / "predictions_test.npz")
  keys = ("image_ids", "case_ids", "labels", "probs", "task")
  for change, match in (({"case_level": False}, "case_level: True vs False"),
                        ({"exclude_classes": ()}, r"exclude_classes: \(2,\) vs \(\)"),
                        ({"class_names": ("a", "b", "c", "d")}, "class_names")):
    settings = {"case_level": a["case_level"], "exclude_classes": a["exclude_classes"],
                "class_names": a["class_names"]} | change
    compare.save_predictions(tmp_path / "other.npz", **{k: a[k] for k in keys}, **settings)
    with pytest.raises(ValueError, match=match):
      compare.compare(a, compare.load_predictions(tmp_path / "other.npz"), num_replicates=5)


def test_old_prediction_file_takes_its_settings_from_config_json(tmp_path):
  ids = np.array([f"i{k}" for k in range(6)])
  labels, probs = np.array([0, 1, 2, 0, 1, 2]), np.eye(3)[[0, 1, 1, 0, 1, 0]]
  np.savez(tmp_path / "predictions_test.npz", image_ids=ids, case_ids=ids, labels=labels, probs=probs,
           task=np.asarray("multiclass"))   # the format before metric settings were recorded
  with pytest.raises(ValueError, match="does not record the settings of its metric"):
    compare.load_predictions(tmp_path / "predictions_test.npz")
  (tmp_path / "config.json").write_text(json.dumps({"eval": {"case_level": False, "exclude_classes": [2]}}))
  old = compare.load_predictions(tmp_path / "predictions_test.npz")
  assert old["exclude_classes"] == (2,) and not old["case_level"]
  assert compare.point_metrics(old)["top1_sensitivity"] == 1.0   # classes 0 and 1: 2/2 each; 2 (0/2) left out
  (tmp_path / "config.json").write_text(json.dumps({"eval": {"case_level": False, "exclude_classes": []}}))
  assert compare.point_metrics(compare.load_predictions(tmp_path / "predictions_test.npz"))["top1_sensitivity"] == \
      pytest.approx(2 / 3)


def test_exclude_classes_by_name_or_checked_index():
  assert metrics.resolve_classes(("Other",), CLASSES, 4) == (2,)
  assert metrics.resolve_classes((3, "Acne"), CLASSES, 4) == (0, 3)
  assert metrics.resolve_classes((26,), (), 27) == (26,)
  with pytest.raises(ValueError, match=r"unknown class 'Othr'; the data's classes are \['Acne', 'Eczema', 'Other', "):
    metrics.resolve_classes(("Othr",), CLASSES, 4)
  with pytest.raises(ValueError, match=r"class index 26 does not exist \(the data's classes are \['Acne'"):
    metrics.resolve_classes((26,), CLASSES, 4)
  with pytest.raises(ValueError, match=r"class index 4 does not exist \(the data has 4 classes\)"):
    metrics.resolve_classes((4,), (), 4)
  with pytest.raises(ValueError, match="no class names .*give class indices"):
    metrics.resolve_classes(("Other",), (), 27)


def test_unknown_class_name_stops_the_run_before_training(tmp_path):
  manifest = write_manifest(tmp_path, {"train": 8, "val": 4, "test": 4})
  c = manifest_config(manifest)
  c.eval.exclude_classes = ("other",)   # case matters
  with pytest.raises(ValueError, match=r"unknown class 'other'; the data's classes are \['Acne', 'Eczema', 'Other'"):
    main_lib.run(c, str(tmp_path / "wd"))
  assert not (tmp_path / "wd" / "checkpoints").exists()


def test_a_subset_of_metrics_has_the_same_intervals(two_runs):
  """compare(metrics=...) bootstraps only the named metrics, each with the interval the full call
  gives it (the report asks for the two it prints); a name the file lacks is refused."""
  a, b = (compare.load_predictions(w / "predictions_test.npz") for w in two_runs)
  full = compare.compare(a, b, num_replicates=30, seed=3)
  part = compare.compare(a, b, num_replicates=30, seed=3, metrics=("auc", "top1"))
  assert list(part) == ["auc", "top1"] and len(full) > 2
  for name in part:
    assert part[name] == full[name], name
  with pytest.raises(ValueError, match=r"metrics \['mean_auc'\] are not metrics of this multiclass file"):
    compare.compare(a, b, num_replicates=5, metrics=("top1", "mean_auc"))


def test_compare_needs_two_files(two_runs, capsys, monkeypatch):
  monkeypatch.setattr(errors, "arm_exit_watchdog", lambda code: None)  # never in the test process
  only = str(two_runs[0] / "predictions_test.npz")
  assert common.call(compare_command.cli, ["medssl-jax compare", only]) == 2
  assert capsys.readouterr().err == (f"error: compare takes two prediction files A B, got 1 argument(s) [{only!r}]; "
                                     f"e.g. medssl-jax compare A/predictions_test.npz B/predictions_test.npz\n")
