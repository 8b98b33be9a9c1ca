"""The provenance block of results.json: versions, git commit, devices, times, command line."""
import datetime
import importlib.metadata
import json
import subprocess

import jax

import medssl_jax
from medssl_jax.training import provenance


def test_block_names_what_made_the_result():
  p = provenance.collect(1_700_000_000.0, 1_700_000_060.5, argv=["medssl-jax", "train", "--config=demo"])
  assert p["package_version"] == medssl_jax.__version__
  assert p["libraries"]["jax"] == jax.__version__ == importlib.metadata.version("jax")
  assert p["libraries"]["flax"] == importlib.metadata.version("flax")
  assert p["libraries"]["optax"] == importlib.metadata.version("optax")
  assert (p["platform"], p["device_count"], p["process_count"]) == ("cpu", jax.device_count(), 1)
  assert p["started"] == "2023-11-14T22:13:20+00:00" and p["ended"] == "2023-11-14T22:14:20+00:00"
  assert datetime.datetime.fromisoformat(p["ended"]) - datetime.datetime.fromisoformat(p["started"]) == \
      datetime.timedelta(seconds=60)  # seconds are cut, not rounded
  assert p["command_line"] == ["medssl-jax", "train", "--config=demo"]
  json.dumps(p, allow_nan=False)  # strict JSON


def test_git_commit_of_a_checkout_and_of_no_checkout(tmp_path):
  repo = tmp_path / "repo"
  repo.mkdir()
  git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True)  # noqa: E731
  git("init", "-q")
  (repo / "f.txt").write_text("a")
  git("add", "f.txt")
  git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "x")
  sha = git("rev-parse", "HEAD").stdout.strip()
  assert provenance.git_commit(str(repo)) == {"commit": sha, "dirty": False}
  (repo / "f.txt").write_text("b")
  assert provenance.git_commit(str(repo)) == {"commit": sha, "dirty": True}
  outside = tmp_path / "plain"
  outside.mkdir()
  assert provenance.git_commit(str(outside)) is None
