"""What several test modules share: tiny configs (tiny ResNets on tiny images), test data writers
and a toy source. Test modules import from here, never from each other (pytest imports a test
module under its basename, so a second import by package path makes a second module object)."""
import glob
import os

import numpy as np

from configs.base import get_base_config


def tiny_config(batch_size=16, image_size=16, depth=18, width=0.125, steps=10):
  c = get_base_config()
  c.model.depth, c.model.width, c.model.stem = depth, width, "small"
  c.model.head_layers, c.model.head_dim = 2, 16
  c.data.image_size, c.data.channels = image_size, 3
  c.train.batch_size, c.train.num_steps = batch_size, steps
  c.optim.base_lr, c.optim.warmup_steps = 0.3, 2
  return c


def sigterm_at_call(real_jit_train_step, at_call: int, signum=None):
  """A stand-in for `methods.jit_train_step` whose step sends this process a real SIGTERM (what a
  preempted TPU VM receives; or `signum`, e.g. SIGINT for a Ctrl-C) at its `at_call`-th call, then runs the step."""
  import os
  import signal
  signum = signal.SIGTERM if signum is None else signum

  def jit_train_step(config, method=None):
    step_fn, calls = real_jit_train_step(config, method), [0]

    def wrapped(state, batch):
      calls[0] += 1
      if calls[0] == at_call:
        os.kill(os.getpid(), signum)
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
  """Patches supervised.load_encoder to record what a run starts from: the returned dict gets the
  state's step and its encoder params and batch stats (host copies) once the run loads them."""
  import jax
  from medssl_jax.runs import supervised
  seen, real = {}, supervised.load_encoder

  def capture(state, path, *args, **kwargs):
    state = real(state, path, *args, **kwargs)
    seen.update(step=int(state.step), params=jax.device_get(state.params["encoder"]),
                batch_stats=jax.device_get(state.batch_stats.get("encoder", {})))
    return state
  monkeypatch.setattr(supervised, "load_encoder", capture)
  return seen


def pretrain_run_config(steps=6, batch=16, method="simclr", pairing="views"):
  """A tiny pretraining run on the synthetic data (16 px, 64 cases) that checkpoints every 2 steps."""
  c = tiny_config(batch_size=batch, image_size=16, steps=steps)
  c.method, c.pairing = method, pairing
  c.data.source = "synthetic"
  c.data.synthetic.num_cases = 64
  c.data.synthetic.image_size = 16
  c.aug.blur_prob = 0.0
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.train.prefetch = 1
  c.optim.warmup_steps = min(2, steps - 1)
  return c


# Runs in a subprocess on 8 CPU devices; XLA's backend optimisations off (these runs check how a
# process ends, not its numbers): compiling a tiny ResNet's init drops from ~30 s to ~6 s of CPU.
FAST_XLA = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"


