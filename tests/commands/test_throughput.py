"""`medssl-jax throughput`: today's output without --end_to_end; with it, the real pretraining loop's
steady-state rate and input-wait fraction beside the step-only rate, from a tiny synthetic config."""
import json

import pytest

from configs import demo
from medssl_jax.commands import common
from medssl_jax.commands import throughput
from medssl_jax.errors import UserError

TINY = ["--config=configs/demo.py", "--config.train.batch_size=16", "--config.data.image_size=16",
        "--config.data.synthetic.image_size=16", "--config.data.synthetic.num_cases=64", "--config.model.depth=18",
        "--config.model.width=0.125", "--config.model.head_dim=16", "--config.probe.enabled=False"]


def _run(capsys, *args):
  capsys.readouterr()
  code = common.call(throughput.cli, ["medssl-jax throughput", *TINY, *args])
  out = capsys.readouterr()
  assert code == 0, out.err[-3000:]
  return json.loads(out.out)


def test_without_end_to_end_the_output_keeps_todays_keys(capsys):
  out = _run(capsys, "--steps=2", "--input_batches=2")
  assert set(out) == {"config", "machine", "train_step", "input_pipeline"}
  assert {"depth", "width", "image_size", "batch_size", "dtype", "method"} <= set(out["config"])
  assert out["config"]["aug_on_device"] is False  # 'auto' on this CPU
  assert out["train_step"]["steps"] == 2 and out["train_step"]["loss_finite"]
  assert out["input_pipeline"]["batches"] == 2
  assert set(_run(capsys, "--steps=1", "--input_batches=0")) == {"config", "machine", "train_step"}


@pytest.mark.parametrize("on_device", ["auto", "True"])
def test_end_to_end_runs_the_pretraining_loop_and_reports_its_rate_and_input_wait(capsys, tmp_path, on_device):
  workdir = tmp_path / "e2e"
  out = _run(capsys, "--steps=4", "--input_batches=0", "--end_to_end", f"--workdir={workdir}",
             f"--config.aug.on_device={on_device}")
  e2e = out["end_to_end"]
  results = json.loads((workdir / "results.json").read_text())  # --workdir keeps the run
  assert results["final_step"] == 4 and results["completed"]
  assert e2e["steps"] == 4 and e2e["timed_steps"] == 3  # the first step (compilation) is not timed
  assert e2e["pairs_per_sec"] == pytest.approx(3 * 16 / e2e["seconds"])
  assert e2e["pairs_per_sec"] == pytest.approx(results["steady_state"]["pairs_per_sec"])
  assert 0.0 <= e2e["input_wait_fraction"] <= 1.0
  assert e2e["input_wait_fraction"] == pytest.approx(results["input_wait_fraction"])
  assert e2e["step_only_pairs_per_sec"] == pytest.approx(out["train_step"]["images_per_sec"] / 2)
  assert e2e["of_step_rate"] == pytest.approx(e2e["pairs_per_sec"] / e2e["step_only_pairs_per_sec"])
  want = on_device == "True"
  assert e2e["aug_on_device"] is want and results["aug_on_device"] is want and out["config"]["aug_on_device"] is want
  assert (e2e["data_source"], e2e["batch_size"], e2e["image_size"]) == ("synthetic", 16, 16)
  assert e2e["host_pipeline"] == results["host_pipeline"]
  # The run is the loop of the config's settings, not the config's own length: 4 steps, logs at 2 and 4.
  assert [s for s, _ in results["loss_history"]] == [2, 4]
  half = e2e["second_half"]
  assert half["steps"] == 2 and half["pairs_per_sec"] == pytest.approx(results["metrics"]["steps_per_sec"] * 16)
  assert half["input_wait_fraction"] == pytest.approx(results["metrics"]["input_wait_fraction"])


def test_end_to_end_refuses_a_workdir_that_holds_a_run_and_cleans_its_own(capsys, tmp_path, monkeypatch):
  (tmp_path / "old" / "checkpoints" / "3").mkdir(parents=True)
  # (Called directly: through the cli, a refusal arms errors.guard's exit watchdog in this process.)
  with pytest.raises(UserError, match="holds a run"):
    throughput.end_to_end(demo.get_config(), 2, str(tmp_path / "old"))
  made = []
  real = throughput.tempfile.mkdtemp
  monkeypatch.setattr(throughput.tempfile, "mkdtemp", lambda **kw: made.append(real(dir=tmp_path, **kw)) or made[-1])
  out = _run(capsys, "--steps=2", "--input_batches=0", "--end_to_end")
  assert out["end_to_end"]["workdir"] is None and out["end_to_end"]["timed_steps"] == 1
  assert len(made) == 1 and not (tmp_path / made[0]).exists()  # the temporary workdir is gone
