"""Segmentation fine-tuning end to end on a synthetic shape (a bright disc on noise): it learns the
shape, one SGD step on 8 devices equals the step on 1, a preempted run resumes to the same result,
and results.json / the overlay PNG are written."""
import json
import os
import signal

import jax
import numpy as np
import pytest
from PIL import Image

from configs.base import get_base_config
from medssl_jax import main as main_lib
from medssl_jax.runs import segment as fseg
from medssl_jax.errors import UserError
from medssl_jax.training.sharding import make_mesh, to_global

SIZE = 32


def disc_pairs(root, n=48, size=SIZE, seed=0):
  """n noisy grey images with one bright disc each (random centre and radius), their masks, and
  a manifest (2 images per case, no split column: splits are drawn per case)."""
  rng = np.random.default_rng(seed)
  os.makedirs(root, exist_ok=True)
  yy, xx = np.mgrid[:size, :size]
  lines = ["image,mask,case_id"]
  for i in range(n):
    cy, cx, r = rng.uniform(9, size - 9), rng.uniform(9, size - 9), rng.uniform(4, 8)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img = np.clip(rng.normal(70, 25, (size, size)) + 110 * disc, 0, 255).astype(np.uint8)
    Image.fromarray(img).save(os.path.join(root, f"img{i}.png"))
    Image.fromarray(disc.astype(np.uint8) * 255).save(os.path.join(root, f"mask{i}.png"))
    lines.append(f"img{i}.png,mask{i}.png,p{i // 2}")
  path = os.path.join(root, "pairs.csv")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def seg_config(path, steps=40):
  c = get_base_config()
  c.mode, c.finetune.task, c.finetune.init = "finetune", "segmentation", "random"
  c.data.source, c.data.path, c.data.path_column, c.data.split_column = "seg_manifest", path, "image", ""
  c.data.image_size, c.data.channels, c.data.verify_images = SIZE, 1, False
  c.seg.mask_column, c.seg.test_fraction, c.seg.val_fraction = "mask", 0.25, 0.15
  c.seg.distort_prob, c.seg.crop_prob, c.seg.flip_prob, c.seg.overlay_images = 0.3, 0.25, 0.5, 4
  c.model.depth, c.model.width, c.model.stem = 18, 0.125, "imagenet"  # decoder at stride 32..1: cheap on CPU
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling, c.optim.weight_decay = "adam", 3e-3, "none", 0.0
  c.optim.warmup_steps = 0
  c.train.batch_size, c.train.num_steps = 8, steps
  c.train.log_every, c.train.checkpoint_every, c.finetune.eval_every = 10, 20, 20
  c.eval.num_replicates = 200
  c.finetune.repeat_to_fill_batch = True
  return c


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return disc_pairs(str(tmp_path_factory.mktemp("discs")))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("seg_run"))
  return workdir, main_lib.run(seg_config(data), workdir)


def test_learns_the_disc_and_writes_results(trained):
  workdir, results = trained
  assert results["completed"] and results["task"] == "segmentation"
  test = results["test"]
  assert test["dice"]["value"] > 0.8, test
  for k in ("dice", "iou"):
    assert test[k]["ci_low"] <= test[k]["value"] <= test[k]["ci_high"]
  assert test["iou"]["value"] < test["dice"]["value"]  # IoU = D / (2 - D) < D for 0 < D < 1
  on_disk = json.load(open(os.path.join(workdir, "results.json")))
  assert on_disk["test"]["dice"]["value"] == test["dice"]["value"]
  assert len(on_disk["val_history"]) == 2 and on_disk["selected_step"] in (20, 40)
  png = os.path.join(workdir, "overlay_test.png")
  assert os.path.getsize(png) > 1000 and Image.open(png).size[0] > 100
  saved = np.load(os.path.join(workdir, "predictions_test.npz"))
  assert saved["probs"].shape == (results["num_test_images"], SIZE, SIZE)
  # The reported Dice is the mean per-image Dice of the predictions (independent NumPy). The file holds
  # them as float16: a pixel within float16's rounding of the 0.5 threshold may fall either side, so
  # the recomputation brackets the value (those pixels set the best and the worst way) and is tight.
  probs, mask = saved["probs"].astype(np.float32), saved["masks"].astype(bool)
  unsure = np.abs(probs - 0.5) <= 2.0 ** -11  # float16's spacing just above 0.5
  sure = (probs >= 0.5) & ~unsure
  best = [2 * (p & m).sum() / (p.sum() + m.sum()) for p, m in zip(sure | (unsure & mask), mask)]
  worst = [2 * (p & m).sum() / (p.sum() + m.sum()) for p, m in zip(sure | (unsure & ~mask), mask)]
  assert np.mean(worst) - 1e-6 <= test["dice"]["value"] <= np.mean(best) + 1e-6
  assert np.mean(best) - np.mean(worst) < 0.01, unsure.sum()


