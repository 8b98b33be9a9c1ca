"""gs:// faked in memory for in-process tests (no emulator, no network).

fsspec's in-memory filesystem is registered for the gs/gcs protocols and etils.epath is told to
use its fsspec backend instead of tf.io.gfile. One class for the whole suite: etils caches the
filesystem instance it made first (an lru_cache in its fsspec backend), so two fake classes (or
one test module imported under two names) would leave later tests writing into another store.
`install` gives each test a fresh cache and puts the original registry and cache back after it.
"""
from fsspec.implementations.memory import MemoryFileSystem


class FakeGCS(MemoryFileSystem):
  protocol = ("gs", "gcs")
  store = {}  # its own, not the memory:// filesystem's
  pseudo_dirs = [""]

  def __init__(self, *args, finalize_on_close=None, **kwargs):
    del finalize_on_close  # an option of gcsfs that epath passes
    super().__init__(*args, **kwargs)


def install(monkeypatch) -> FakeGCS:
  """Routes gs:// (epath and fsspec) to an empty in-memory store until the test ends."""
  import functools
  import importlib
  from etils.epath import backend, gpath
  registry = importlib.import_module("fsspec.registry")._registry  # pylint: disable=protected-access
  for name in FakeGCS.protocol:
    monkeypatch.setitem(registry, name, FakeGCS)
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  # A fresh filesystem cache for this test; the original (and whatever it holds) is put back after.
  cls = type(backend.fsspec_backend)
  monkeypatch.setattr(cls, "_get_filesystem", functools.lru_cache()(cls._get_filesystem.__wrapped__))
  FakeGCS.store.clear()
  FakeGCS.pseudo_dirs[:] = [""]
  return FakeGCS()
