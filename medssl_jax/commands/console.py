"""The console of a `medssl-jax` command: our progress lines, short, without third-party noise.

`quiet()` runs once at the start of every command (commands/common.py):
- log lines read `13:04:32 step 225/300 ...` (time of day, then the message; warnings and errors
  say so) instead of absl's `I1207 13:04:32.422555 140186709736320 loop.py:290] ...`;
- INFO chatter of Orbax, CLU, TensorFlow and JAX's backend search (e.g. "Unable to initialize
  backend 'tpu'" on a machine without one) is dropped, and so are Orbax's warnings about the read-only
  managers this project opens on purpose; their other warnings and errors stay;
- TensorFlow's C++ start-up notes (oneDNN, "All log messages before absl::InitializeLog()") are
  turned off through its environment variables, before TensorFlow is imported. TensorFlow runs only
  the tf.data pipeline's image ops here, which oneDNN's custom kernels do not concern.
`MEDSSL_DEBUG=1` keeps absl's full format and every library's lines.
"""
import logging as pylogging
import os
import time

from absl import logging

# Substrings of the source path of library log records kept out of the console below WARNING.
NOISY = ("orbax", "/clu/", "tensorflow", "jax/_src/xla_bridge", "jax/_src/compiler", "etils")


# Orbax warnings that describe options this project sets on purpose (the read-only manager that
# reads a checkpoint's weights and verifies a resume): no user can act on them.
EXPECTED_WARNINGS = ("CheckpointManagerOptions.read_only=True, setting ", "Given directory is read only=")


class _QuietLibraries(pylogging.Filter):
  def filter(self, record):
    noisy = any(s in record.pathname for s in NOISY)
    if noisy and record.levelno == pylogging.WARNING and record.getMessage().startswith(EXPECTED_WARNINGS):
      return False
    return not noisy or record.levelno >= pylogging.WARNING


class ShortFormatter(pylogging.Formatter):
  """'HH:MM:SS message', with the level named when it is not INFO."""

  def format(self, record):
    stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
    level = "" if record.levelno == pylogging.INFO else f"{record.levelname}: "
    text = f"{stamp} {level}{record.getMessage()}"
    if record.exc_info:
      text += "\n" + self.formatException(record.exc_info)
    return text


def quiet(debug: bool = False) -> None:
  """Sets the console up as the module docstring says (idempotent)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if debug:
    return
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())
  handler.setFormatter(ShortFormatter())
