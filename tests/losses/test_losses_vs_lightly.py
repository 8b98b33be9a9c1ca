"""Each self-supervised loss against the PyTorch implementation of a well-kept peer library, lightly
(`lightly.loss`, the `torch` extra), on fixed random inputs: NT-Xent, BYOL's and SimSiam's cosine
losses, Barlow Twins, VICReg, DINO (two views and multi-crop) and SwAV (Sinkhorn-Knopp codes, multi-
crop, queue). Tolerance: 1e-5 relative (float32 on both sides; 1e-4 where a loss sums thousands of
squared terms). Where the two differ by a stated convention the test says which and by how much."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
lightly_loss = pytest.importorskip("lightly.loss")

import jax.numpy as jnp  # noqa: E402 - after the skips: nothing here runs without torch and lightly

from medssl_jax.losses import (barlow_twins_loss, byol_loss, dino_loss, dino_multicrop_loss, info_nce,  # noqa: E402
                               nt_xent, simsiam_loss, sinkhorn_codes, swav_loss, vicreg_loss)


def _arrays(seed, *shapes):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=s).astype(np.float32) for s in shapes]


def _t(x):
  return torch.from_numpy(np.asarray(x))


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent(temperature):
  z_a, z_b = _arrays(0, (16, 8), (16, 8))
  want = float(lightly_loss.NTXentLoss(temperature=temperature)(_t(z_a), _t(z_b)))
  got = float(nt_xent(jnp.asarray(z_a), jnp.asarray(z_b), temperature=temperature))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_moco_info_nce_against_a_queue():
  # lightly's NT-Xent with a memory bank is MoCo's InfoNCE: the positive key, then the bank's keys as negatives.
  q, k = _arrays(13, (16, 8), (16, 8))
  queue = _unit(_arrays(14, (64, 8))[0])
  peer = lightly_loss.NTXentLoss(temperature=0.2, memory_bank_size=(64, 8))
  peer.memory_bank.bank = _t(queue)
  want = float(peer(_t(q), _t(k)))  # no gradient wanted: the bank is read, not updated
  got, _, _ = info_nce(jnp.asarray(q), jnp.asarray(k), jnp.asarray(queue), temperature=0.2)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_byol_and_simsiam_are_lightlys_negative_cosine_similarity():
  p_a, p_b, z_a, z_b = _arrays(1, *[(12, 6)] * 4)
  neg_cos = lightly_loss.NegativeCosineSimilarity()
  ab, ba = float(neg_cos(_t(p_a), _t(z_b))), float(neg_cos(_t(p_b), _t(z_a)))
  args = [jnp.asarray(x) for x in (p_a, p_b, z_a, z_b)]
  # BYOL: (2 - 2 cos) for each order, summed: 4 + 2 (-cos_ab) + 2 (-cos_ba).
  np.testing.assert_allclose(float(byol_loss(*args)), 4 + 2 * ab + 2 * ba, rtol=1e-5)
  # SimSiam: 1/2 D(p_a, z_b) + 1/2 D(p_b, z_a), D = -cos.
  np.testing.assert_allclose(float(simsiam_loss(*args)), 0.5 * (ab + ba), rtol=1e-5)


def test_barlow_twins():
  z_a, z_b = _arrays(2, (32, 16), (32, 16))
  want = float(lightly_loss.BarlowTwinsLoss(lambda_param=5e-3)(_t(z_a), _t(z_b)))
  np.testing.assert_allclose(float(barlow_twins_loss(jnp.asarray(z_a), jnp.asarray(z_b), lambd=5e-3)), want, rtol=1e-4)


def test_vicreg_with_the_variance_weight_convention_named():
  z_a, z_b = _arrays(3, (32, 16), (32, 16))
  z_b = z_a + 0.3 * z_b  # correlated views, as after training
  # lightly (like the authors' code) averages the two variance terms: its mu = 50 is the paper's mu = 25 on
  # their sum, which this library follows (medssl_jax/losses/vicreg.py).
  want = float(lightly_loss.VICRegLoss(lambda_param=25.0, mu_param=50.0, nu_param=1.0)(_t(z_a), _t(z_b)))
  got = float(vicreg_loss(jnp.asarray(z_a), jnp.asarray(z_b), sim_weight=25.0, var_weight=25.0, cov_weight=1.0))
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("num_local", [0, 4])
def test_dino(num_local):
  k = 32
  s_g = _arrays(4, (8, k), (8, k))
  t_g = _arrays(5, (8, k), (8, k))
  s_l = _arrays(6, *[(8, k)] * num_local)
  center = _arrays(7, (k,))[0] * 0.1
  peer = lightly_loss.DINOLoss(output_dim=k, warmup_teacher_temp=0.04, teacher_temp=0.04, student_temp=0.1,
                               center_momentum=0.9)
  peer.center.data = _t(center).reshape(1, 1, k)
  want = float(peer([_t(t) for t in t_g], [_t(s) for s in s_g + s_l], teacher_temp=0.05))
  if num_local:
    got = dino_multicrop_loss([jnp.asarray(s) for s in s_g], [jnp.asarray(s) for s in s_l],
                              [jnp.asarray(t) for t in t_g], jnp.asarray(center), 0.1, 0.05)
  else:
    got = dino_loss(*[jnp.asarray(x) for x in (s_g[0], s_g[1], t_g[0], t_g[1], center)], 0.1, 0.05)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_swav_codes():
  scores = _unit(_arrays(8, (24, 8))[0]) @ _unit(_arrays(9, (10, 8))[0]).T
  want = lightly_loss.swav_loss.sinkhorn(_t(scores.astype(np.float32)), iterations=3, epsilon=0.05).numpy()
  got = np.asarray(sinkhorn_codes(jnp.asarray(scores, jnp.float32), 0.05, 3))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("num_local,queue", [(0, False), (3, False), (2, True)])
def test_swav_loss(num_local, queue):
  k, n, d = 10, 16, 8
  protos = _unit(_arrays(10, (k, d))[0]).T                              # (D, K), unit columns
  views = [_unit(x) @ protos for x in _arrays(11, *[(n, d)] * (2 + num_local))]
  queued = [_unit(x) @ protos for x in _arrays(12, (32, d), (32, d))] if queue else None
  peer = lightly_loss.SwaVLoss(temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)
  want = float(peer([_t(v) for v in views[:2]], [_t(v) for v in views[2:]],
                    [_t(q) for q in queued] if queue else None))
  codes = []
  for i in range(2):  # ours puts the queue before the batch; Sinkhorn-Knopp does not care about the row order
    full = np.concatenate([queued[i], views[i]]) if queue else views[i]
    codes.append(sinkhorn_codes(jnp.asarray(full), 0.05, 3)[-n:])
  got = float(swav_loss([jnp.asarray(v) for v in views], codes, 0.1))
  np.testing.assert_allclose(got, want, rtol=1e-5)
