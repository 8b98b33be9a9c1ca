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


def sigterm_at_call(real_jit_train_step, at_call: int):
  """A stand-in for `methods.jit_train_step` whose step sends this process a real SIGTERM (what a
  preempted TPU VM receives) at its `at_call`-th call, then runs the step."""
  import os
  import signal

  def jit_train_step(config, method=None):
    step_fn, calls = real_jit_train_step(config, method), [0]

    def wrapped(state, batch):
      calls[0] += 1
      if calls[0] == at_call:
        os.kill(os.getpid(), signal.SIGTERM)
      return step_fn(state, batch)
    return wrapped
  return jit_train_step


def restore_full_state(config, workdir: str):
  """Every field of the latest checkpoint of `workdir` (method state included), on the host."""
  import os
  import jax
  from medssl_jax import methods
  from medssl_jax.training import checkpoint as ckpt_lib
  from medssl_jax.training.sharding import make_mesh
  template = methods.create_state(config, make_mesh(), jax.random.key(0))
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  state = jax.device_get(ck.restore(template))
  ck.close()
  return state


def capture_loaded_encoder(monkeypatch) -> dict:
  """Patches finetune.load_encoder to record what a run starts from: the returned dict gets the
  state's step and its encoder params and batch stats (host copies) once the run loads them."""
  import jax
  from medssl_jax import finetune
  seen, real = {}, finetune.load_encoder

  def capture(state, path):
    state = real(state, path)
    seen.update(step=int(state.step), params=jax.device_get(state.params["encoder"]),
                batch_stats=jax.device_get(state.batch_stats.get("encoder", {})))
    return state
  monkeypatch.setattr(finetune, "load_encoder", capture)
  return seen
