"""NT-Xent against an independent NumPy implementation of Eq. (1) of Chen et al. 2020."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from medssl_jax.losses import nt_xent, nt_xent_with_accuracy


def reference_nt_xent(z_a, z_b, tau):
  """Loops over the 2N views in the paper's order (2k-1, 2k) and averages l(i, j)."""
  z = np.empty((2 * len(z_a), z_a.shape[1]), np.float64)
  z[0::2], z[1::2] = z_a, z_b
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  sim = z @ z.T
  total = 0.0
  for i in range(len(z)):
    j = i + 1 if i % 2 == 0 else i - 1
    denom = sum(np.exp(sim[i, m] / tau) for m in range(len(z)) if m != i)
    total += -np.log(np.exp(sim[i, j] / tau) / denom)
  return total / len(z)


@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.1), (5, 8, 0.5), (16, 4, 1.0), (8, 128, 0.07)])
def test_matches_numpy_reference(n, d, tau):
  rng = np.random.default_rng(n * 100 + d)
  # Not normalised, different scales per row: the loss normalises itself.
  z_a = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=(n, 1))
  z_b = rng.normal(size=(n, d)) * 3.0
  got = nt_xent(jnp.asarray(z_a, jnp.float32), jnp.asarray(z_b, jnp.float32), temperature=tau)
  np.testing.assert_allclose(float(got), reference_nt_xent(z_a, z_b, tau), rtol=2e-5, atol=2e-5)


def test_hand_computed_two_pairs():
  # Orthogonal unit vectors: all similarities 0 except the positives (1). With tau=1:
  # l = -log(e / (e + 2)) for every view.
  z_a = jnp.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
  z_b = z_a
  expected = -np.log(np.e / (np.e + 2))
  np.testing.assert_allclose(float(nt_xent(z_a, z_b, temperature=1.0)), expected, rtol=1e-6)


def test_accuracy_counts_positive_as_top1():
  z = jnp.eye(4)
  loss, acc = nt_xent_with_accuracy(z, z, temperature=0.1)
  assert float(acc) == 1.0
  # Swapping the positives of two examples makes those views pick the wrong one.
  _, acc = nt_xent_with_accuracy(z, z[jnp.array([1, 0, 2, 3])], temperature=0.1)
  assert float(acc) == 0.5


def test_shard_map_with_axis_name_equals_global():
  devices = np.array(jax.devices())
  assert len(devices) == 8, "conftest sets 8 simulated CPU devices"
  mesh = Mesh(devices, ("data",))
  rng = np.random.default_rng(0)
  z_a = jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)
  z_b = jnp.asarray(rng.normal(size=(32, 16)), jnp.float32)

  sharded = jax.shard_map(functools.partial(nt_xent_with_accuracy, temperature=0.2, axis_name="data"),
                          mesh=mesh, in_specs=(P("data"), P("data")), out_specs=(P(), P()))
  loss_s, acc_s = jax.jit(sharded)(z_a, z_b)
  loss_g, acc_g = nt_xent_with_accuracy(z_a, z_b, temperature=0.2)
  np.testing.assert_allclose(float(loss_s), float(loss_g), rtol=1e-5)
  np.testing.assert_allclose(float(loss_s), reference_nt_xent(np.asarray(z_a), np.asarray(z_b), 0.2), rtol=1e-5)
  assert float(acc_s) == float(acc_g)

  # Gradients flow back through the all_gather to every shard.
  g_s = jax.jit(jax.grad(lambda a, b: sharded(a, b)[0], argnums=(0, 1)))(z_a, z_b)
  g_g = jax.grad(lambda a, b: nt_xent(a, b, temperature=0.2), argnums=(0, 1))(z_a, z_b)
  for x, y in zip(g_s, g_g):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def test_jit_on_sharded_global_arrays():
  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  rng = np.random.default_rng(1)
  z_a, z_b = rng.normal(size=(2, 24, 8)).astype(np.float32)
  got = jax.jit(functools.partial(nt_xent, temperature=0.1))(jax.device_put(z_a, sharding),
                                                            jax.device_put(z_b, sharding))
  np.testing.assert_allclose(float(got), reference_nt_xent(z_a, z_b, 0.1), rtol=1e-5)


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match="one shape"):
    nt_xent(jnp.zeros((4, 3)), jnp.zeros((5, 3)), temperature=0.1)
