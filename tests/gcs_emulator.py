"""An offline stand-in for Google Cloud Storage, for tests of gs:// workdirs.

`gcp-storage-emulator` (the `test` extra) serves the GCS JSON API from memory on localhost. The
clients are pointed at it by environment variables, so a process started with `env()` writes
every gs:// path there and reaches no network:
  - tensorstore (Orbax's array data): TENSORSTORE_GCS_HTTP_URL, and a fixed token
    (GOOGLE_AUTH_TOKEN_FOR_TESTING) so that it looks for no credentials;
  - gcsfs (etils.epath's fsspec backend: JSON files, predictions, Orbax's directory handling;
    tensorboard's TF-free event writer): STORAGE_EMULATOR_HOST, anonymous (FSSPEC_GS_TOKEN);
    GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false keeps it from asking the Storage Control gRPC
    API for the bucket type (it waits 60 s for an answer that never comes here);
  - etils.epath: EPATH_USE_TF=false, so gs:// goes through fsspec/gcsfs, not tf.io.gfile.

TensorFlow's own GCS filesystem (tf.io.gfile, tf.summary, hence clu's SummaryWriter) cannot be
pointed here: its endpoint, storage.googleapis.com, is compiled in, and none of its GCS_*
environment variables overrides it. Processes that must stay offline run without TensorFlow.

Two things the emulator (2026.7.19) lacks are added while it runs:
  - the `x-goog-generation` header of a media download: tensorstore takes an object's generation
    from it, and OCDBT's manifest update (read, then write if unchanged) fails with "Malformed
    StorageGeneration" without it;
  - `objects.move` (POST .../o/SRC/moveTo/o/DST), gcsfs's rename: without it gcsfs retries the
    501 answer for ~35 s before it copies and deletes instead.
Preconditions (ifGenerationMatch) are still ignored: fine for one writer, as in these tests.
"""
import contextlib
import logging
import socket
import sys


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _patched_handlers(server, objects):
  """The emulator's routes with the generation header and moveTo added."""
  from http import HTTPStatus
  original = objects.download

  def download(request, response, storage, *args, **kwargs):
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    except Exception:  # a missing object: the original answers 404
      pass
    return original(request, response, storage, *args, **kwargs)

  def move(request, response, storage, *args, **kwargs):
    p = request.params
    try:
      dest = objects._copy(request.base_url, storage, p["bucket_name"], p["object_id"], p["bucket_name"],
                           p["dest_object_id"])
    except objects.NotFound:
      response.status = HTTPStatus.NOT_FOUND
      return
    objects._delete(storage, p["bucket_name"], p["object_id"])
    response.json(dest)

  routes = []
  for prefix in ("/storage/v1", ""):
    routes.append((rf"^{prefix}/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/"
                   rf"(?P<dest_object_id>.*[^/]+)$", {"POST": move}))
  for regex, handlers in server.HANDLERS:
    routes.append((regex, {m: download if h is original else h for m, h in handlers.items()}))
  return download, tuple(routes)


@contextlib.contextmanager
def running(bucket: str = "bucket"):
  """Starts the emulator on a free localhost port with `bucket`; yields its base URL."""
  from gcp_storage_emulator import server
  from gcp_storage_emulator.handlers import objects
  download, routes = _patched_handlers(server, objects)
  saved = objects.download, server.HANDLERS
  objects.download, server.HANDLERS = download, routes  # objects.get calls download by name
  port = _free_port()
  srv = server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
  srv.start()
  httpd = srv._api._httpd
  default_error = httpd.handle_error

  def handle_error(request, client_address):
    if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
      default_error(request, client_address)  # a client that hung up early is not an error
  httpd.handle_error = handle_error
  # Its storage logs each lookup of an absent object (how clients test for existence) as an error.
  storage_log = logging.getLogger("gcp_storage_emulator.storage")
  level = storage_log.level
  storage_log.setLevel(logging.CRITICAL)
  try:
    yield f"http://127.0.0.1:{port}"
  finally:
    srv.stop()
    storage_log.setLevel(level)
    objects.download, server.HANDLERS = saved


def env(url: str) -> dict:
  """Environment variables that send a process's gs:// traffic to the emulator at `url`."""
  return {"TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "offline",
          "STORAGE_EMULATOR_HOST": url, "FSSPEC_GS_TOKEN": "anon", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
          "EPATH_USE_TF": "false", "NO_GCE_CHECK": "true",
          # Any credential lookup that remains fails at once instead of waiting for a metadata server.
          "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_ROOT": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}


def gcsfs_filesystem(url: str):
  """A gcsfs filesystem on the emulator, for the test process itself to list and read objects."""
  import gcsfs
  from gcsfs.core import GCSFileSystem
  del gcsfs
  return GCSFileSystem(endpoint_url=url, token="anon", skip_instance_cache=True)
