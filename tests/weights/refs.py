"""What the weight-port tests share: test images, the closeness measure, and reference models
made non-trivial (random batch-norm statistics, norm scales and biases, so every tensor of a port
matters). Torch is imported by the functions that need it, so test_simclr_tf.py (TensorFlow, no
torch) can use the rest."""
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def images(n=2, size=32, seed=0):
  """[0, 1] float32 NHWC images."""
  return np.random.RandomState(seed).rand(n, size, size, 3).astype(np.float32)


def rel_err(ours, ref) -> float:
  """max |ours - ref| relative to the output scale max |ref|."""
  return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def numpy_state_dict(model) -> dict:
  return {k: v.numpy() for k, v in model.state_dict().items()}


def randomize_norms(model):
  """In place, in eval mode: random BN running statistics, norm scales/offsets and Linear biases."""
  import torch
  model.eval()
  with torch.no_grad():
    for mod in model.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        mod.running_mean.uniform_(-0.5, 0.5)
        mod.running_var.uniform_(0.5, 2.0)
        mod.weight.uniform_(0.5, 1.5)
        mod.bias.uniform_(-0.2, 0.2)
      elif isinstance(mod, torch.nn.LayerNorm):
        mod.weight.uniform_(0.5, 1.5)
        mod.bias.uniform_(-0.2, 0.2)
      elif isinstance(mod, torch.nn.Linear) and mod.bias is not None:
        mod.bias.uniform_(-0.1, 0.1)
  return model
