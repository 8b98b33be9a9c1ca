"""The workdir lock (medssl_jax/training/lock.py): one run at a time in a workdir.

Real processes where the point is another process: a holder started with `python -c`, a second run
refused while it holds the lock (and the holder going on unaffected), a holder killed with SIGKILL
(its lock taken over), SIGTERM, atexit. gs:// twice: in-process on the in-memory fake (the
create-if-absent path), and two processes on the offline GCS emulator, taught here to answer
`ifGenerationMatch=0` as Cloud Storage does (412 when the object exists).
"""
from http import HTTPStatus
import json
import logging
import os
import signal
import socket
import subprocess
import sys

from etils import epath
import jax
import pytest

from medssl_jax.errors import UserError
from medssl_jax.training import lock
from tests import fake_gcs, gcs_emulator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A run holding the lock. mode: wait (until a line on stdin), sleep (until a signal), atexit (takes
# the lock without leaving the `with`, then exits), stopflag (SIGTERM inside the training loop's
# StopFlag, then outside it). `index` passes process_index/process_count (no JAX import).
HOLDER = r"""
import os, signal, sys, time
from medssl_jax import errors
from medssl_jax.training import lock

workdir, mode = sys.argv[1], sys.argv[2]
kwargs = {"process_index": 0, "process_count": 1} if "index" in sys.argv[3:] else {}


@errors.guard
def main():
  if mode == "atexit":
    lock.hold(workdir, **kwargs).__enter__()
    print("held", flush=True)
    sys.exit(0)
  with lock.hold(workdir, **kwargs):
    print("held", flush=True)
    if mode == "wait":
      sys.stdin.readline()
    elif mode == "sleep":
      # Short sleeps: a process-directed signal may land on another thread (JAX starts some), and
      # Python runs its handler only when the main thread next runs bytecode; one long sleep would
      # hold it off for its whole length (a training loop runs bytecode all the time).
      for _ in range(6000):
        time.sleep(0.1)
    elif mode == "stopflag":
      from medssl_jax.training import loop
      with loop.StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        while stop.signum is None:
          time.sleep(0.01)
      print("loop stopped, lock", os.path.exists(os.path.join(workdir, ".lock")), flush=True)
      os.kill(os.getpid(), signal.SIGTERM)  # outside the loop: the default action, after the lock is given back
      time.sleep(600)
  print("released", flush=True)


main()
"""


def _env(extra=None):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.update(extra or {})
  return env


def _start(workdir, mode, *flags, env=None):
  proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir), mode, *flags], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env(env))
  line = proc.stdout.readline()
  if line.strip() != "held":
    proc.kill()
    raise AssertionError(f"holder did not start: {line!r} {proc.stderr.read()}")
  return proc


def _run(workdir, mode, *flags, env=None):
  return subprocess.run([sys.executable, "-c", HOLDER, str(workdir), mode, *flags], input="\n", capture_output=True,
                        text=True, cwd=REPO, env=_env(env), timeout=120)


def _expected(workdir, holder) -> str:
  return (f"workdir {workdir} is in use by pid {holder['pid']} on host {socket.gethostname()} since "
          f"{holder['since']} (command {holder['command']}); wait for it to finish or choose another --workdir")


def _dead_pid() -> int:
  """The pid of a process that has exited (this host, this pid namespace)."""
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


@pytest.fixture
def warnings_logged():
  """The absl warnings logged during the test (absl logs through the 'absl' Python logger)."""
  records = []

  class Collect(logging.Handler):
    def emit(self, record):
      records.append(record.getMessage())
  handler = Collect(level=logging.WARNING)
  logger = logging.getLogger("absl")
  logger.addHandler(handler)
  yield records
  logger.removeHandler(handler)


