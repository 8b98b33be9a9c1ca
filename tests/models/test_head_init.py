"""finetune.head_init: the linear head's starting kernel (fine-tuning and linear evaluation)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax.models.classifier import Classifier

X = jax.random.normal(jax.random.key(0), (4, 16, 16, 1))


def _head_kernel(frozen, head_init):
  m = Classifier(num_outputs=3, depth=18, width=0.125, stem="small", frozen_encoder=frozen, head_init=head_init)
  return m, m.init(jax.random.key(1), X, train=False)


def test_auto_is_zeros_for_linear_evaluation_and_lecun_normal_for_fine_tuning():
  _, v = _head_kernel(True, "auto")
  assert not np.any(v["params"]["classifier"]["kernel"])
  _, v = _head_kernel(False, "auto")
  k = np.asarray(v["params"]["classifier"]["kernel"])
  # LeCun normal (truncated): std 1/sqrt(fan_in), fan_in = 64 features at width 0.125.
  assert k.shape == (64, 3) and 0.5 / 8 < k.std() < 1.5 / 8


def test_zero_head_in_fine_tuning_gives_zero_logits_and_no_first_step_encoder_gradient():
  m, v = _head_kernel(False, "zeros")
  assert not np.any(v["params"]["classifier"]["kernel"])
  labels = jnp.array([0, 1, 2, 0])

  def loss(params):
    logits, _ = m.apply({"params": params, "batch_stats": v["batch_stats"]}, X, train=True, mutable=["batch_stats"])
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels]), logits

  (value, logits), grads = jax.value_and_grad(loss, has_aux=True)(v["params"])
  np.testing.assert_array_equal(logits, 0.0)
  np.testing.assert_allclose(value, np.log(3), rtol=1e-6)     # uniform over 3 classes
  assert all(not np.any(g) for g in jax.tree_util.tree_leaves(grads["encoder"]))
  assert np.any(grads["classifier"]["kernel"])                # the head learns first


def test_unknown_head_init_is_an_error_naming_the_key():
  with pytest.raises(ValueError, match="finetune.head_init='ones'"):
    _head_kernel(False, "ones")
