"""Picks the host pipeline: tf.data (`pipeline.py`), its TensorFlow-free twin (`numpy_pipeline.py`), or
that twin on grain worker processes (`grain_pipeline.py`, the same batches as 'numpy').

All have `pretrain_iterator`, `supervised_iterator` and `make_eval_arrays`, and put the same
images, pairs and view seeds in every batch (`indexing.py`).
"""
from absl import logging
from input_pipeline import numpy_pipeline

NAMES = ("auto", "tf", "numpy", "grain")


def get(name: str = "auto", host_workers: int = 0):
  """The pipeline module for data.pipeline=`name`; 'auto' takes tf.data when TensorFlow imports.
  `host_workers` (data.host_workers) is grain's alone: set with another pipeline, it is refused."""
  if name not in NAMES:
    raise ValueError(f"data.pipeline={name!r}: expected one of {NAMES}")
  if int(host_workers) and name != "grain":
    from medssl_jax.errors import UserError
    raise UserError(f"data.host_workers={host_workers} sets grain's worker processes, but data.pipeline={name!r}; "
                    f"set data.pipeline='grain', or data.host_workers=0")
  if name == "grain":
    from input_pipeline import grain_pipeline
    grain_pipeline._grain()  # not installed: one line saying so, before any work
    return grain_pipeline
  if name in ("auto", "tf"):
    try:
      from input_pipeline import pipeline
      return pipeline
    except ImportError as e:
      if name == "tf":
        raise ImportError(f"data.pipeline='tf' needs TensorFlow ({e}); install tensorflow-cpu or set "
                          f"data.pipeline='numpy'") from e
      logging.info("TensorFlow is not importable (%s): using the NumPy host pipeline", e)
  return numpy_pipeline


def short_name(module) -> str:
  """'tf', 'numpy' or 'grain', for results files."""
  for name in ("numpy", "grain"):
    if module.__name__.endswith(f"{name}_pipeline"):
      return name
  return "tf"