def test_a_second_run_is_refused_naming_the_holder_and_the_first_goes_on(tmp_path):
  workdir = tmp_path / "run"
  first = _start(workdir, "wait", "index")
  try:
    content = (workdir / ".lock").read_bytes()
    holder = json.loads(content)
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
    assert holder["command"] == f"{os.path.basename(sys.executable)} -c {workdir} wait index"
    # A second process: refused in one line, exit status 2, nothing of the first's lock touched.
    second = _run(workdir, "wait", "index")
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines()[-1] == "error: " + _expected(workdir, holder)
    assert "held" not in second.stdout
    # This process too (a direct call), and is_locked names the holder.
    with pytest.raises(UserError) as e:
      with lock.hold(workdir, process_index=0, process_count=1):
        pass
    assert str(e.value) == _expected(workdir, holder)
    found = lock.is_locked(workdir)
    assert found["pid"] == first.pid and not found["this_process"]
    assert lock.is_locked(workdir / "checkpoints")["pid"] == first.pid  # a run's checkpoints folder
    assert (workdir / ".lock").read_bytes() == content
  finally:
    out, err = first.communicate("go\n", timeout=60)
  assert first.returncode == 0, err
  assert out.strip() == "released"
  assert not (workdir / ".lock").exists() and lock.is_locked(workdir) is None
  # Free again: a new run takes it.
  assert _run(workdir, "wait", "index").stdout.split() == ["held", "released"]


def test_a_stale_lock_of_a_killed_process_is_taken_over_with_a_log_line(tmp_path, warnings_logged):
  workdir = tmp_path / "run"
  victim = _start(workdir, "sleep", "index")
  victim.send_signal(signal.SIGKILL)  # nothing runs at exit: the lock file stays
  victim.wait(timeout=60)
  holder = json.loads((workdir / ".lock").read_text())
  assert holder["pid"] == victim.pid
  assert lock.is_locked(workdir) is None  # its holder is gone
  with lock.hold(workdir, process_index=0, process_count=1):
    assert json.loads((workdir / ".lock").read_text())["pid"] == os.getpid()
    assert lock.is_locked(workdir)["this_process"]
  assert not (workdir / ".lock").exists()
  taken = [m for m in warnings_logged if "took over" in m]
  assert taken == [f"workdir {workdir}: took over the lock of pid {victim.pid} on host {socket.gethostname()} "
                   f"(since {holder['since']}), which no longer runs"]


def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  # The parent of this process is alive, but started long before the recorded start time says.
  holder = dict(lock.holder_info(), pid=os.getppid(), process_start="1")
  (workdir / ".lock").write_text(json.dumps(holder))
  assert lock.is_locked(workdir) is None
  with lock.hold(workdir, process_index=0, process_count=1):
    assert json.loads((workdir / ".lock").read_text())["pid"] == os.getpid()


def test_the_lock_is_released_after_sigterm_outside_the_loop(tmp_path):
  workdir = tmp_path / "run"
  proc = _start(workdir, "sleep")
  assert (workdir / ".lock").exists()
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGTERM  # ended as SIGTERM ends a process, after giving the lock back
  assert not (workdir / ".lock").exists()


def test_sigterm_in_the_training_loop_keeps_the_lock_then_a_later_one_releases_it(tmp_path):
  workdir = tmp_path / "run"
  proc = _start(workdir, "stopflag", "index")
  out, err = proc.communicate(timeout=120)
  assert "loop stopped, lock True" in out, err  # the loop's handler had the signal; the lock stayed
  assert proc.returncode == -signal.SIGTERM, err
  assert not (workdir / ".lock").exists()


def test_the_lock_is_released_at_exit_without_leaving_the_with_block(tmp_path):
  workdir = tmp_path / "run"
  done = _run(workdir, "atexit", "index")
  assert done.returncode == 0 and done.stdout.split() == ["held"], done.stderr
  assert not (workdir / ".lock").exists()


def test_only_process_zero_touches_the_lock(tmp_path, monkeypatch):
  fresh = tmp_path / "fresh"
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  with lock.hold(fresh):  # the default: jax.process_index()
    assert not fresh.exists()  # no lock file, not even the folder
  # A workdir held by a live process: process 1 neither reads it nor is refused; process 0 is.
  held = tmp_path / "held"
  held.mkdir()
  content = json.dumps(dict(lock.holder_info(), pid=os.getppid(), process_start=None)).encode()
  (held / ".lock").write_bytes(content)
  with lock.hold(held, process_index=1, process_count=1):
    pass
  assert (held / ".lock").read_bytes() == content
  with pytest.raises(UserError, match=r"^workdir .* is in use by pid \d+ on host"):
    with lock.hold(held, process_index=0, process_count=1):
      pass
  assert (held / ".lock").read_bytes() == content


