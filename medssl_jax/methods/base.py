"""What a pretraining method is: the interface every file in `medssl_jax/methods/` implements.

A method is the *objective* (SimCLR's NT-Xent, MoCo's InfoNCE against a queue, ...). Where the
two views of a pair come from is not the method's business: that is the data pairing,
`config.pairing` ('views': two augmentations of one image; 'case': two images of one patient
case, i.e. MICLe), handled by the host pipelines. So MICLe is SimCLR with case pairing, and
MoCo with case pairing works the same way.

A method provides, in JAX terms:
- `default_config()`: its own config block (or None), `config.<config_group>`. A built-in
  method's block is data in `medssl_jax/settings.py` (METHOD_DEFAULTS, in every config, so that
  loading a config imports no JAX); a method registered elsewhere adds its block to its configs;
- `validate(config)`: refusals of settings it cannot run (a `UserError` saying what to change);
- `build_model(config)`: the network; it must return `(features, outputs)` from
  `__call__(x, train)` and have a `features(x, train=False)` method (linear probe, features);
- `init_extra(config, variables, rng)`: state beyond params / BN statistics / optimiser state,
  e.g. a momentum encoder and a queue; a pytree, saved and restored with every checkpoint;
- `train_step(config)`: a pure function `(state, batch) -> (state, metrics)` on global arrays,
  jitted by the caller with the state donated; `batch` holds 'view_a' and 'view_b' (N, S, S, C)
  float32 in [0, 1] and, for case pairing, 'distinct'; with aug.local_crops = L > 0 (multi-crop, for
  a method with `supports_local_crops`) also 'local_views' (N, L, s, s, C). Metrics must include 'loss'. (With
  `aug.on_device` the host sends uint8 views and `jit_train_step` augments them before the
  method's step sees them: a method never handles that mode.)

The loop, checkpoints (every field of the state, `training/checkpoint.py`), resume, logging,
the throughput command, the linear probe and multi-host runs only use this interface.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline import augment_device
from medssl_jax.training import optim
from medssl_jax.errors import UserError
from medssl_jax.models import from_config
from medssl_jax.training.sharding import replicated
from medssl_jax.training.state import TrainState
from medssl_jax.methods import registry

PAIRINGS = ("views", "case")


class Method:
  """Base class; a subclass sets `name` (and `config_group` if it has its own settings)."""
  name: str = ""
  config_group: str | None = None
  views_per_example: int = 2
  # Whether the step uses batch['local_views'] (multi-crop, aug.local_crops > 0); a method that does
  # not is refused such a config rather than silently training on the two global views only.
  supports_local_crops: bool = False

  def default_config(self) -> dict | None:
    """The method's own settings with their defaults, or None."""
    return None

  def validate(self, config) -> None:
    if config.pairing not in PAIRINGS:
      raise UserError(f"pairing={config.pairing!r}: expected one of {PAIRINGS} ('views': two augmentations "
                      f"of one image; 'case': two images of one patient case, as in MICLe)")
    local = num_local_crops(config)
    if local and not self.supports_local_crops:
      raise UserError(f"aug.local_crops={local}: method {self.name!r} does not use local views (multi-crop); set "
                      f"aug.local_crops=0, or use a method that does (dino, swav)")
    if local and not bool(config.aug.crop):
      raise UserError(f"aug.local_crops={local} needs aug.crop=True (local views are random resized crops)")
    if local and config.model.get("arch", "resnet") == "vit":
      raise UserError(f"aug.local_crops={local} with model.arch='vit': local views of {config.aug.local_crop_size} px "
                      f"need interpolated position embeddings, which this ViT does not have; use "
                      f"model.arch='resnet', or aug.local_crops=0")
    if local and int(config.aug.local_crop_size) > int(config.data.image_size):
      raise UserError(f"aug.local_crop_size={config.aug.local_crop_size} is above data.image_size="
                      f"{config.data.image_size}: local views are the small ones (the papers: 96 beside 224)")

  def build_model(self, config):
    return from_config(config.model)

  def init_extra(self, config, variables, rng) -> Any:
    del config, variables, rng
    return None

  def train_step(self, config) -> Callable:
    raise NotImplementedError(f"method {self.name!r} has no train_step")

  def images_per_step(self, config) -> int:
    return (self.views_per_example + num_local_crops(config)) * int(config.train.batch_size)


