"""medssl-jax: self-supervised pretraining and transfer evaluation for medical images.

Importing the package (models, losses, optimizers, train step) does not import TensorFlow;
only `input_pipeline` does, so the step runs on machines with JAX alone.
"""
__version__ = "0.1.0"
