"""Atomic output files (issue 32 item 6, medssl_jax/jsonio.py): a temporary name unique per writer,
then a rename; two writers of one path never share a temporary file, a failed write leaves the old file."""
import json
import threading

import pytest

from medssl_jax import jsonio
from medssl_jax.training import loop


def test_two_interleaved_writers_of_one_path_do_not_collide(tmp_path):
  path = tmp_path / "results.json"
  path.write_text("old")
  with jsonio.atomic_path(path) as a:
    a.write_text("from a, part 1 ")
    with jsonio.atomic_path(path) as b:  # a second writer starts before the first has finished
      assert a != b and a.parent == b.parent == tmp_path
      assert a.name.startswith("results.json.tmp.") and b.name.startswith("results.json.tmp.")
      b.write_text("from b")
      assert path.read_text() == "old"  # nothing visible until a rename
    assert path.read_text() == "from b"
    a.write_text(a.read_text() + "part 2")  # the first writer's file was not touched by the second
  assert path.read_text() == "from a, part 1 part 2"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "x.npz"
  path.write_bytes(b"old")
  with pytest.raises(RuntimeError):
    with jsonio.open_atomic(path) as f:
      f.write(b"half")
      raise RuntimeError("crash mid-write")
  assert path.read_bytes() == b"old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def test_concurrent_write_json_to_one_path_always_leaves_a_whole_file(tmp_path):
  """Threads writing one results.json at once (a fixed '.tmp' name: one renames the other's file away,
  the other's rename then fails, or a torn file is renamed into place)."""
  path = tmp_path / "results.json"
  failures = []

  def writer(i):
    try:
      for j in range(40):
        loop.write_json(str(path), {"writer": i, "round": j, "pad": "x" * 20000})
    except Exception as e:  # noqa: BLE001 -- collected for the assert
      failures.append(e)
  threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert failures == []
  got = json.loads(path.read_text())
  assert got["round"] == 39 and len(got["pad"]) == 20000
  assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_write_json_is_strict(tmp_path):
  jsonio.write_json(tmp_path / "r.json", {"auc": float("nan"), "b": 1})
  assert json.loads((tmp_path / "r.json").read_text()) == {"auc": None, "b": 1}
