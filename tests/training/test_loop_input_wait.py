"""The loop's input-bound signal (`input_wait_fraction`) and the device feed (`prefetch_to_mesh`).

The fraction is checked three ways: exactly, with the loop's clock driven by the test (waits and
step times chosen, so the expected shares are arithmetic); and on the real clock against the sleeps
the test measured itself (a sleeping iterator: the fraction is at least their share of the run's
wall time; a sleeping step: at most one minus theirs). No threshold on speed.
"""
import json
import re
import time

import jax
import numpy as np
import pytest

from medssl_jax.training import loop
from medssl_jax.training import sharding


class _Ckpt:
  directory = "/nowhere"

  def __init__(self, on_save=None):
    self.saved, self.on_save = [], on_save

  def save(self, step, state):
    self.saved.append(step)
    if self.on_save:
      self.on_save()

  def wait(self):
    pass

  def latest_step(self):
    return self.saved[-1] if self.saved else None

  def close(self):
    pass


class _Writer:
  def __init__(self):
    self.scalars = {}

  def write_scalars(self, step, scalars):
    self.scalars[step] = dict(scalars)

  def flush(self):  # after each checkpoint
    self.flushed_at = max(self.scalars, default=0)


def _run(batches, step_fn, *, num_steps, log_every, on_log=None, ckpt=None, start_step=0):
  writer = _Writer()
  out = loop.run(0, batches, step_fn, start_step=start_step, num_steps=num_steps, images_per_step=2,
                 lr_fn=lambda s: 0.1, writer=writer, ckpt=ckpt or _Ckpt(), log_every=log_every,
                 checkpoint_every=10**6, num_devices=1, on_log=on_log)
  return out, writer


class _FakeClock:
  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t

  def advance(self, dt):
    self.t += dt


