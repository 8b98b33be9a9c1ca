"""Soft Dice and Dice + cross-entropy against a NumPy re-implementation; zero for perfect logits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medssl_jax.losses import dice_bce_loss, soft_dice_loss


def _np_sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np_dice_loss(logits, masks, eps):
  """Loops over images and classes; binary if one channel (masks (N, H, W)), else labels (N, H, W)."""
  n, _, _, c = logits.shape
  losses = []
  for i in range(n):
    if c == 1:
      probs, targets = _np_sigmoid(logits[i]), masks[i][..., None].astype(float)
    else:
      probs, targets = _np_softmax(logits[i]), np.eye(c)[masks[i]]
    per_class = [(2 * np.sum(probs[..., k] * targets[..., k]) + eps)
                 / (np.sum(probs[..., k]) + np.sum(targets[..., k]) + eps) for k in range(c)]
    losses.append(1 - np.mean(per_class))
  return np.mean(losses)


def test_perfect_logits_give_zero_loss_binary_and_multiclass():
  rng = np.random.default_rng(0)
  masks = rng.random((3, 8, 8)) > 0.5
  masks[2] = False                       # an image with an empty mask
  logits = np.where(masks, 30.0, -30.0)[..., None]
  assert float(soft_dice_loss(logits, masks)) == pytest.approx(0.0, abs=1e-6)
  labels = rng.integers(0, 4, (3, 8, 8))
  logits_mc = 40.0 * np.eye(4)[labels]
  assert float(soft_dice_loss(logits_mc, labels)) == pytest.approx(0.0, abs=1e-6)
  assert float(soft_dice_loss(logits_mc, np.eye(4)[labels])) == pytest.approx(0.0, abs=1e-6)


def test_inverted_logits_give_loss_near_one():
  masks = np.zeros((2, 6, 6), bool)
  masks[:, 1:4, 2:5] = True
  logits = np.where(masks, -30.0, 30.0)[..., None]
  assert float(soft_dice_loss(logits, masks, eps=1e-6)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("eps", [1.0, 1e-5])
def test_binary_against_numpy(eps):
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 2, (4, 7, 5, 1))
  masks = rng.random((4, 7, 5)) > 0.7
  masks[0] = False
  ref = _np_dice_loss(logits, masks, eps)
  assert float(soft_dice_loss(jnp.asarray(logits), masks, eps=eps)) == pytest.approx(ref, rel=1e-5)
  # masks with a channel axis give the same loss
  assert float(soft_dice_loss(logits, masks[..., None], eps=eps)) == pytest.approx(ref, rel=1e-5)


def test_per_image_mean_differs_from_pooled_dice():
  # image 0 large mask predicted well, image 1 small mask predicted badly: the per-image mean
  # weighs the small one as much as the large one.
  masks = np.zeros((2, 10, 10), bool)
  masks[0, :8, :8] = True
  masks[1, 0, 0] = True
  logits = np.where(masks, 3.0, -3.0)[..., None]
  logits[1, 0, 0, 0] = -3.0
  loss = float(soft_dice_loss(logits, masks, eps=1e-6))
  assert loss == pytest.approx(_np_dice_loss(logits, masks, 1e-6), rel=1e-5)
  p, g = _np_sigmoid(logits[..., 0]), masks
  pooled = 1 - 2 * np.sum(p * g) / (p.sum() + g.sum())
  assert abs(loss - pooled) > 0.2


def test_multiclass_against_numpy():
  rng = np.random.default_rng(2)
  logits = rng.normal(0, 2, (3, 6, 6, 3))
  labels = rng.integers(0, 3, (3, 6, 6))
  ref = _np_dice_loss(logits, labels, 1.0)
  assert float(soft_dice_loss(logits, labels)) == pytest.approx(ref, rel=1e-5)
  assert float(soft_dice_loss(logits, np.eye(3)[labels])) == pytest.approx(ref, rel=1e-5)


def test_dice_bce_against_numpy():
  rng = np.random.default_rng(3)
  logits = rng.normal(0, 2, (2, 5, 5, 1))
  masks = rng.random((2, 5, 5)) > 0.5
  p, g = _np_sigmoid(logits[..., 0]), masks.astype(float)
  bce = -np.mean(g * np.log(p) + (1 - g) * np.log(1 - p))
  dice = _np_dice_loss(logits, masks, 1.0)
  got = float(dice_bce_loss(logits, masks, dice_weight=0.3, bce_weight=2.0))
  assert got == pytest.approx(0.3 * dice + 2.0 * bce, rel=1e-5)
  labels = rng.integers(0, 4, (2, 5, 5))
  logits_mc = rng.normal(0, 2, (2, 5, 5, 4))
  ce = -np.mean(np.log(np.take_along_axis(_np_softmax(logits_mc), labels[..., None], -1)))
  got = float(dice_bce_loss(logits_mc, labels, dice_weight=1.0, bce_weight=0.5))
  assert got == pytest.approx(_np_dice_loss(logits_mc, labels, 1.0) + 0.5 * ce, rel=1e-5)


def test_gradient_is_finite_and_points_towards_the_mask():
  masks = np.zeros((1, 4, 4), bool)
  masks[0, :2] = True
  g = jax.grad(lambda l: dice_bce_loss(l, masks))(jnp.zeros((1, 4, 4, 1)))
  assert np.all(np.isfinite(g))
  assert np.all(g[0, :2] < 0) and np.all(g[0, 2:] > 0)


def test_shape_errors():
  with pytest.raises(ValueError, match="masks"):
    soft_dice_loss(jnp.zeros((2, 4, 4, 1)), jnp.zeros((2, 4, 5)))
  with pytest.raises(ValueError, match="one-hot"):
    soft_dice_loss(jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 4, 4, 2)))