def test_reentrant_in_one_process_and_a_refused_run_leaves_no_empty_workdir(tmp_path):
  workdir = tmp_path / "a" / "run"
  with lock.hold(workdir, process_index=0, process_count=1):
    with lock.hold(workdir, process_index=0, process_count=1):  # a run inside a run
      assert lock.is_locked(workdir)["this_process"]
    assert (workdir / ".lock").exists()  # still held by the outer one
  assert lock.is_locked(workdir) is None
  assert not workdir.exists()  # hold() made it and nothing was written in it
  kept = tmp_path / "kept"
  with lock.hold(kept, process_index=0, process_count=1):
    (kept / "config.json").write_text("{}")
  assert sorted(os.listdir(kept)) == ["config.json"]


def test_an_unreadable_lock_file_is_refused_not_overwritten(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / ".lock").write_bytes(b"")
  with pytest.raises(UserError, match=r"has a lock file .*\.lock that cannot be read .*delete it"):
    with lock.hold(workdir, process_index=0, process_count=1):
      pass
  assert (workdir / ".lock").read_bytes() == b""


def test_gs_workdir_create_if_absent_refusal_and_takeover(monkeypatch, warnings_logged):
  fake_gcs.install(monkeypatch)
  workdir = "gs://bucket/runs/a"
  with lock.hold(workdir, process_index=0, process_count=1):
    holder = json.loads(epath.Path(workdir, ".lock").read_text())
    assert holder["pid"] == os.getpid()
    assert lock._create(epath.Path(workdir, ".lock"), b"x") is False  # create-if-absent, not an overwrite
  assert not epath.Path(workdir, ".lock").exists()
  # Held on another machine: cannot be checked from here, so refused, saying how to clear it.
  other = dict(lock.holder_info(), host="other-host", pid=4242)
  epath.Path(workdir, ".lock").write_text(json.dumps(other))
  with pytest.raises(UserError) as e:
    with lock.hold(workdir, process_index=0, process_count=1):
      pass
  assert str(e.value) == (f"workdir {workdir} is in use by pid 4242 on host other-host since {other['since']} "
                          f"(command {other['command']}); wait for it to finish or choose another --workdir (if that "
                          f"run is no longer running, delete {workdir}/.lock)")
  # Held by a dead process of this host: taken over.
  stale = dict(lock.holder_info(), pid=_dead_pid(), process_start=None)
  epath.Path(workdir, ".lock").write_text(json.dumps(stale))
  with lock.hold(workdir, process_index=0, process_count=1):
    assert json.loads(epath.Path(workdir, ".lock").read_text())["pid"] == os.getpid()
  assert any(f"took over the lock of pid {stale['pid']}" in m for m in warnings_logged)
  assert not epath.Path(workdir, ".lock").exists()


@pytest.fixture
def emulator_with_preconditions():
  """The GCS emulator, answering uploads with ifGenerationMatch=0 by 412 when the object exists (as
  Cloud Storage does; the emulator itself ignores preconditions). Yields (url, refused uploads)."""
  pytest.importorskip("gcp_storage_emulator", reason="the `test` extra: pip install -e .[test]")
  pytest.importorskip("gcsfs", reason="the `test` extra: pip install -e .[test]")
  from gcp_storage_emulator import server
  from gcp_storage_emulator.exceptions import NotFound
  from gcp_storage_emulator.handlers import objects
  refused = []
  with gcs_emulator.running() as url:
    original = objects.insert

    def insert(request, response, storage, *args, **kwargs):
      if request.query.get("ifGenerationMatch", [None])[0] == "0":
        name = (request.query.get("name") or [None])[0]
        if name is None and isinstance(request.data, dict):
          name = request.data.get("meta", {}).get("name")
        try:
          storage.get_file_obj(request.params["bucket_name"], name)
        except NotFound:
          pass
        else:
          refused.append(name)
          response.status = HTTPStatus.PRECONDITION_FAILED
          response.json({"error": {"code": 412, "message": "At least one of the pre-conditions you specified did "
                                                           "not hold."}})
          return
      return original(request, response, storage, *args, **kwargs)

    saved = server.HANDLERS
    server.HANDLERS = tuple((regex, {m: insert if h is original else h for m, h in handlers.items()})
                            for regex, handlers in saved)
    objects.insert = insert
    try:
      yield url, refused
    finally:
      server.HANDLERS, objects.insert = saved, original


