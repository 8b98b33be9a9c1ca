"""Pure building blocks of MoCo (He et al. 2020) / MoCo v2 (Chen et al. 2020, "Improved baselines").

- `ema_update`: the momentum (key) encoder, theta_k <- m theta_k + (1 - m) theta_q (MoCo Eq. 2;
  m = 0.999 in MoCo v2, `../shared/PROTOCOLS.md`); BYOL's target network the same way.
- `cosine_momentum`: BYOL's momentum schedule, tau_base -> 1 over the run.
- `init_queue` / `enqueue`: the dictionary of negatives, a FIFO queue of K keys (65,536 in
  MoCo v2, 24,576 in MoCo-CXR). Each step the keys of the GLOBAL batch are enqueued once and the
  oldest ones dropped, so the queue is the same whether the batch is on one device or eight.
- `shuffle_indices` / `unshuffle_indices` / `apply_in_bn_groups`: MoCo's shuffled BN (Sec. 3.3).

Queue layout. The queue is a ring buffer: `ptr` is the row the next key goes to, so the rows
`ptr, ptr+1, ..., K-1, 0, ..., ptr-1` run from the oldest key to the newest
(`jnp.roll(queue, -ptr, axis=0)` puts them in that order). A batch of N keys is written to rows
(ptr + i) mod K and the pointer advances to (ptr + N) mod K. The MoCo reference code asserts
K % N == 0 because it writes one contiguous slice. The modular scatter here would also wrap around
the end of the buffer, but MoCo v2 (`moco_v2.MoCoV2.validate`) requires K % N == 0 all the same,
as the reference does, so that every key stays in the queue for exactly K / N steps. N > K is an
error (one step would overwrite keys of its own batch).

Shuffled BN. With per-device BN, a query and its positive key normalised with statistics of the
same sub-batch share a "signature" that the network can use to find the positive without
learning a good representation (MoCo Sec. 3.3). MoCo's fix: the key encoder sees the global
batch in a shuffled order, each device computing BN statistics on its shard of the shuffled
batch, and the keys are un-shuffled afterwards. Here a batch of N is split into G groups of
N/G consecutive rows (G = the number of devices in the reference code; here a config choice, so
that one device can run the same computation as eight). `shuffle_indices` returns a permutation
`perm` under which group g of the shuffled batch `x[perm]` holds only samples from OTHER groups
(a stronger guarantee than the reference's uniform random permutation, where about N/G^2 of a
device's own samples come back to it); its samples are spread evenly over the G-1 other
source groups. The key of sample i is then normalised with statistics of a group that is not
the group of its query. (That group contains i itself, since its key is one of the inputs, and
about N/(G(G-1)) - 1 other samples of i's query group; about N/G^2 - 1 in the reference.)

Per-group BN on global arrays: `apply_in_bn_groups` reshapes the batch to (G, N/G, ...) and
runs the model with `jax.vmap` over the group axis, with the model built WITHOUT a BN
`axis_name` (so each vmapped call reduces over its own N/G rows only; with `axis_name` set under
vmap, flax would pmean over the groups and give global BN again). This needs neither `shard_map`
nor a mesh: under `jax.jit` with the batch sharded over G devices on its leading axis, the group
axis is the sharded axis and each device computes its group's statistics locally (checked on 8
CPU devices: the compiled step's only collective is the all-reduce that averages the running
statistics; the shuffle itself is a cross-device gather, as in the reference); on one device
the same G groups are computed in a batch. The running statistics each group produces are
averaged over the groups (equal to the EMA of the global batch mean for the means; for the
variances the mean of the per-group variances). Global BN is the plain `model.apply` on the
whole batch under jit (see `medssl_jax/models/resnet.py`).
"""
import jax
import jax.numpy as jnp


# --- momentum encoder ----------------------------------------------------------------------

def ema_update(target, online, momentum):
  """Returns target <- momentum * target + (1 - momentum) * online, leaf-wise, dtypes kept.

  `target` and `online` are pytrees of one structure (e.g. params or batch_stats); the update is
  computed in at least float32 and cast back to each target leaf's dtype. `momentum` may be a
  Python float or a traced scalar (a schedule).
  """
  def one(t, o):
    dtype = jnp.promote_types(t.dtype, jnp.float32)
    new = momentum * t.astype(dtype) + (1.0 - momentum) * o.astype(dtype)
    return new.astype(t.dtype)
  return jax.tree_util.tree_map(one, target, online)


def cosine_momentum(step, base: float, num_steps: int):
  """BYOL's target momentum at step k of K (Grill et al. 2020, Sec. 3.3):
  tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, from tau_base at k = 0 up to 1 at k = K.
  `step` may be traced; float32."""
  k = jnp.asarray(step, jnp.float32)
  return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * k / max(int(num_steps), 1)) + 1.0) / 2.0


# --- queue of negatives --------------------------------------------------------------------

def _l2_normalize(z):
  z = z.astype(jnp.float32)
  return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-12))


def init_queue(size: int, dim: int, rng):
  """Returns (queue (size, dim) float32 of random unit rows, ptr int32 0), as MoCo starts."""
  if size < 1 or dim < 1:
    raise ValueError(f"queue size and dim must be positive, got size={size}, dim={dim}")
  queue = _l2_normalize(jax.random.normal(rng, (size, dim), jnp.float32))
  return queue, jnp.zeros((), jnp.int32)


