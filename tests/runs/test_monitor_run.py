"""The pretraining monitor in real runs: kNN and linear-probe scores at step 0, every
monitor.every steps and at the end, in TensorBoard, monitor.json and results.json; the score of
a checkpoint recomputed on one device equals the run's (8 devices); a preempted and resumed run
scores what an uninterrupted run scores; monitor.keep_best keeps the best state, and select-best
--pretrain_dir picks it; bad settings are refused in one line."""
import json
import os

import jax
import numpy as np
import pytest

from input_pipeline import backends
from input_pipeline import sources
from medssl_jax import main as main_lib
from medssl_jax import methods
from medssl_jax.commands import select_best
from medssl_jax.errors import UserError
from medssl_jax.runs import monitor as monitor_lib
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training.event_writer import NullWriter
from medssl_jax.training.sharding import make_mesh
from tests.helpers import pretrain_run_config, restore_full_state, scalar_values, sigterm_at_call

METRICS = ("knn/top1", "knn/auc", "probe/top1", "probe/auc")


def monitored(steps=6, every=3, keep_best=""):
  c = pretrain_run_config(steps=steps)
  c.monitor.every, c.monitor.keep_best = every, keep_best
  c.monitor.max_train_examples, c.monitor.max_eval_examples = 64, 40
  c.monitor.knn_k, c.monitor.probe_steps, c.monitor.batch_size = 5, 30, 32
  return c


