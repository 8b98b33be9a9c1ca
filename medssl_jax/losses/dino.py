"""DINO's loss (Caron et al. 2021, "Emerging properties in self-supervised vision transformers",
Sec. 3.1, Eq. 2-3 and Algorithm 1), for two views.

For student logits s and teacher logits t (N, K) of views a and b, a center c (K,) and the
temperatures tau_s (student) and tau_t (teacher):
  P_t = softmax((t - c) / tau_t)   (centered and sharpened; under stop-gradient: "sg")
  log P_s = log_softmax(s / tau_s)
  H(P_t, P_s) = - sum_k P_t[k] log P_s[k]
and with two views the loss averages the two cross-view terms over the global batch:
  L = 1/(2N) sum_i [ H(P_t(t_a[i]), P_s(s_b[i])) + H(P_t(t_b[i]), P_s(s_a[i])) ].
With multi-crop (`dino_multicrop_loss`) the student also sees L local views s_l1..s_lL, and the
loss averages H(P_t(t_g), P_s(s_v)) over every (teacher global view g, student view v != g) pair:
2 x (2 + L) - 2 terms, each a mean over the global batch (the reference's loop over its crops).
With L = 0 it is the two-view loss.
The center follows the teacher's mean output, c <- m c + (1 - m) mean_i t_i over both views of the
global batch (`update_center`; m = 0.9 in the paper).
"""
import jax
import jax.numpy as jnp


def teacher_probs(t, center, teacher_temp):
  """softmax((t - c) / tau_t) under stop-gradient, float32."""
  t = jax.lax.stop_gradient(t.astype(jnp.float32))
  return jax.nn.softmax((t - jax.lax.stop_gradient(center)) / teacher_temp, axis=-1)


def cross_entropy(p_teacher, s, student_temp):
  """(N,) - sum_k p_teacher[k] log softmax(s / tau_s)[k]."""
  return -jnp.sum(p_teacher * jax.nn.log_softmax(s.astype(jnp.float32) / student_temp, axis=-1), axis=-1)


def dino_loss(s_a, s_b, t_a, t_b, center, student_temp: float, teacher_temp):
  """The two-view DINO loss (module docstring); `teacher_temp` may be a traced schedule value."""
  if s_a.ndim != 2 or not (s_a.shape == s_b.shape == t_a.shape == t_b.shape) or center.shape != s_a.shape[-1:]:
    raise ValueError(f"dino_loss needs four (batch, K) arrays of one shape and a (K,) center; got {s_a.shape}, "
                     f"{s_b.shape}, {t_a.shape}, {t_b.shape} and {center.shape}")
  q_a, q_b = teacher_probs(t_a, center, teacher_temp), teacher_probs(t_b, center, teacher_temp)
  return 0.5 * (jnp.mean(cross_entropy(q_a, s_b, student_temp)) + jnp.mean(cross_entropy(q_b, s_a, student_temp)))


def dino_multicrop_loss(student_globals, student_locals, teacher_globals, center, student_temp: float,
                        teacher_temp):
  """The multi-crop DINO loss (module docstring): `student_globals` and `teacher_globals` two (N, K)
  arrays each (views a, b), `student_locals` a sequence of L (N, K) arrays."""
  if len(student_globals) != 2 or len(teacher_globals) != 2:
    raise ValueError("dino_multicrop_loss needs the two global views of the student and of the teacher")
  q = [teacher_probs(t, center, teacher_temp) for t in teacher_globals]
  students = list(student_globals) + list(student_locals)
  terms = [jnp.mean(cross_entropy(q[g], s, student_temp)) for g in range(2) for v, s in enumerate(students) if v != g]
  return sum(terms) / len(terms)


def update_center(center, t_a, t_b, momentum: float):
  """c <- m c + (1 - m) * the mean teacher output over both views of the global batch."""
  batch_center = jnp.mean(jnp.concatenate([t_a, t_b], axis=0).astype(jnp.float32), axis=0)
  return jax.lax.stop_gradient(momentum * center + (1.0 - momentum) * batch_center)
