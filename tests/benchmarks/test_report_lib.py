"""benchmarks/report_lib.py: formatting, result files, paired differences and the label-efficiency plot."""
import json
import os

import numpy as np
import pytest

from benchmarks import report_lib
from medssl_jax.evaluation import compare

MACHINE = {"platform": "Linux-test", "machine": "x86_64", "python": "3.11", "cpu_cores": 2, "jax": "0.0",
           "backend": "cpu", "device_kind": "cpu", "device_count": 1}


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def _eval_run(workdir, *, top1, correct, fraction=1.0, wall=2.0):
  """A finished evaluation run: results.json and 20 test predictions, all right or all wrong."""
  labels = np.array([0, 1] * 10)
  probs = np.eye(2)[labels if correct else 1 - labels].astype(np.float32)
  os.makedirs(workdir, exist_ok=True)
  compare.save_predictions(os.path.join(workdir, "predictions_test.npz"), image_ids=np.arange(20),
                           case_ids=np.arange(20) // 2, labels=labels, probs=probs, task="multiclass")
  _write(os.path.join(workdir, "results.json"), {
      "mode": "finetune", "completed": True, "wall_time_sec": wall,
      "test": {"top1": {"value": top1, "ci_low": top1 - 0.125, "ci_high": top1 + 0.125},
               "auc": {"value": top1, "ci_low": top1 - 0.25, "ci_high": top1 + 0.25}}})
  return {"role": "eval", "workdir": workdir, "fraction": fraction}


def test_intervals_differences_and_wall_times_are_formatted():
  assert report_lib.fmt_ci({"value": 0.8125, "ci_low": 0.75, "ci_high": 0.875}) == "0.8125 [0.7500, 0.8750]"
  assert report_lib.fmt_diff({"difference": 0.25, "ci_low": 0.125, "ci_high": 0.375, "excludes_zero": True}) == (
      "+0.2500 [+0.1250, +0.3750] *")
  assert report_lib.fmt_diff({"difference": -0.0625, "ci_low": -0.25, "ci_high": 0.125, "excludes_zero": False}) == (
      "-0.0625 [-0.2500, +0.1250]")
  assert report_lib.fmt_wall({"wall_time_sec": 7.25}) == "7.2"
  assert report_lib.fmt_wall({"wall_time_sec": 3.5, "wall_time_complete": False}) == "≥3.5"


def test_parse_baselines_reads_the_shared_table(shared_data):
  b = report_lib.parse_baselines(str(shared_data / "medmnist_v2_benchmark.md"))
  assert b["PneumoniaMNIST"] == {"AUC": 0.944, "ACC": 0.854}
  assert b["BreastMNIST"] == {"AUC": 0.901, "ACC": 0.863}


def test_parse_baselines_takes_one_method_of_the_long_table(tmp_path):
  table = tmp_path / "bench.md"
  table.write_text("intro | not a table\n\n| dataset | method | AUC | ACC |\n|---|---|---|---|\n"
                   "| BreastMNIST | ResNet-50 (28) | 0.111 | 0.222 |\n| BreastMNIST | ResNet-18 (28) | 0.901 | 0.863 |\n"
                   "| short | row |\n")
  assert report_lib.parse_baselines(str(table)) == {"BreastMNIST": {"AUC": 0.901, "ACC": 0.863}}
  assert report_lib.parse_baselines(str(table), "ResNet-50 (28)") == {"BreastMNIST": {"AUC": 0.111, "ACC": 0.222}}


def test_a_pretraining_without_a_recorded_loss_says_so():
  """A run stopped after its last checkpoint and resumed there writes results.json with no step
  run, hence no loss: the report says that instead of printing 'final loss nan'."""
  r = {"final_step": 500, "num_steps": 500, "metrics": {}, "resumed_from_step": 500, "wall_time_sec": 5.4,
       "wall_time_complete": False, "workdir": "/w/p"}
  assert report_lib.pretrain_line("MoCo v2", r) == ("- MoCo v2: 500/500 steps, final loss not recorded (results "
                                                    "written by a run resumed at step 500), wall time ≥5.4 s (`/w/p`)")
  r |= {"metrics": {"loss": 3.25}, "wall_time_complete": True}
  assert report_lib.pretrain_line("MoCo v2", r) == "- MoCo v2: 500/500 steps, final loss 3.2500, wall time 5.4 s (`/w/p`)"


def test_time_line_sums_the_runs_own_wall_times(tmp_path):
  runs = [_eval_run(str(tmp_path / f"r{i}"), top1=0.5, correct=True, wall=w) for i, w in enumerate((1.25, 2.5))]
  runs.append({"role": "eval", "workdir": str(tmp_path / "never_ran")})  # no results.json: not counted
  m = {"runs": runs, "wall_time_sec": 9.0}
  assert report_lib.time_line(m) == ("- Run time: 3.8 s, the sum of the 2 runs' own wall times (results.json); the "
                                     "last invocation of the command took 9.0 s (finished runs are skipped, not re-timed)")
  _write(os.path.join(runs[0]["workdir"], "results.json"), {"wall_time_sec": 1.25, "wall_time_complete": False})
  assert report_lib.time_line(m).startswith("- Run time: ≥3.8 s, the sum of the 2 runs'")


def test_header_lines_name_machine_data_and_missing_runs(tmp_path):
  run = _eval_run(str(tmp_path / "lin"), top1=0.5, correct=True)
  with open(os.path.join(run["workdir"], "results.json")) as f:
    r = json.load(f)
  _write(os.path.join(run["workdir"], "results.json"), dict(r, feature_norm="batchnorm", base_lr=0.05))
  m = {"command": "python -m benchmarks.x", "scale": "smoke", "machine": MACHINE, "wall_time_sec": 1.0,
       "runs": [dict(run, mode="linear_eval")], "missing": ["/w/smoke/x/finetune_f0.1_d0"],
       "data": [{"path": "/d/a.npz", "kind": "file", "bytes": 10, "md5": "ab"},
                {"path": "/d/folder", "kind": "folder", "files": 3, "bytes": 30, "md5": "cd"}],
       "settings": {"width": 0.125, "batch": 16, "pretrain_steps": 4, "eval_steps": 3, "num_replicates": 50}}
  lines = report_lib.header_lines(m, "/w/smoke/x/study.json")
  assert lines[0] == "- Command: `python -m benchmarks.x` (scale `smoke`), manifest `/w/smoke/x/study.json`"
  assert lines[1] == report_lib.machine_line(m) == (
      "- Machine: Linux-test, 2 CPU cores, Python 3.11, JAX 0.0, 1 x cpu device (cpu), host pipeline tf")
  assert "  - `/d/a.npz`: 10 bytes, md5 `ab`" in lines
  assert "  - `/d/folder`: 30 bytes, 3 files, md5 over sorted (path, md5) lines, md5 `cd`" in lines
  assert ("- **Not finished** when this report was made (1 runs, left out of the tables and plots): "
          "`finetune_f0.1_d0`") in lines
  assert ("- Settings: ResNet-18 width 0.125, 28 px, 1 channel, batch 16, pretraining 4 steps, evaluation 3 steps, "
          "50 bootstrap replicates") in lines
  assert lines[-1] == ("- Linear evaluation (read from its runs' results.json): frozen encoder, feature norm "
                       "batchnorm (`finetune.feature_norm`), base learning rate 0.05")


def test_finished_runs_reads_one_role_and_refuses_an_unfinished_run(tmp_path):
  done = _eval_run(str(tmp_path / "done"), top1=0.75, correct=True)
  recipe = dict(_eval_run(str(tmp_path / "recipe"), top1=0.5, correct=True), role="recipe")
  runs = report_lib.finished_runs({"runs": [done, recipe]})
  assert [r["workdir"] for r in runs] == [done["workdir"]] and runs[0]["results"]["test"]["top1"]["value"] == 0.75
  assert [r["workdir"] for r in report_lib.finished_runs({"runs": [done, recipe]}, "recipe")] == [recipe["workdir"]]
  _write(os.path.join(done["workdir"], "results.json"), {"mode": "finetune", "completed": False})
  with pytest.raises(ValueError, match="run is not finished"):
    report_lib.finished_runs({"runs": [done]})


def test_paired_difference_on_the_same_test_images(tmp_path):
  right = _eval_run(str(tmp_path / "right"), top1=1.0, correct=True)
  wrong = _eval_run(str(tmp_path / "wrong"), top1=0.0, correct=False)
  for by_case in (False, True):
    d = report_lib.paired(right, wrong, 20, by_case=by_case)
    assert set(d) == set(report_lib.METRICS)
    assert (d["top1"]["difference"], d["top1"]["ci_low"], d["top1"]["ci_high"]) == (1.0, 1.0, 1.0)
    assert d["top1"]["excludes_zero"] and d["auc"]["difference"] == 1.0
  same = report_lib.paired(right, right, 20, metrics=("top1",))
  assert list(same) == ["top1"] and same["top1"]["difference"] == 0.0 and not same["top1"]["excludes_zero"]


def test_plot_lines_writes_the_plot_and_the_mean_over_draws(tmp_path):
  runs = []
  for arm, draws in (("a", ((0.5, 0.1), (0.75, 0.1), (1.0, 1.0))), ("b", ((0.25, 0.1), (0.5, 1.0)))):
    for i, (v, fraction) in enumerate(draws):
      run = _eval_run(str(tmp_path / f"{arm}{i}"), top1=v, correct=True, fraction=fraction)
      with open(os.path.join(run["workdir"], "results.json")) as f:
        runs.append(dict(run, arm=arm, results=json.load(f)))
  png = tmp_path / "plot.png"
  table = report_lib.plot_lines(runs, "top1", str(png), "title", lambda r: f"linear_eval / {r['arm']}")
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "| linear_eval / a | 0.1 | 2 | 0.6250 | [0.5000, 0.7500] |" in table   # two draws: their mean
  assert "| linear_eval / a | 1 | 1 | 1.0000 | [0.8750, 1.1250] |" in table
  assert "| linear_eval / b | 0.1 | 1 | 0.2500 | [0.1250, 0.3750] |" in table