def test_preempted_run_resumes_to_the_same_result(data, trained, tmp_path, monkeypatch):
  """A SIGTERM mid-run saves a checkpoint and returns; the re-run resumes and ends with the
  uninterrupted run's predictions."""
  _, full = trained
  from input_pipeline import seg_pipeline
  real, calls = seg_pipeline.train_iterator, [0]

  def iterator(*args, **kw):
    for batch in real(*args, **kw):
      calls[0] += 1
      if calls[0] == 25:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch
  monkeypatch.setattr(seg_pipeline, "train_iterator", iterator)
  workdir = str(tmp_path / "resumed")
  first = main_lib.run(seg_config(data), workdir)
  assert not first["completed"] and 0 < first["final_step"] < 40
  monkeypatch.setattr(seg_pipeline, "train_iterator", real)
  second = main_lib.run(seg_config(data), workdir)
  assert second["completed"]
  a = np.load(os.path.join(full["workdir"], "predictions_test.npz"))["probs"]
  b = np.load(os.path.join(workdir, "predictions_test.npz"))["probs"]
  np.testing.assert_array_equal(a, b)
  assert second["test"]["dice"]["value"] == full["test"]["dice"]["value"]


def test_eight_devices_equal_one_device(data):
  assert jax.device_count() == 8
  config = seg_config(data)
  # SGD: the update is linear in the gradient, so it compares the sharded gradient itself. (Adam's
  # first update is lr * g / (|g| + eps): a sign for every weight whose gradient is ~0 flips with
  # float rounding, so two correct steps differ by 2 * lr at a few such weights.)
  config.optim.name, config.optim.base_lr, config.optim.momentum = "sgd", 0.5, 0.9
  rng = np.random.default_rng(0)
  images = rng.random((8, SIZE, SIZE, 1)).astype(np.float32)
  batch = {"image": images, "mask": (images[..., 0] > 0.6).astype(np.uint8)}

  def one_step(devices):
    mesh = make_mesh(devices)
    state = fseg.create_state(config, mesh, jax.random.key(0), 40)
    p0 = jax.device_get(state.params)
    step = jax.jit(lambda s, b: fseg.train_step(s, b, dice_weight=1.0, bce_weight=1.0))
    new, m = step(state, to_global(batch, mesh))
    return p0, jax.device_get(new.params), jax.device_get(new.batch_stats), jax.device_get(m)

  p0, p8, bs8, m8 = one_step(jax.devices())
  _, p1, bs1, m1 = one_step(jax.devices()[:1])
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  unmoved = []
  for (path, init), a, b in zip(jax.tree_util.tree_leaves_with_path(p0), jax.tree_util.tree_leaves(p8),
                                jax.tree_util.tree_leaves(p1)):
    scale = np.abs(b - init).max()
    ulp = np.finfo(np.float32).eps * np.abs(init).max()  # a - init is rounded at the parameters' scale
    np.testing.assert_allclose(a - init, b - init, rtol=1e-3, atol=max(1e-3 * scale, 2 * ulp))
    if scale == 0:
      unmoved.append(jax.tree_util.keystr(path))
  # Everything moved except what lies behind a residual branch's last batch norm, whose scale starts
  # at 0 (zero-init residuals) and so passes no gradient back in the first step.
  behind = [p for p in unmoved if "BasicBlock" in p and any(n in p for n in ("Conv_0", "Conv_1", "BatchNorm_0"))]
  assert unmoved == behind and len(unmoved) < len(jax.tree_util.tree_leaves(p0)) / 2
  for a, b in zip(jax.tree_util.tree_leaves(bs8), jax.tree_util.tree_leaves(bs1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_refusals(data, tmp_path):
  for key, value, match in (("data.pipeline", "tf", "NumPy host pipeline"), ("mode", "linear_eval", "finetune"),
                            ("finetune.label_fraction", 0.5, "label fractions"),
                            ("finetune.train_size", 10, "which segmentation has none of"),
                            ("finetune.oversample", True, "which segmentation has none of"), ("data.source", "npz", "seg_manifest")):
    c = seg_config(data)
    group, _, name = key.rpartition(".")
    (c[group] if group else c)[name] = value
    with pytest.raises(UserError, match=match):
      main_lib.run(c, str(tmp_path / key))
