"""How large are an encoder's frozen features, and does a linear model need them standardised?

  python -m benchmarks.feature_scale --dataset=pneumoniamnist                  # random init
  python -m benchmarks.feature_scale --dataset=pneumoniamnist --checkpoint=RUN  # a run's encoder

Builds Study A's evaluation model (same architecture and eval-mode batch norm as its linear
evaluation), takes the encoder's features of the training images (the first --max_train) and of
the test images, and fits scikit-learn's logistic regression (default L2, C=1) on the raw and on
the standardised features (mean and standard deviation of the training features). Prints JSON:
the features' spread and both test accuracies / AUCs. This is the measurement behind the
studies' `finetune.feature_norm='batchnorm'` (benchmarks/README.md).
"""
import argparse
import json
import os

import jax
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from benchmarks import common
from benchmarks import label_efficiency as study_a
from input_pipeline import backends
from input_pipeline import sources
from medssl_jax.runs import classify
from medssl_jax.runs import supervised
from medssl_jax.training.inference import batched_apply
from medssl_jax.training.sharding import make_mesh


def encoder_features(config, checkpoint: str, split_sources):
  mesh = make_mesh()
  state = classify.create_state(config, mesh, num_outputs=2, rng=jax.random.key(config.seed))
  if checkpoint:
    state = supervised.load_encoder(state, checkpoint)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  fn = jax.jit(lambda x: state.apply_fn(variables, x, method=lambda m, x: m.encoder(x, train=False)))
  pipeline = backends.get(config.data.pipeline)
  out = []
  for source, indices in split_sources:
    images, _ = pipeline.make_eval_arrays(source, config.data.image_size, config.data.channels, indices=indices)
    out.append(np.asarray(batched_apply(fn, images, mesh, 256), np.float64))
  return out


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", choices=sorted(study_a.FILES), default="pneumoniamnist")
  p.add_argument("--checkpoint", default="", help="a run's workdir whose encoder is used (default: random init)")
  p.add_argument("--scale", choices=sorted(common.SCALES), default="small", help="architecture of this scale")
  p.add_argument("--data_dir", default=common.DEFAULT_DATA_DIR)
  p.add_argument("--max_train", type=int, default=2000, help="training images for the logistic regression")
  a = p.parse_args(argv)
  path = os.path.join(a.data_dir, study_a.FILES[a.dataset])
  c = study_a.eval_config(path, common.SCALES[a.scale], mode="linear_eval", init="pretrained" if a.checkpoint
                          else "random", checkpoint=a.checkpoint, fraction=1.0, draw=0)
  train, test = (sources.load_source(c.data, split) for split in (c.data.train_split, c.data.eval_split))
  n = min(a.max_train, len(train))
  h_train, h_test = encoder_features(c, a.checkpoint, [(train, np.arange(n)), (test, None)])
  y_train, y_test = np.asarray(train.labels)[:n], np.asarray(test.labels)
  if len(np.unique(y_test)) != 2:
    raise SystemExit(f"{a.dataset}: this diagnostic reports the binary AUC; the test split has "
                     f"{len(np.unique(y_test))} classes")
  result = {"dataset": a.dataset, "encoder": a.checkpoint or "random init", "scale": a.scale,
            "feature_dim": int(h_test.shape[1]), "train_images": n, "test_images": int(len(y_test)),
            "feature_std_across_images_mean": float(h_test.std(0).mean()),
            "feature_abs_mean": float(np.abs(h_test).mean()),
            "constant_features": int(np.sum(h_train.std(0) < 1e-8)),
            "majority_rate_test": float(np.mean(y_test == np.bincount(y_train).argmax()))}
  scaler = StandardScaler().fit(h_train)
  for name, (tr, te) in {"raw": (h_train, h_test),
                         "standardised": (scaler.transform(h_train), scaler.transform(h_test))}.items():
    clf = LogisticRegression(max_iter=5000).fit(tr, y_train)
    result[f"logreg_{name}"] = {"test_accuracy": float(clf.score(te, y_test)),
                                "test_auc": float(roc_auc_score(y_test, clf.predict_proba(te)[:, 1]))}
  print(json.dumps(result, indent=1))
  return result


if __name__ == "__main__":
  main()