def _history(workdir):
  with open(os.path.join(workdir, "monitor.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("monitor") / "run")
  results = main_lib.run(monitored(keep_best="knn/top1"), workdir)
  return workdir, results


def test_scores_at_start_every_n_steps_and_end_in_every_record(uninterrupted):
  workdir, results = uninterrupted
  history = _history(workdir)
  assert [h["step"] for h in history] == [0, 3, 6]
  for h in history:
    assert set(h) == {"step", *METRICS}
    assert 0.0 <= h["knn/top1"] <= 1.0 and 0.0 <= h["probe/auc"] <= 1.0
  assert results["monitor_history"] == history
  for tag in METRICS:
    steps, values = zip(*scalar_values(workdir, tag))
    assert steps == (0, 3, 6)
    np.testing.assert_allclose(values, [h[tag] for h in history], rtol=1e-6)
  # The encoder changes between evaluations, and the scores with it (the monitor is not a constant).
  assert len({h["probe/auc"] for h in history}) > 1 or len({h["knn/top1"] for h in history}) > 1


def test_the_score_of_the_checkpoint_on_one_device_equals_the_runs(uninterrupted):
  workdir, _ = uninterrupted
  config = monitored(keep_best="knn/top1")
  state = restore_full_state(config, workdir)
  assert int(state.step) == 6
  mesh = make_mesh(jax.devices()[:1])
  mon = monitor_lib.PretrainMonitor(config, mesh, backends.get(config.data.pipeline, 0), sources, writer=NullWriter(),
                                    workdir=str(os.path.dirname(workdir)), start_step=6, num_steps=6)
  got = mon.score(jax.device_put(state, jax.devices()[0]))
  mon.close()
  final = _history(workdir)[-1]
  for k in METRICS:
    np.testing.assert_allclose(got[k], final[k], atol=1e-3, err_msg=k)


def test_keep_best_and_select_best_pick_the_best_step(uninterrupted, capsys):
  workdir, results = uninterrupted
  history = _history(workdir)
  best = max(history, key=lambda h: (h["knn/top1"], -h["step"]))["step"]
  assert results["monitor_best"] == {"metric": "knn/top1", "step": best, "checkpoint": "checkpoints_best"}
  _, _, saved = ckpt_lib.restore_weights(os.path.join(workdir, "checkpoints_best"))
  assert saved == best
  chosen = select_best.select_pretraining(workdir, "knn/top1")
  assert chosen["step"] == best and chosen["checkpoint"] == os.path.join(workdir, "checkpoints_best")
  assert "init_checkpoint=" in capsys.readouterr().out
  with open(os.path.join(workdir, "selection.json")) as f:
    assert json.load(f)["step"] == best
  with pytest.raises(UserError, match="has \\["):
    select_best.select_pretraining(workdir, "top1")


def test_a_step_whose_weights_are_gone_is_refused_with_the_fix(tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "monitor.json").write_text(json.dumps([{"step": 0, "knn/top1": 0.9}, {"step": 4, "knn/top1": 0.5}]))
  (workdir / "checkpoints" / "4").mkdir(parents=True)
  with pytest.raises(UserError, match="keep_best=knn/top1"):
    select_best.select_pretraining(str(workdir), "knn/top1")
  assert select_best.select_pretraining(str(workdir), "knn/top1", higher_is_better=False)["checkpoint"] == str(workdir)


def test_a_resumed_run_scores_what_the_uninterrupted_run_scores(tmp_path, monkeypatch, uninterrupted):
  real = methods.jit_train_step
  monkeypatch.setattr(methods, "jit_train_step", sigterm_at_call(real, 4))
  workdir = str(tmp_path / "resumed")
  first = main_lib.run(monitored(keep_best="knn/top1"), workdir)
  assert first["preempted"] and first["final_step"] == 4
  assert [h["step"] for h in _history(workdir)] == [0, 3]
  monkeypatch.setattr(methods, "jit_train_step", real)
  main_lib.run(monitored(keep_best="knn/top1"), workdir)
  ref = _history(uninterrupted[0])
  got = _history(workdir)
  assert [h["step"] for h in got] == [0, 3, 6]
  for a, b in zip(got, ref):
    for k in METRICS:
      np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=f"step {a['step']} {k}")


@pytest.mark.parametrize("key,value,match", [
    ("every", -1, "monitor.every=-1"), ("keep_best", "top1", "keep_best='top1'"),
    ("knn_k", 0, "knn_k=0"), ("probe_steps", 0, "probe_steps=0")])
def test_bad_settings_are_refused_in_one_line(key, value, match):
  c = monitored()
  c.monitor[key] = value
  with pytest.raises(UserError, match=match) as e:
    monitor_lib.check_settings(c)
  assert "\n" not in str(e.value)


def test_nothing_to_monitor_is_refused():
  c = monitored()
  c.monitor.knn = c.monitor.probe = False
  with pytest.raises(UserError, match="nothing to monitor"):
    monitor_lib.check_settings(c)


def test_multilabel_data_are_scored_by_mean_auc_with_unknown_labels_left_out(tmp_path):
  import types
  rng = np.random.default_rng(0)

  def load_source(data_cfg, split):
    del data_cfg
    n = 48
    labels = rng.integers(0, 2, (n, 3)).astype(np.float32)
    labels[rng.random((n, 3)) < 0.3] = np.nan
    labels[0] = np.nan  # an image without any known label is left out
    return sources.Source(split, labels, np.array([f"{split}{i}" for i in range(n)]),
                          np.array([f"{split}-{i}" for i in range(n)]), 3,
                          images=rng.integers(0, 256, (n, 16, 16, 3), np.uint8))

  fake = types.SimpleNamespace(load_source=load_source)
  config = monitored()
  state = methods.create_state(config, make_mesh(), jax.random.key(0))
  mon = monitor_lib.PretrainMonitor(config, make_mesh(), backends.get(config.data.pipeline, 0), fake,
                                    writer=NullWriter(), workdir=str(tmp_path), start_step=0, num_steps=6)
  assert mon.names == ("knn/mean_auc", "probe/mean_auc") and len(mon.train_x) == 40  # 47 labelled, rounded to 8
  got = mon.score(state)
  assert set(got) == set(mon.names) and all(0.0 <= v <= 1.0 for v in got.values())
  config.monitor.keep_best = "knn/top1"
  with pytest.raises(UserError, match="multi-label"):
    monitor_lib.PretrainMonitor(config, make_mesh(), backends.get(config.data.pipeline, 0), fake,
                                writer=NullWriter(), workdir=str(tmp_path), start_step=0, num_steps=6)
