"""DINO's two-view loss and center (Caron et al. 2021, Eq. 2-3, Algorithm 1) against a NumPy restatement."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax.losses import dino_loss, update_center


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def reference_dino(s_a, s_b, t_a, t_b, c, tau_s, tau_t):
  """Float64, one example at a time, Algorithm 1's H(t, s) = - sum softmax((t - c)/tau_t) log softmax(s/tau_s)."""
  total = 0.0
  for i in range(len(s_a)):
    for t, s in ((t_a[i], s_b[i]), (t_b[i], s_a[i])):
      p = _softmax((np.float64(t) - c) / tau_t)
      total += -np.sum(p * np.log(_softmax(np.float64(s) / tau_s)))
  return total / (2 * len(s_a))


def _inputs(n=5, k=7, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(n, k)).astype(np.float32) for _ in range(4)] + [rng.normal(size=(k,)).astype(np.float32)]


def test_matches_the_numpy_restatement():
  s_a, s_b, t_a, t_b, c = _inputs()
  for tau_s, tau_t in ((0.1, 0.04), (1.0, 1.0), (0.5, 0.07)):
    np.testing.assert_allclose(dino_loss(s_a, s_b, t_a, t_b, c, tau_s, tau_t),
                               reference_dino(s_a, s_b, t_a, t_b, c, tau_s, tau_t), rtol=1e-5)


def test_hand_checked_values():
  k = 4
  zeros = np.zeros((2, k), np.float32)
  # A uniform teacher and a uniform student: H = log K.
  assert float(dino_loss(zeros, zeros, zeros, zeros, np.zeros(k, np.float32), 0.1, 0.04)) == pytest.approx(np.log(k))
  # A teacher (after centering) sharply on prototype 0 and a student equally sure of it: H -> 0.
  sure = np.tile(np.array([[50.0, 0, 0, 0]], np.float32), (2, 1))
  assert float(dino_loss(sure, sure, sure, sure, np.zeros(k, np.float32), 0.1, 0.04)) == pytest.approx(0.0, abs=1e-5)
  # The center is subtracted from the teacher only: a center equal to the teacher's logits leaves it uniform.
  assert float(dino_loss(zeros, zeros, sure, sure, sure[0], 0.1, 0.04)) == pytest.approx(np.log(k))


def test_only_the_student_gets_gradients():
  s_a, s_b, t_a, t_b, c = (jnp.asarray(x) for x in _inputs())
  g = jax.grad(lambda s, t, c: dino_loss(s, s_b, t, t_b, c, 0.1, 0.04), argnums=(0, 1, 2))(s_a, t_a, c)
  assert np.abs(np.asarray(g[0])).max() > 0
  assert np.abs(np.asarray(g[1])).max() == 0 and np.abs(np.asarray(g[2])).max() == 0


def test_center_is_the_ema_of_the_teachers_batch_mean_over_both_views():
  _, _, t_a, t_b, c = _inputs()
  want = 0.9 * c + 0.1 * np.concatenate([t_a, t_b]).mean(axis=0)
  np.testing.assert_allclose(update_center(c, t_a, t_b, 0.9), want, rtol=1e-6)
  with pytest.raises(ValueError, match="four \\(batch, K\\) arrays"):
    dino_loss(t_a, t_b[:2], t_a, t_b, c, 0.1, 0.04)


def reference_multicrop(students, teachers, c, tau_s, tau_t):
  """Float64: the reference's loop, over teacher global views g and student views v != g, each term a batch mean."""
  total, terms = 0.0, 0
  for g, t in enumerate(teachers):
    for v, s in enumerate(students):
      if v == g:
        continue
      h = [-np.sum(_softmax((np.float64(t[i]) - c) / tau_t) * np.log(_softmax(np.float64(s[i]) / tau_s)))
           for i in range(len(t))]
      total += np.mean(h)
      terms += 1
  return total / terms


def test_multicrop_matches_the_numpy_restatement_and_is_the_two_view_loss_without_locals():
  from medssl_jax.losses import dino_multicrop_loss
  rng = np.random.default_rng(3)
  s_a, s_b, t_a, t_b, c = _inputs(n=4, k=6, seed=3)
  locals_ = [rng.normal(size=(4, 6)).astype(np.float32) for _ in range(3)]
  got = dino_multicrop_loss((s_a, s_b), locals_, (t_a, t_b), c, 0.1, 0.04)
  np.testing.assert_allclose(got, reference_multicrop([s_a, s_b] + locals_, [t_a, t_b], c, 0.1, 0.04), rtol=1e-5)
  np.testing.assert_allclose(dino_multicrop_loss((s_a, s_b), [], (t_a, t_b), c, 0.1, 0.04),
                             dino_loss(s_a, s_b, t_a, t_b, c, 0.1, 0.04), rtol=1e-6)
  # 2 x (2 + 3) - 2 = 8 terms: a local view is predicted from both teacher views.
  assert abs(float(got) - float(dino_multicrop_loss((s_a, s_b), locals_[:1], (t_a, t_b), c, 0.1, 0.04))) > 1e-4