def num_local_crops(config) -> int:
  """aug.local_crops (0 where a config predates multi-crop)."""
  return int(config.aug.get("local_crops", 0) or 0)


def interleave_views(view_a, view_b):
  """(N, ...) x 2 -> (2N, ...) as a0, b0, a1, b1, ...: each device keeps its own examples."""
  return jnp.stack([view_a, view_b], axis=1).reshape((-1,) + view_a.shape[1:])


def project_views(state, params, batch: dict):
  """(out_a, out_b, new BN statistics): 'view_a' then 'view_b' through `state.apply_fn` in train mode, each
  on its own (its own BN statistics over the global batch, the running averages updated twice), as the
  non-contrastive methods' references forward the two views; out = the network's outputs."""
  stats, outs = state.batch_stats, []
  for view in ("view_a", "view_b"):
    (_, out), upd = state.apply_fn({"params": params, "batch_stats": stats}, batch[view], train=True,
                                   mutable=["batch_stats"])
    stats = upd["batch_stats"]
    outs.append(out)
  return outs[0], outs[1], stats


def global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree_util.tree_leaves(tree)))


def pairing_metrics(batch: dict) -> dict:
  """Metrics of the data pairing every method reports: the fraction of pairs from two images."""
  if "distinct" in batch:
    return {"distinct_pairs": jnp.mean(batch["distinct"].astype(jnp.float32))}
  return {}


def create_state(config, mesh, rng, method: Method | None = None) -> TrainState:
  """The replicated TrainState of `config.method` on `mesh` (network, optimiser, method state)."""
  method = registry.get(config.method) if method is None else method
  method.validate(config)
  model = method.build_model(config)
  tx = optim.make_optimizer(config.optim, config.train.batch_size, config.train.num_steps)
  shape = (2, config.data.image_size, config.data.image_size, config.data.channels)

  def init(rng):
    variables = model.init(rng, jnp.zeros(shape, jnp.float32), train=True)
    params = variables["params"]
    extra = method.init_extra(config, variables, jax.random.fold_in(rng, 1))
    return TrainState(step=jnp.int32(0), params=params, batch_stats=variables["batch_stats"],
                      opt_state=tx.init(params), extra=extra, apply_fn=model.apply, tx=tx)

  return jax.jit(init, out_shardings=replicated(mesh))(rng)


def jit_train_step(config, method: Method | None = None):
  """The method's step, jitted with the state's buffers donated (shardings from the arguments:
  state replicated, batch on the data axis)."""
  method = registry.get(config.method) if method is None else method
  step = method.train_step(config)
  if bool(config.aug.get("on_device", False)):  # uint8 views in; flip, colour, blur... in the step
    step = augment_device.wrap_step(step, config)
  return jax.jit(step, donate_argnums=(0,))


def synthetic_batch(config, rng: np.random.Generator, batch_size: int | None = None) -> dict:
  """Random views in [0, 1] (uint8 0..255 with aug.on_device, as the host sends them then): enough
  for timing the step and for tests."""
  b = config.train.batch_size if batch_size is None else batch_size
  s, c = config.data.image_size, config.data.channels
  shapes = {"view_a": (b, s, s, c), "view_b": (b, s, s, c)}
  if num_local_crops(config):
    ls = int(config.aug.local_crop_size)
    shapes["local_views"] = (b, num_local_crops(config), ls, ls, c)
  if bool(config.aug.get("on_device", False)):
    return {k: rng.integers(0, 256, shape, np.uint8) for k, shape in shapes.items()}
  return {k: rng.random(shape, np.float32) for k, shape in shapes.items()}
