"""Demo: SimCLR on the embedded synthetic data with a narrow ResNet-18 at 32 px, then a
linear probe of the frozen features against a randomly initialised encoder. ~5 min on 2 CPU cores.

LARS base lr 0.075 under the square-root rule (0.075 x sqrt(128) = 0.85 at the peak): the SimCLR
reference's pairing for small batches (paper App. B.1, README). Readings for a CPU demo (no paper
behind them): crops of area 0.2-1 and no blur at 32 px, colour strength 0.5, temperature 0.2,
64-d projection, 20 warm-up steps of 300.

  medssl-jax train --config=configs/demo.py --workdir=workdirs/demo
"""
from configs.base import finalize, get_base_config


def get_config():
  c = get_base_config()
  c.data.source = "synthetic"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.synthetic.num_cases = 600
  c.data.synthetic.num_classes = 4
  c.model.depth = 18
  c.model.width = 0.25
  c.model.stem = "small"
  c.model.head_layers = 2
  c.model.head_dim = 64
  # Small images: milder crops than ImageNet's (0.08, 1), and blur off at 32 px.
  c.aug.crop_area_min = 0.2
  c.aug.color_strength = 0.5
  c.aug.blur_prob = 0.0
  c.optim.base_lr = 0.075  # SimCLR's value for the square-root rule (0.3 is the linear rule's)
  c.optim.lr_scaling = "sqrt"
  c.optim.warmup_steps = 20
  c.optim.weight_decay = 1e-6
  c.train.batch_size = 128
  c.train.num_steps = 300
  c.simclr.temperature = 0.2
  c.train.log_every = 25
  c.train.checkpoint_every = 100
  c.probe.enabled = True
  return finalize(c)
