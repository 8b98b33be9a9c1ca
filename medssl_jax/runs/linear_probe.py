"""A quick linear probe: logistic regression on frozen encoder features.

Used at the end of a pretraining run (`probe.enabled`) to show what the features are worth
next to the same probe on a randomly initialised encoder. Features are extracted on the
device mesh; the classifier is sklearn's multinomial logistic regression on standardised
features. (The full linear-evaluation protocol of the papers is a run mode of its own.)
"""
from absl import logging
import jax
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from medssl_jax import methods
from medssl_jax.training.inference import batched_apply
from medssl_jax.evaluation import bootstrap
from medssl_jax.evaluation import metrics


def extract_features(state, images: np.ndarray, mesh, batch_size: int) -> np.ndarray:
  """Encoder features (eval-mode BN) of `images`, batched and sharded over `mesh`."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  fn = jax.jit(lambda x: state.apply_fn(variables, x, train=False, method="features"))
  return batched_apply(fn, images, mesh, batch_size)


def fit_and_score(train_x, train_y, test_x, test_y, seed: int = 0) -> dict:
  """Multinomial logistic regression on standardised features; test accuracy with a 95% CI."""
  scaler = StandardScaler().fit(train_x)
  clf = LogisticRegression(max_iter=3000, C=1.0, random_state=seed)
  clf.fit(scaler.transform(train_x), train_y)
  probs = np.zeros((len(test_x), int(max(train_y.max(), test_y.max())) + 1))
  probs[:, clf.classes_] = clf.predict_proba(scaler.transform(test_x))
  top1 = lambda y, p: metrics.top_k_accuracy(y, p, 1)
  return {"top1": bootstrap.bootstrap_ci(test_y, probs, top1, num_replicates=1000, seed=seed),
          "num_train": int(len(train_x)), "num_test": int(len(test_x))}


def probe_pretrained(config, state, mesh, sources, pipeline) -> dict:
  """Linear probe of the pretrained encoder, and of a random one if `probe.compare_random_init`."""
  train_src = sources.load_source(config.data, config.data.train_split)
  test_src = sources.load_source(config.data, config.data.eval_split)
  rng = np.random.default_rng(config.seed)
  idx = np.arange(len(train_src))
  if len(idx) > config.probe.max_train_examples:
    idx = np.sort(rng.choice(idx, config.probe.max_train_examples, replace=False))
  crop = config.aug.eval_crop_fraction
  train_x, train_y = pipeline.make_eval_arrays(train_src, config.data.image_size, config.data.channels, indices=idx,
                                                crop_fraction=crop)
  test_x, test_y = pipeline.make_eval_arrays(test_src, config.data.image_size, config.data.channels,
                                              crop_fraction=crop)
  encoders = {"pretrained": state}
  if config.probe.compare_random_init:
    encoders["random_init"] = methods.create_state(config, mesh, jax.random.key(config.seed))
  out = {}
  for k, (name, st) in enumerate(encoders.items()):
    logging.info("Linear probe %d/%d (%s encoder): features of %d training and %d test images, then logistic "
                 "regression", k + 1, len(encoders), name, len(train_x), len(test_x))
    f_train = extract_features(st, train_x, mesh, config.probe.batch_size)
    f_test = extract_features(st, test_x, mesh, config.probe.batch_size)
    out[name] = fit_and_score(f_train, np.asarray(train_y), f_test, np.asarray(test_y), seed=config.seed)
  return out
