"""benchmarks/feature_scale.py: the feature-spread diagnostic on real data."""
import numpy as np

from benchmarks import feature_scale


def test_feature_scale_diagnostic_on_real_data(shared_data):
  r = feature_scale.main(["--dataset=breastmnist", "--scale=smoke", "--max_train=200",
                          f"--data_dir={shared_data}"])
  with np.load(shared_data / "breastmnist.npz") as d:
    y_train, y_test = d["train_labels"].ravel()[:200], d["test_labels"].ravel()
  assert (r["train_images"], r["test_images"], r["feature_dim"]) == (200, len(y_test), 64)
  assert r["majority_rate_test"] == np.mean(y_test == np.bincount(y_train).argmax())
  assert 0 < r["feature_std_across_images_mean"] < 0.05  # a random encoder's features are tiny
  for k in ("logreg_raw", "logreg_standardised"):
    assert 0.0 <= r[k]["test_auc"] <= 1.0
