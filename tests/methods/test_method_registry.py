"""A method defined in this test file alone registers, trains, checkpoints and resumes through the
library's own pretraining run: nothing else in the library names it. Its extra state (a step
counter and a moving average of the weights) is saved and restored with every checkpoint."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax import main as main_lib
from medssl_jax import methods
from tests.helpers import restore_full_state, sigterm_at_call, tiny_config


def _toy_step(state, batch, *, decay):
  """Pulls the projections of the two views together (a toy objective; it collapses, which is fine)."""
  def loss_fn(params):
    x = methods.interleave_views(batch["view_a"], batch["view_b"])
    (_, z), updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x, train=True,
                                     mutable=["batch_stats"])
    z = z.reshape((-1, 2) + z.shape[1:])
    return jnp.mean(jnp.square(z[:, 0] - z[:, 1])), updates["batch_stats"]

  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new = state.apply_gradients(grads, stats)
  extra = {"count": state.extra["count"] + 1,
           "average": jax.tree_util.tree_map(lambda a, p: decay * a + (1 - decay) * p, state.extra["average"],
                                             new.params)}
  return new.replace(extra=extra), {"loss": loss}


class ToyMethod(methods.Method):
  name = "toy_test_method"
  config_group = "toy"

  def default_config(self):
    return {"decay": 0.5}

  def init_extra(self, config, variables, rng):
    return {"count": jnp.int32(0), "average": jax.tree_util.tree_map(jnp.array, variables["params"])}

  def train_step(self, config):
    return functools.partial(_toy_step, decay=float(config.toy.decay))


@pytest.fixture(scope="module", autouse=True)
def _registered_while_these_tests_run():
  # Registered here, not at import: pytest imports every test module before running any, and
  # a registration at import would show in other modules' tests (the built-in method list).
  methods.register(ToyMethod)
  yield
  methods.unregister(ToyMethod.name)


def _config():
  c = tiny_config(batch_size=16, steps=4)
  c.method = ToyMethod.name
  c.unlock()
  c.toy = ToyMethod().default_config()  # the method's block, as configs/base.py adds it for built-in ones
  c.lock()
  c.optim.warmup_steps = 0
  c.data.source = "synthetic"
  c.data.synthetic.num_cases, c.data.synthetic.image_size = 64, 16
  c.aug.blur_prob = 0.0
  c.train.log_every = c.train.checkpoint_every = 2
  c.train.prefetch = 1
  return c


def test_toy_method_trains_checkpoints_and_resumes(tmp_path, monkeypatch):
  c = _config()
  assert ToyMethod.name in methods.names()
  results = main_lib.run(c, str(tmp_path / "straight"))
  assert results["completed"] and results["method"] == ToyMethod.name
  straight = restore_full_state(c, str(tmp_path / "straight"))
  assert ckpt_lib.state_items(straight) == ("params", "batch_stats", "opt_state", "extra")
  assert int(straight.extra["count"]) == 4

  real = methods.jit_train_step
  monkeypatch.setattr(methods, "jit_train_step", sigterm_at_call(real, 2))
  assert main_lib.run(c, str(tmp_path / "resumed"))["final_step"] == 2
  assert int(restore_full_state(c, str(tmp_path / "resumed")).extra["count"]) == 2
  monkeypatch.setattr(methods, "jit_train_step", real)
  assert main_lib.run(c, str(tmp_path / "resumed"))["completed"]
  resumed = restore_full_state(c, str(tmp_path / "resumed"))
  # The extra state went through the checkpoint: a reset on resume would give count 2, and an
  # average restarted from the step-2 weights.
  assert int(resumed.extra["count"]) == 4
  for a, b in zip(jax.tree_util.tree_leaves(resumed.extra), jax.tree_util.tree_leaves(straight.extra)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(straight.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unknown_and_renamed_methods_are_refused():
  with pytest.raises(ValueError, match="method='no_such_method' is not a registered pretraining method; known: .*byol.*vicreg"):
    methods.get("no_such_method")
  with pytest.raises(ValueError, match="pairing='case'"):
    methods.get("micle")