def enqueue(queue, ptr, keys):
  """FIFO update: writes the (N, D) global-batch keys over the N oldest rows; returns (queue, ptr).

  The keys are L2-normalised and stop-gradient'ed before they are stored; N need not divide K
  (see the module docstring), but N <= K.
  """
  size, n = queue.shape[0], keys.shape[0]
  if keys.ndim != 2 or keys.shape[1] != queue.shape[1]:
    raise ValueError(f"enqueue needs (N, {queue.shape[1]}) keys for a {queue.shape} queue, got {keys.shape}")
  if n > size:
    raise ValueError(f"enqueue: a batch of {n} keys is larger than the queue ({size}); "
                     f"use a queue of at least the global batch size")
  keys = jax.lax.stop_gradient(_l2_normalize(keys)).astype(queue.dtype)
  rows = (ptr + jnp.arange(n, dtype=jnp.int32)) % size
  queue = queue.at[rows].set(keys, unique_indices=True)
  return queue, ((ptr + n) % size).astype(jnp.int32)


# --- shuffled batch norm -------------------------------------------------------------------

def _check_groups(n: int, num_groups: int):
  if num_groups < 1 or n % num_groups:
    raise ValueError(f"a batch of {n} cannot be split into {num_groups} equal BN groups; "
                     f"make the global batch size a multiple of the number of groups")


def bn_group_ids(n: int, num_groups: int):
  """(n,) int32: the BN group of each row of a batch split into `num_groups` consecutive blocks."""
  _check_groups(n, num_groups)
  return jnp.arange(n, dtype=jnp.int32) // (n // num_groups)


def shuffle_indices(rng, n: int, num_groups: int):
  """Returns (perm, unperm), int32 (n,): group g of x[perm] holds no sample of group g of x.

  Construction (module docstring): every group is given a random order of its b = n/G samples
  ("slots"); the sample in slot j of group g goes to slot j of group (g + o_j) mod G with offsets
  o_j in 1..G-1 used in turn (so each source group spreads evenly over the G-1 others); for a fixed
  slot this maps groups one-to-one, so the whole map is a permutation. Each destination group
  then gets a random order. `unperm = argsort(perm)`, so x[perm][unperm] == x.
  `n` and `num_groups` are static; num_groups must be >= 2 (one group cannot be shuffled away
  from itself: use global BN or more groups).
  """
  _check_groups(n, num_groups)
  if num_groups < 2:
    raise ValueError("shuffled BN needs at least 2 BN groups (with one group every key is normalised "
                     "with its own query group's samples); set the number of groups >= 2 or use global BN")
  g, b = num_groups, n // num_groups
  rng_slots, rng_offset, rng_dest = jax.random.split(rng, 3)
  # sample_at[g, j]: index within group g of the sample put in slot j.
  sample_at = jnp.argsort(jax.random.uniform(rng_slots, (g, b)), axis=1)
  start = jax.random.randint(rng_offset, (), 0, g - 1)
  offsets = 1 + (jnp.arange(b) + start) % (g - 1)                       # (b,) in 1..G-1
  dest = jnp.arange(g)[:, None]
  src = (dest - offsets[None, :]) % g                                   # (G, b) source group
  grid = src * b + sample_at[src, jnp.arange(b)[None, :]]            # (G, b) source row
  order = jnp.argsort(jax.random.uniform(rng_dest, (g, b)), axis=1)
  perm = jnp.take_along_axis(grid, order, axis=1).reshape(n).astype(jnp.int32)
  return perm, unshuffle_indices(perm)


def unshuffle_indices(perm):
  """The inverse permutation: x[perm][unshuffle_indices(perm)] == x."""
  return jnp.argsort(perm).astype(jnp.int32)


def group_batch(x, num_groups: int):
  """(N, ...) -> (G, N/G, ...) for every leaf of a pytree of batch-major arrays."""
  def one(a):
    _check_groups(a.shape[0], num_groups)
    return a.reshape((num_groups, a.shape[0] // num_groups) + a.shape[1:])
  return jax.tree_util.tree_map(one, x)


def ungroup_batch(x):
  """(G, N/G, ...) -> (N, ...) for every leaf of a pytree."""
  return jax.tree_util.tree_map(lambda a: a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:]), x)


def apply_in_bn_groups(apply_fn, variables, x, *, num_groups: int, mutable=("batch_stats",),
                       **kwargs):
  """Runs `apply_fn(variables, x_g, mutable=..., **kwargs)` on each of G consecutive groups.

  `apply_fn` is a flax `model.apply` whose BatchNorm layers have no `axis_name`; batch norm in
  training mode then takes its statistics over each group's N/G rows only (module docstring).
  Returns (outputs with the groups joined back to batch-major (N, ...), mutated collections
  averaged over the groups). The same `variables` (and any `rngs` in kwargs) serve every group.
  For MoCo's shuffled BN: `x_k[perm]` in, outputs `[unperm]` out (`shuffle_indices`).
  """
  def one(xg):
    return apply_fn(variables, xg, mutable=list(mutable), **kwargs)
  out, new_vars = jax.vmap(one)(group_batch(x, num_groups))
  new_vars = jax.tree_util.tree_map(lambda a: jnp.mean(a, axis=0).astype(a.dtype), new_vars)
  return ungroup_batch(out), new_vars
