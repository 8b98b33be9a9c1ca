"""SimSiam as a method: the step on 8 devices equals 1 device, there is no target state, the gradient
is the loss's with the other view's projection held fixed (stop-gradient), settings are refused in
one line; configs/simsiam.py carries the paper's numbers and its :local variant runs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import simsiam as simsiam_config
from medssl_jax import main as main_lib
from medssl_jax import methods
from medssl_jax.losses import simsiam_loss
from medssl_jax.training import optim
from tests.helpers import assert_sharded_equals_unsharded, leaves, tiny_config


def simsiam_tiny(batch=16, steps=10):
  c = tiny_config(batch_size=batch, steps=steps)
  c.method = "simsiam"
  c.model.head_layers = 3
  c.simsiam.projector_hidden, c.simsiam.predictor_hidden = 32, 8
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "sgd", 0.05, "linear"
  c.optim.weight_decay, c.optim.warmup_steps = 1e-4, 0
  return c


def test_eight_devices_equal_one_device():
  # BN statistics to 1e-4, with an absolute floor of 1e-6: the predictor's first BN sees the projector's
  # affine-free BN output, whose batch mean is 0 in exact arithmetic, so its running mean is rounding noise.
  states_8, _, _, _ = assert_sharded_equals_unsharded(simsiam_tiny(), bn_floor=1e-6)
  s8 = states_8[-1]
  assert s8.extra is None and set(s8.params) == {"encoder", "head", "predictor"}


def test_gradient_holds_the_other_views_projection_fixed():
  config = simsiam_tiny()
  model = methods.get("simsiam").build_model(config)
  batch = {k: jnp.asarray(v) for k, v in methods.synthetic_batch(config, np.random.default_rng(0)).items()}
  variables = model.init(jax.random.key(0), batch["view_a"][:2], train=True)

  def forward(params, view):
    (_, (z, p)), _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, batch[view],
                                 train=True, mutable=["batch_stats"])
    return z, p

  params = variables["params"]
  (z_a, _), (z_b, _) = forward(params, "view_a"), forward(params, "view_b")

  def fixed_targets(params):  # z as constants: what the stop-gradient must amount to
    (_, p_a), (_, p_b) = forward(params, "view_a"), forward(params, "view_b")
    return simsiam_loss(p_a, p_b, z_a, z_b)

  def through_targets(params):  # the same value with z differentiated too (no stop-gradient)
    (za, p_a), (zb, p_b) = forward(params, "view_a"), forward(params, "view_b")
    cos = lambda p, z: jnp.sum(p * z, -1) / (jnp.linalg.norm(p, axis=-1) * jnp.linalg.norm(z, axis=-1))  # noqa: E731
    return jnp.mean(-0.5 * cos(p_a, zb) - 0.5 * cos(p_b, za))

  def method_loss(params):
    (za, p_a), (zb, p_b) = forward(params, "view_a"), forward(params, "view_b")
    return simsiam_loss(p_a, p_b, za, zb)

  g, g_fixed, g_through = (jax.grad(f)(params) for f in (method_loss, fixed_targets, through_targets))
  for a, b in zip(leaves(g), leaves(g_fixed)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert max(np.abs(a - b).max() for a, b in zip(leaves(g), leaves(g_through))) > 1e-4  # the test can fail


def test_settings_are_checked():
  c = simsiam_tiny()
  c.simsiam.predictor_hidden = 0
  with pytest.raises(ValueError, match="simsiam.predictor_hidden=0 must be a positive width"):
    methods.get("simsiam").validate(c)
  with pytest.raises(ValueError, match="at least 2"):
    methods.get("simsiam").validate(simsiam_tiny(batch=1))


def test_config_has_the_papers_numbers():
  c = simsiam_config.get_config()
  assert (c.method, c.model.head_layers, c.model.head_dim, c.simsiam.projector_hidden, c.simsiam.predictor_hidden) \
      == ("simsiam", 3, 2048, 2048, 512)
  assert (c.optim.name, c.optim.base_lr, c.optim.lr_scaling, c.optim.weight_decay, c.optim.momentum,
          c.optim.schedule, c.train.batch_size) == ("sgd", 0.05, "linear", 1e-4, 0.9, "cosine", 512)
  assert c.train.num_steps == 100 * (1_281_167 // 512)
  for variant in ("", "local"):
    c = simsiam_config.get_config(variant)
    methods.get("simsiam").validate(c)
    optim.make_optimizer(c.optim, c.train.batch_size, c.train.num_steps)
  with pytest.raises(ValueError, match="unknown variant"):
    simsiam_config.get_config("nope")


def test_local_variant_runs_two_steps_on_synthetic_data(tmp_path):
  c = simsiam_config.get_config("local")
  assert (c.data.source, c.data.image_size, c.data.channels, c.train.num_steps, c.probe.enabled) == \
      ("npz", 28, 1, 500, True)
  assert c.data.path.endswith("shared/data/pneumoniamnist.npz")
  c.data.source, c.data.synthetic.image_size, c.data.synthetic.num_cases = "synthetic", 28, 64
  c.train.batch_size, c.train.num_steps, c.probe.enabled, c.train.prefetch = 16, 2, False, 1
  r = main_lib.run(c, str(tmp_path / "local"))
  assert r["completed"] and r["method"] == "simsiam" and np.isfinite(r["metrics"]["loss"])