def write_jpegs(folder, n, truncated=(), size=48, seed=0):
  """n real JPEGs im{i}.jpg; those in `truncated` cut to half their bytes (an interrupted copy)."""
  import os

  from PIL import Image
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  paths = []
  for i in range(n):
    p = os.path.join(folder, f"im{i}.jpg")
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p, quality=90)
    if i in truncated:
      data = open(p, "rb").read()
      open(p, "wb").write(data[:len(data) // 2])
    paths.append(p)
  return paths


def write_manifest(root, n, truncated=(), splits=None):
  """manifest.csv over `n` JPEGs in root/img: one case per image, label i % 2."""
  import os
  write_jpegs(os.path.join(root, "img"), n, truncated)
  splits = splits or (lambda i: "train")
  rows = ["path,case_id,label,split"] + [f"img/im{i}.jpg,c{i},{i % 2},{splits(i)}" for i in range(n)]
  path = os.path.join(root, "manifest.csv")
  with open(path, "w") as f:
    f.write("\n".join(rows) + "\n")
  return path


# A toy labelled source for the input pipeline tests: case k has TOY_CASE_SIZES[k] images.
TOY_CASE_SIZES = [1, 2, 3, 1, 4, 2, 6, 1]


def toy_source(case_sizes, size=8):
  """Case k has case_sizes[k] images; pixel values encode (case, image) so views can be traced."""
  images, labels, cases, ids = [], [], [], []
  for k, m in enumerate(case_sizes):
    for i in range(m):
      images.append(np.full((size, size, 1), 10 * k + i, np.uint8))
      labels.append(k % 2)
      cases.append(f"case{k}")
      ids.append(f"case{k}-img{i}")
  from input_pipeline import sources
  return sources.Source("toy", np.array(labels), np.array(cases), np.array(ids), 2, images=np.stack(images))


def toy_pretrain_config(pairing="case"):
  """8 px grey images, bags of at most 6, no colour / blur / greyscale augmentation."""
  c = get_base_config()
  c.data.image_size, c.data.channels, c.data.max_bag_size = 8, 1, 6
  c.aug.color_prob = c.aug.blur_prob = c.aug.grayscale_prob = 0.0
  c.aug.crop_area_min = 0.5
  c.pairing = pairing
  return c


def scalar_steps(workdir, tag):
  """Steps at which `tag` was written to the run's TensorBoard event files (scalar or tensor form)."""
  return [step for step, _ in scalar_values(workdir, tag)]


def scalar_values(workdir, tag):
  """[(step, value)] of `tag` in the run's TensorBoard event files, by step."""
  from tensorboard.backend.event_processing import event_file_loader  # only the tests that read events need it
  from tensorboard.util import tensor_util
  out = []
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for event in event_file_loader.EventFileLoader(path).Load():
      for v in event.summary.value:
        if v.tag == tag:
          value = v.simple_value if v.HasField("simple_value") else float(tensor_util.make_ndarray(v.tensor))
          out.append((event.step, value))
  return sorted(out)


def leaves(tree):
  """The leaves of `tree` as numpy arrays, in tree order."""
  import jax
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def method_steps(config, devices, n=2):
  """`config`'s method state created on a mesh of `devices` (key 0), then `n` jitted steps, step i on
  methods.synthetic_batch(config, np.random.default_rng(i)). Returns (states, history): host copies of
  the state before the first step and after each step (n + 1 states: states[0] the initial one,
  states[-1] the final one) and each step's metrics (n dicts)."""
  import jax
  from medssl_jax import methods
  from medssl_jax.training.sharding import make_mesh, to_global
  mesh = make_mesh(devices)
  state = methods.create_state(config, mesh, jax.random.key(0))
  step = methods.jit_train_step(config)
  history, states = [], [jax.device_get(state)]
  for i in range(n):
    state, metrics = step(state, to_global(methods.synthetic_batch(config, np.random.default_rng(i)), mesh))
    history.append(jax.device_get(metrics))
    states.append(jax.device_get(state))
  return states, history


def assert_updates_close(after_a, after_b, before, what="param updates"):
  """The updates after_a - before and after_b - before agree to 0.1% of the leaf's largest update,
  floored at a few ulps of the weights (test_moco_v2.py)."""
  la, lb, l0 = leaves(after_a), leaves(after_b), leaves(before)
  assert len(la) == len(lb) == len(l0) > 0, what
  for a, b, p0 in zip(la, lb, l0):
    u_a, u_b = a - p0, b - p0
    floor = 4 * np.finfo(np.float32).eps * max(np.abs(p0).max(), 1e-6)
    np.testing.assert_allclose(u_a, u_b, rtol=1e-3, atol=max(1e-3 * np.abs(u_b).max(), floor), err_msg=what)


def assert_sharded_equals_unsharded(config, *, n=2, min_moved=0.5, bn_floor=1e-6):
  """`n` steps of `config` on all (8) devices equal those on 1 device: the losses to 1e-5, the parameter
  updates as `assert_updates_close` (after more than `min_moved` of the parameter leaves moved), and,
  unless `bn_floor` is None, the BN statistics to 1e-4 relative, atol max(1e-4 x the leaf's largest
  value, bn_floor). Returns (states_8, states_1, history_8, history_1) of `method_steps`, for the
  method's own checks (its target, center, ...)."""
  import jax
  s8, m8 = method_steps(config, jax.devices(), n)
  s1, m1 = method_steps(config, jax.devices()[:1], n)
  assert len(m8) == len(m1) == n
  for a, b in zip(m8, m1):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
  moved = [np.abs(x - y).max() > 0 for x, y in zip(leaves(s8[-1].params), leaves(s8[0].params))]
  assert np.mean(moved) > min_moved
  assert_updates_close(s8[-1].params, s1[-1].params, s8[0].params, "param updates")
  if bn_floor is not None:
    la, lb = leaves(s8[-1].batch_stats), leaves(s1[-1].batch_stats)
    assert len(la) == len(lb) > 0, "BN statistics"
    for a, b in zip(la, lb):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=max(1e-4 * np.abs(b).max(), bn_floor), err_msg="BN statistics")
  return s8, s1, m8, m1
