"""MoCo building blocks: EMA key encoder, FIFO queue of keys, shuffled / per-group batch norm."""
import collections
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from medssl_jax.methods.momentum import (apply_in_bn_groups, bn_group_ids, ema_update, enqueue,
                                         init_queue, shuffle_indices, unshuffle_indices)
from medssl_jax.models.heads import ProjectionHead


# --- EMA -----------------------------------------------------------------------------------

def test_ema_by_hand():
  target = {"w": jnp.array([1.0, 2.0]), "sub": {"b": jnp.array(10.0), "h": jnp.array([4.0], jnp.bfloat16)}}
  online = {"w": jnp.array([3.0, -2.0]), "sub": {"b": jnp.array(0.0), "h": jnp.array([0.0], jnp.bfloat16)}}
  new = ema_update(target, online, 0.999)
  # 0.999 * 1 + 0.001 * 3 = 1.002; 0.999 * 2 - 0.001 * 2 = 1.996; 0.999 * 10 = 9.99
  np.testing.assert_allclose(np.asarray(new["w"]), [1.002, 1.996], rtol=1e-6)
  np.testing.assert_allclose(float(new["sub"]["b"]), 9.99, rtol=1e-6)
  assert new["w"].dtype == jnp.float32 and new["sub"]["h"].dtype == jnp.bfloat16
  assert float(new["sub"]["h"][0]) == float(jnp.bfloat16(0.999 * 4.0))
  # m = 0 copies the online network, m = 1 keeps the target.
  copied = ema_update(target, online, 0.0)
  for a, b in zip(jax.tree_util.tree_leaves(copied), jax.tree_util.tree_leaves(online)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  kept = ema_update(target, online, 1.0)
  for a, b in zip(jax.tree_util.tree_leaves(kept), jax.tree_util.tree_leaves(target)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_ema_repeated_matches_closed_form_under_jit():
  # After t updates towards a fixed online value o: target = o + m^t (target0 - o).
  step = jax.jit(ema_update)
  t = {"x": jnp.full((3,), 5.0)}
  o = {"x": jnp.full((3,), 1.0)}
  m = jnp.float32(0.9)
  for _ in range(10):
    t = step(t, o, m)
  np.testing.assert_allclose(np.asarray(t["x"]), 1.0 + 0.9 ** 10 * 4.0, rtol=1e-5)


# --- queue ---------------------------------------------------------------------------------

def test_init_queue():
  queue, ptr = init_queue(12, 5, jax.random.PRNGKey(0))
  assert queue.shape == (12, 5) and queue.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(np.asarray(queue), axis=1), 1.0, rtol=1e-5)
  assert ptr.dtype == jnp.int32 and int(ptr) == 0
  assert np.linalg.matrix_rank(np.asarray(queue)) == 5   # random rows, not one repeated vector


@pytest.mark.parametrize("size,n", [(12, 4), (10, 4), (7, 3), (6, 6), (5, 1)])
def test_queue_is_fifo_of_newest_keys(size, n):
  """Several enqueues against a deque: the queue holds exactly the newest `size` keys."""
  rng = np.random.default_rng(size * 10 + n)
  queue, ptr = init_queue(size, 3, jax.random.PRNGKey(1))
  initial = np.asarray(queue)
  ref = collections.deque(list(initial), maxlen=size)     # oldest ... newest
  step = jax.jit(enqueue)
  expected_ptr = 0
  for _ in range(7):
    keys = _unit(rng.normal(size=(n, 3)))
    queue, ptr = step(queue, ptr, jnp.asarray(keys, jnp.float32))
    ref.extend(keys)
    expected_ptr = (expected_ptr + n) % size
    assert int(ptr) == expected_ptr
    # The ring buffer read from the pointer runs oldest -> newest.
    np.testing.assert_allclose(np.roll(np.asarray(queue), -int(ptr), axis=0), np.array(ref), rtol=1e-6, atol=1e-7)


def test_enqueue_wraps_around_explicitly():
  queue = jnp.zeros((5, 2))
  keys = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
  queue, ptr = enqueue(queue, jnp.int32(3), keys)
  assert int(ptr) == 1
  np.testing.assert_array_equal(np.asarray(queue), [[-1, 0], [0, 0], [0, 0], [1, 0], [0, 1]])


def test_enqueue_normalises_and_stops_gradients():
  queue, ptr = jnp.zeros((4, 2)), jnp.int32(0)
  new, _ = enqueue(queue, ptr, jnp.array([[3.0, 4.0], [0.0, -2.0]]))
  np.testing.assert_allclose(np.asarray(new[:2]), [[0.6, 0.8], [0.0, -1.0]], rtol=1e-6)
  g = jax.grad(lambda k: jnp.sum(enqueue(queue, ptr, k)[0]))(jnp.ones((2, 2)))
  assert not np.any(np.asarray(g))


def test_enqueue_rejects_batch_larger_than_queue():
  with pytest.raises(ValueError, match="larger than the queue"):
    enqueue(jnp.zeros((4, 2)), jnp.int32(0), jnp.ones((5, 2)))


def test_enqueue_on_sharded_keys_equals_single_device():
  mesh = Mesh(np.array(jax.devices()), ("data",))
  keys = _unit(np.random.default_rng(0).normal(size=(16, 4))).astype(np.float32)
  queue, ptr = init_queue(40, 4, jax.random.PRNGKey(2))
  queue, ptr = enqueue(queue, ptr, jnp.ones((32, 4)))     # pointer at 32: this batch wraps
  single = enqueue(queue, ptr, jnp.asarray(keys))
  sharded = jax.jit(enqueue)(jax.device_put(queue, NamedSharding(mesh, P())), ptr,
                             jax.device_put(keys, NamedSharding(mesh, P("data"))))
  np.testing.assert_array_equal(np.asarray(sharded[0]), np.asarray(single[0]))
  assert int(sharded[1]) == int(single[1]) == 8


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- shuffled BN ---------------------------------------------------------------------------

@pytest.mark.parametrize("n,groups", [(4, 2), (12, 3), (16, 4), (32, 8), (8, 8), (40, 4)])
def test_shuffle_is_permutation_away_from_own_group(n, groups):
  b = n // groups
  for seed in range(3):
    perm, unperm = shuffle_indices(jax.random.PRNGKey(seed), n, groups)
    perm, unperm = np.asarray(perm), np.asarray(unperm)
    assert perm.dtype == np.int32 and sorted(perm) == list(range(n))
    x = np.arange(n) * 10
    np.testing.assert_array_equal(x[perm][unperm], x)
    np.testing.assert_array_equal(perm[unperm], np.arange(n))
    # Row r of the shuffled batch is in group r // b and holds sample perm[r] of group perm[r] // b.
    own = np.asarray(bn_group_ids(n, groups))
    assert np.all(own[perm] != own), "a sample stayed in its own BN group"
    # Each source group spreads evenly over the other groups.
    for h in range(groups):
      counts = np.bincount(own[perm[h * b:(h + 1) * b]], minlength=groups)
      assert counts[h] == 0
      others = np.delete(counts, h)
      assert others.max() - others.min() <= 1 and others.sum() == b


def test_shuffle_is_random_and_jittable():
  perms = {tuple(np.asarray(shuffle_indices(jax.random.PRNGKey(s), 32, 4)[0])) for s in range(5)}
  assert len(perms) == 5
  jitted = jax.jit(shuffle_indices, static_argnums=(1, 2))(jax.random.PRNGKey(3), 32, 4)
  np.testing.assert_array_equal(np.asarray(jitted[0]), np.asarray(shuffle_indices(jax.random.PRNGKey(3), 32, 4)[0]))
  np.testing.assert_array_equal(np.asarray(unshuffle_indices(jitted[0])), np.asarray(jitted[1]))


def test_shuffle_errors():
  with pytest.raises(ValueError, match="at least 2"):
    shuffle_indices(jax.random.PRNGKey(0), 8, 1)
  with pytest.raises(ValueError, match="multiple of the number of groups"):
    shuffle_indices(jax.random.PRNGKey(0), 10, 4)


class _BNOnly(nn.Module):
  """Batch norm in training mode, no scale/bias: output = (x - mean) / sqrt(var + eps)."""

  @nn.compact
  def __call__(self, x):
    return nn.BatchNorm(use_running_average=False, use_scale=False, use_bias=False, momentum=0.9,
                        epsilon=1e-5)(x)


def _numpy_bn(x, rows):
  """Normalise every row of x with the (biased) statistics of x[rows]."""
  mean, var = x[rows].mean(0), x[rows].var(0)
  return (x - mean) / np.sqrt(var + 1e-5), mean, var


def test_grouped_bn_matches_per_group_numpy():
  n, groups, b = 16, 4, 4
  x = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32) * np.arange(1, n + 1)[:, None]
  model = _BNOnly()
  variables = model.init(jax.random.PRNGKey(0), x)
  out, new_vars = apply_in_bn_groups(model.apply, variables, jnp.asarray(x), num_groups=groups)
  means = []
  for g in range(groups):
    rows = np.arange(g * b, (g + 1) * b)
    ref, mean, var = _numpy_bn(x, rows)
    np.testing.assert_allclose(np.asarray(out[rows]), ref[rows], rtol=1e-4, atol=1e-4)
    means.append((mean, var))
  # Running statistics: each group's EMA from (0, 1), averaged over the groups.
  stats = new_vars["batch_stats"]["BatchNorm_0"]
  np.testing.assert_allclose(np.asarray(stats["mean"]), 0.1 * np.mean([m for m, _ in means], 0), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(stats["var"]), 0.9 + 0.1 * np.mean([v for _, v in means], 0), rtol=1e-5)
  # One group == plain (global) batch norm.
  out1, _ = apply_in_bn_groups(model.apply, variables, jnp.asarray(x), num_groups=1)
  np.testing.assert_allclose(np.asarray(out1), _numpy_bn(x, np.arange(n))[0], rtol=1e-4, atol=1e-4)


