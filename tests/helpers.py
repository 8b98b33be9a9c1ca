"""Small configs shared by the tests: tiny ResNets on tiny images."""
from configs.base import get_base_config


def tiny_config(batch_size=16, image_size=16, depth=18, width=0.125, steps=10):
  c = get_base_config()
  c.model.depth, c.model.width, c.model.stem = depth, width, "small"
  c.model.head_layers, c.model.head_dim = 2, 16
  c.data.image_size, c.data.channels = image_size, 3
  c.train.batch_size, c.train.num_steps = batch_size, steps
  c.optim.base_lr, c.optim.warmup_steps = 0.3, 2
  return c