def test_gs_two_processes_on_the_emulator(emulator_with_preconditions):
  url, refused = emulator_with_preconditions
  env = gcs_emulator.env(url)
  workdir = "gs://bucket/runs/two"
  first = _start(workdir, "wait", "index", env=env)
  try:
    fs = gcs_emulator.gcsfs_filesystem(url)
    holder = json.loads(fs.cat_file("bucket/runs/two/.lock"))
    assert holder["pid"] == first.pid
    second = _run(workdir, "wait", "index", env=env)
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines()[-1] == "error: " + _expected(workdir, holder)
    assert refused == ["runs/two/.lock"]  # the refusal came from the atomic create, not a prior check
    assert json.loads(fs.cat_file("bucket/runs/two/.lock")) == holder
  finally:
    out, err = first.communicate("go\n", timeout=60)
  assert first.returncode == 0 and out.strip() == "released", err
  assert not gcs_emulator.gcsfs_filesystem(url).exists("bucket/runs/two/.lock")


def test_holds_workdir_decorator_holds_the_lock_while_the_run_runs(tmp_path):
  seen = {}

  @lock.holds_workdir
  def run(config, workdir):
    seen.update(config=config, holder=lock.is_locked(workdir))
    return "results"
  assert run("cfg", str(tmp_path / "run")) == "results"
  assert seen["config"] == "cfg" and seen["holder"]["this_process"] and seen["holder"]["pid"] == os.getpid()
  assert lock.is_locked(tmp_path / "run") is None


# Two JAX processes (jax.distributed on localhost, gloo collectives): process 0 takes the lock, the
# other never touches the file, and a refusal reaches both.
MULTI = r"""
import json, os, sys
import jax
from jax.experimental import multihost_utils
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from medssl_jax.errors import UserError
from medssl_jax.training import lock

workdir = sys.argv[3]
try:
  with lock.hold(workdir):
    multihost_utils.sync_global_devices("looked")  # both look while process 0 holds it
    seen = {"index": jax.process_index(), "lock_exists": os.path.exists(os.path.join(workdir, ".lock")),
            "holder": lock.is_locked(workdir)}
    multihost_utils.sync_global_devices("seen")
  print(json.dumps(seen), flush=True)
except UserError as e:
  print(json.dumps({"index": jax.process_index(), "refused": str(e)}), flush=True)
jax.distributed.shutdown()
"""


def _two_processes(workdir):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = _env({"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  procs = [subprocess.Popen([sys.executable, "-c", MULTI, f"localhost:{port}", str(i), str(workdir)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-3000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  return sorted(outs, key=lambda o: o["index"])


def test_multi_host_process_zero_takes_the_lock_and_a_refusal_reaches_every_process(tmp_path):
  workdir = tmp_path / "run"
  zero, one = _two_processes(workdir)
  assert zero["lock_exists"] and zero["holder"]["this_process"]
  assert one["lock_exists"]  # process 0's file (a shared disk here); process 1 did not make it
  assert one["holder"]["pid"] == zero["holder"]["pid"] != os.getpid()
  assert not workdir.exists()  # given back (and the empty workdir hold() made removed)
  # Held by a live process (this test's parent): both processes refused with process 0's line.
  workdir.mkdir()
  holder = dict(lock.holder_info(), pid=os.getppid(), process_start=None)
  (workdir / ".lock").write_text(json.dumps(holder))
  zero, one = _two_processes(workdir)
  assert zero["refused"] == one["refused"] == _expected(workdir, holder)
  assert json.loads((workdir / ".lock").read_text()) == holder