def test_shuffled_bn_key_statistics_come_from_other_samples():
  """Queries and keys from the same images: shuffled BN normalises each key with another group."""
  n, groups, b = 32, 4, 8
  x = np.random.default_rng(1).normal(size=(n, 2)).astype(np.float32) + np.repeat(np.arange(groups), b)[:, None] * 3.0
  model = _BNOnly()
  variables = model.init(jax.random.PRNGKey(0), x)
  perm, unperm = (np.asarray(a) for a in shuffle_indices(jax.random.PRNGKey(5), n, groups))
  q, _ = apply_in_bn_groups(model.apply, variables, jnp.asarray(x), num_groups=groups)
  k_shuffled, _ = apply_in_bn_groups(model.apply, variables, jnp.asarray(x[perm]), num_groups=groups)
  k = np.asarray(k_shuffled)[unperm]
  key_group = np.argsort(perm) // b        # where each sample's key was computed
  for g in range(groups):
    query_rows = np.arange(g * b, (g + 1) * b)
    key_rows = perm[g * b:(g + 1) * b]
    assert not set(query_rows) & set(key_rows)
    # The statistics that group g's keys were normalised with are not its queries' statistics.
    assert np.abs(x[key_rows].mean(0) - x[query_rows].mean(0)).min() > 0.5
  for i in range(n):
    h = key_group[i]
    np.testing.assert_allclose(k[i], _numpy_bn(x, perm[h * b:(h + 1) * b])[0][i], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(q[i]), _numpy_bn(x, np.arange(i // b * b, i // b * b + b))[0][i],
                               rtol=1e-4, atol=1e-4)
    assert h != i // b
  # Without the shuffle the keys would equal the queries exactly (the leak shuffled BN removes).
  assert np.abs(k - np.asarray(q)).max() > 0.5


def test_grouped_projection_head_on_sharded_batch():
  """The project's head: G groups under jit on 8 devices == the head run on each group alone."""
  mesh = Mesh(np.array(jax.devices()), ("data",))
  head = ProjectionHead(num_layers=2, out_dim=4)
  x = np.random.default_rng(2).normal(size=(32, 6)).astype(np.float32)
  variables = head.init(jax.random.PRNGKey(0), x[:4])
  fn = jax.jit(functools.partial(apply_in_bn_groups, head.apply, num_groups=8))
  out, new_vars = fn(variables, jax.device_put(x, NamedSharding(mesh, P("data"))))
  singles = [head.apply(variables, x[4 * g:4 * g + 4], mutable=["batch_stats"]) for g in range(8)]
  np.testing.assert_allclose(np.asarray(out), np.concatenate([o for o, _ in singles]), rtol=1e-4, atol=1e-4)
  avg = jax.tree_util.tree_map(lambda *a: np.mean(a, 0), *[v["batch_stats"] for _, v in singles])
  for a, r in zip(jax.tree_util.tree_leaves(new_vars["batch_stats"]), jax.tree_util.tree_leaves(avg)):
    np.testing.assert_allclose(np.asarray(a), r, rtol=1e-5, atol=1e-6)
  # Global BN (one group) differs: the grouped statistics really are per group.
  glob, _ = head.apply(variables, x, mutable=["batch_stats"])
  assert np.abs(np.asarray(glob) - np.asarray(out)).max() > 1e-2