def test_fraction_is_the_wait_share_of_the_steady_steps_exactly(monkeypatch):
  clock = _FakeClock()
  monkeypatch.setattr(loop, "_clock", clock)
  lines = []
  monkeypatch.setattr(loop.logging, "info", lambda msg, *a: lines.append(msg % a))
  waits = [100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # the first: the pipeline's start (left out)
  step_times = [50.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # the first: compilation (left out)

  def batches():
    for w in waits:
      clock.advance(w)
      yield {"x": np.zeros(1)}

  calls = []

  def step(state, batch):
    clock.advance(step_times[len(calls)])
    calls.append(1)
    return state, {"loss": np.float32(1.0)}

  def hook(step, state):  # validation: its time is no step's
    clock.advance(1000.0)

  ckpt = _Ckpt(on_save=lambda: clock.advance(500.0))  # the last checkpoint: after the last step
  out, writer = _run(batches(), step, num_steps=7, log_every=3, on_log=hook, ckpt=ckpt)
  # Intervals: steps 2-3 (waits 1+2 of wall 5), 4-6 (12 of 15), 7 (6 of 7); the run: 21 of 27.
  assert writer.scalars[3]["train/input_wait_fraction"] == pytest.approx(3 / 5)
  assert writer.scalars[6]["train/input_wait_fraction"] == pytest.approx(12 / 15)
  assert writer.scalars[7]["train/input_wait_fraction"] == pytest.approx(6 / 7)
  assert out.input_wait_fraction == pytest.approx(21 / 27)
  assert (out.steady_steps, out.steady_sec, out.input_wait_sec) == (6, pytest.approx(27.0), pytest.approx(21.0))
  assert out.metrics["input_wait_fraction"] == pytest.approx(6 / 7)
  steps = [l for l in lines if re.match(r"step \d+/", l)]  # the step lines (not the first step's phase line)
  assert len(steps) == 3 and "  input wait 60%  ETA" in steps[0] and "  input wait 80%  ETA" in steps[1]
  assert "input_wait_fraction" not in steps[0]  # shown in words once, not also as a key


def test_a_one_step_interval_has_no_fraction_and_a_one_step_run_none(monkeypatch):
  lines = []
  monkeypatch.setattr(loop.logging, "info", lambda msg, *a: lines.append(msg % a))
  step = lambda state, batch: (state, {"loss": np.float32(0.5)})  # noqa: E731
  out, writer = _run(iter([{"x": np.zeros(1)}] * 3), step, num_steps=3, log_every=1)
  assert "train/input_wait_fraction" not in writer.scalars[1]  # only the first step: no steady state yet
  steps = [l for l in lines if re.match(r"step \d+/", l)]
  assert "input wait" not in steps[0] and "input wait" in steps[1]
  assert 0.0 <= writer.scalars[2]["train/input_wait_fraction"] <= 1.0 and out.steady_steps == 2
  out, _ = _run(iter([{"x": np.zeros(1)}]), step, num_steps=1, log_every=1)
  assert out.input_wait_fraction is None and out.steady_steps == 0
  # A resumed invocation leaves out its own first step.
  out, _ = _run(iter([{"x": np.zeros(1)}] * 4), step, num_steps=10, log_every=2, start_step=6)
  assert out.step == 10 and out.steady_steps == 3


def test_a_sleeping_iterator_reads_input_bound_by_at_least_its_measured_share():
  slept = []

  def slow():
    while True:
      t0 = time.perf_counter()
      time.sleep(0.02)
      slept.append(time.perf_counter() - t0)
      yield {"x": np.zeros(2, np.float32)}

  step = lambda state, batch: (state, {"loss": np.float32(0.0)})  # noqa: E731
  t0 = time.perf_counter()
  out, _ = _run(slow(), step, num_steps=12, log_every=4)
  wall = time.perf_counter() - t0
  share = sum(slept[1:12]) / wall  # the sleeps of steps 2..12, of the whole call's wall time
  assert out.input_wait_fraction >= share - 1e-9
  assert out.input_wait_fraction > 0.5 and out.input_wait_fraction <= 1.0


def test_an_instant_iterator_reads_low_by_at_least_the_step_share():
  slept = []

  def step(state, batch):
    t0 = time.perf_counter()
    time.sleep(0.02)
    slept.append(time.perf_counter() - t0)
    return state, {"loss": np.float32(0.0)}

  t0 = time.perf_counter()
  out, writer = _run(iter([{"x": np.zeros(2, np.float32)}] * 12), step, num_steps=12, log_every=4)
  wall = time.perf_counter() - t0
  share = sum(slept[1:]) / wall  # steps 2..12 ran inside the loop's steady wall time, outside its waits
  assert out.input_wait_fraction <= 1.0 - share + 1e-9
  assert out.input_wait_fraction < 0.5
  assert all(0.0 <= writer.scalars[s]["train/input_wait_fraction"] < 0.5 for s in (4, 8, 12))


def test_the_next_batch_is_on_the_devices_while_the_step_runs(monkeypatch):
  """`prefetch_to_mesh(size=2)` (train.prefetch's default): when the step gets batch t, batch t+1 has
  already been made a device array; uint8 views stay uint8 across the transfer."""
  mesh = sharding.make_mesh()
  on_device = []
  real = sharding.to_global
  monkeypatch.setattr(sharding, "to_global", lambda b, m: (on_device.append(int(b["i"][0])), real(b, m))[1])
  n = mesh.devices.size
  source = ({"view_a": np.full((n, 4, 4, 3), t, np.uint8), "i": np.full((n,), t, np.int32)} for t in range(6))
  seen = []

  def step(state, batch):
    t = int(np.asarray(batch["i"])[0])  # a test may sync; the loop does not
    assert isinstance(batch["view_a"], jax.Array) and batch["view_a"].dtype == np.uint8
    seen.append((t, list(on_device)))
    return state, {"loss": np.float32(0.0)}

  out, _ = _run(sharding.prefetch_to_mesh(source, mesh, size=2), step, num_steps=5, log_every=5)
  assert out.step == 5
  for t, transferred in seen:
    assert t + 1 in transferred, (t, transferred)  # batch t+1 went to the devices before step t


def test_closing_the_prefetch_closes_the_host_pipeline():
  closed = []

  def source():
    try:
      while True:
        yield {"x": np.zeros((sharding.make_mesh().devices.size, 2), np.float32)}
    finally:
      closed.append(True)

  it = sharding.prefetch_to_mesh(source(), sharding.make_mesh(), size=2)
  next(it)
  it.close()
  assert closed == [True]


def test_results_json_of_a_tiny_finetune_run_has_the_fraction(tmp_path):
  from medssl_jax import main as main_lib
  from tests.helpers import tiny_config
  c = tiny_config(batch_size=16, image_size=16, steps=4)
  c.mode, c.finetune.init, c.finetune.val_split = "finetune", "random", ""
  c.data.source, c.data.synthetic.num_cases, c.data.synthetic.image_size = "synthetic", 64, 16
  c.train.log_every = c.train.checkpoint_every = 2
  c.eval.num_replicates = 10
  assert not c.aug.on_device and c.aug.on_device == "auto"  # 'auto' is no refusal for fine-tuning
  results = main_lib.run(c, str(tmp_path / "ft"))
  saved = json.loads((tmp_path / "ft" / "results.json").read_text())
  assert 0.0 <= saved["input_wait_fraction"] <= 1.0
  assert saved["input_wait_fraction"] == pytest.approx(results["input_wait_fraction"])
