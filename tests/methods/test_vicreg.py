"""VICReg as a method: the step on 8 devices equals 1 device, its loss is the weighted terms of the two
views' projections, settings are refused in one line; configs/vicreg.py carries the paper's numbers and
its :local variant runs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vicreg as vicreg_config
from medssl_jax import main as main_lib
from medssl_jax import methods
from medssl_jax.losses import vicreg_loss
from medssl_jax.training import optim
from medssl_jax.training.sharding import make_mesh, to_global
from tests.helpers import assert_sharded_equals_unsharded, tiny_config


def vicreg_tiny(batch=16, steps=10):
  c = tiny_config(batch_size=batch, steps=steps)
  c.method = "vicreg"
  c.model.head_layers, c.model.head_dim, c.vicreg.projector_hidden = 3, 32, 32
  c.optim.base_lr, c.optim.warmup_steps = 0.2, 0
  return c


def test_eight_devices_equal_one_device():
  states_8, _, _, _ = assert_sharded_equals_unsharded(vicreg_tiny())
  s8 = states_8[-1]
  assert s8.extra is None and set(s8.params) == {"encoder", "head"}


def test_the_steps_loss_is_the_loss_of_the_two_projections():
  config = vicreg_tiny()
  config.vicreg.sim_weight, config.vicreg.var_weight, config.vicreg.cov_weight = 2.0, 3.0, 5.0
  mesh = make_mesh()
  state = methods.create_state(config, mesh, jax.random.key(0))
  variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  batch = methods.synthetic_batch(config, np.random.default_rng(0))
  _, metrics = methods.jit_train_step(config)(state, to_global(batch, mesh))
  model = methods.get("vicreg").build_model(config)
  (_, z_a), upd = model.apply(variables, jnp.asarray(batch["view_a"]), train=True, mutable=["batch_stats"])
  (_, z_b), _ = model.apply({"params": variables["params"], **upd}, jnp.asarray(batch["view_b"]), train=True,
                            mutable=["batch_stats"])
  np.testing.assert_allclose(metrics["loss"], vicreg_loss(z_a, z_b, sim_weight=2.0, var_weight=3.0, cov_weight=5.0),
                             rtol=1e-4)
  np.testing.assert_allclose(metrics["loss"], 2 * metrics["invariance"] + 3 * metrics["variance"]
                             + 5 * metrics["covariance"], rtol=1e-5)


@pytest.mark.parametrize("key,value,match", [("var_weight", -1.0, "vicreg.var_weight=-1.0 must be >= 0"),
                                             ("projector_hidden", 0, "vicreg.projector_hidden=0 must be a positive")])
def test_settings_are_checked(key, value, match):
  c = vicreg_tiny()
  c.vicreg[key] = value
  with pytest.raises(ValueError, match=match):
    methods.get("vicreg").validate(c)
  with pytest.raises(ValueError, match="train.batch_size=1: VICReg's variance and covariance"):
    methods.get("vicreg").validate(vicreg_tiny(batch=1))


def test_config_has_the_papers_numbers():
  c = vicreg_config.get_config()
  assert (c.method, c.vicreg.sim_weight, c.vicreg.var_weight, c.vicreg.cov_weight, c.model.head_layers,
          c.model.head_dim, c.vicreg.projector_hidden) == ("vicreg", 25.0, 25.0, 1.0, 3, 8192, 8192)
  assert (c.optim.name, c.optim.base_lr, c.optim.lr_scaling, c.optim.weight_decay, c.train.batch_size) == \
      ("lars", 0.2, "linear", 1e-6, 2048)
  assert c.train.num_steps == 1000 * 625 and c.optim.warmup_steps == 10 * 625
  for variant in ("", "local"):
    c = vicreg_config.get_config(variant)
    methods.get("vicreg").validate(c)
    optim.make_optimizer(c.optim, c.train.batch_size, c.train.num_steps)
  with pytest.raises(ValueError, match="unknown variant"):
    vicreg_config.get_config("nope")


def test_local_variant_runs_two_steps_on_synthetic_data(tmp_path):
  c = vicreg_config.get_config("local")
  assert (c.data.source, c.data.image_size, c.data.channels, c.train.num_steps, c.probe.enabled) == \
      ("npz", 28, 1, 500, True)
  assert c.data.path.endswith("shared/data/pneumoniamnist.npz")
  c.data.source, c.data.synthetic.image_size, c.data.synthetic.num_cases = "synthetic", 28, 64
  c.train.batch_size, c.train.num_steps, c.optim.warmup_steps, c.probe.enabled = 16, 2, 0, False
  c.train.prefetch = 1
  r = main_lib.run(c, str(tmp_path / "local"))
  assert r["completed"] and r["method"] == "vicreg" and np.isfinite(r["metrics"]["loss"])
