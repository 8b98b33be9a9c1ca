"""Entry point, in the Flax-examples convention.

  python -m medssl_jax.main --config=configs/demo.py --workdir=/tmp/run [--config.key=value ...]

Multi-host: on Cloud TPU VMs pass --multihost (JAX finds its peers itself); elsewhere pass
--coordinator_address, --num_processes and --process_id (or the MEDSSL_COORDINATOR_ADDRESS,
MEDSSL_NUM_PROCESSES, MEDSSL_PROCESS_ID environment variables) on every process.
"""
import logging as pylogging
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from medssl_jax import errors
from medssl_jax.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/<name>.py[:arg]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and results.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() with auto-detection (TPU VMs).")
flags.DEFINE_string("coordinator_address", os.environ.get("MEDSSL_COORDINATOR_ADDRESS"),
                    "host:port of process 0, for multi-process runs off TPU.")
flags.DEFINE_integer("num_processes", int(os.environ.get("MEDSSL_NUM_PROCESSES", "1")), "Number of processes.")
flags.DEFINE_integer("process_id", int(os.environ.get("MEDSSL_PROCESS_ID", "0")), "This process's id.")
flags.mark_flags_as_required(["config", "workdir"])


def init_distributed() -> None:
  import jax
  if FLAGS.coordinator_address:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  elif FLAGS.multihost:
    jax.distributed.initialize()


def run(config, workdir: str) -> dict:
  """Dispatches on config.mode; also the Python API for notebooks and tests."""
  if config.mode == "pretrain":
    from medssl_jax import pretrain
    return pretrain.pretrain(config, workdir)
  if config.mode in ("finetune", "linear_eval"):
    from medssl_jax import finetune
    return finetune.finetune(config, workdir)
  if config.mode == "dvme":
    from medssl_jax import fusion
    return fusion.run(config, workdir)
  raise UserError(f"mode={config.mode!r}: expected 'pretrain', 'finetune', 'linear_eval' or 'dvme'")


class _QuietLibraries(pylogging.Filter):
  """Keeps the console to our progress lines: INFO chatter of Orbax and CLU is dropped."""

  def filter(self, record):
    noisy = any(s in record.pathname for s in ("orbax", "/clu/", "tensorflow"))
    return not noisy or record.levelno >= pylogging.ERROR


def main(argv):
  """A user error (UserError) ends the run with one line `error: ...` on stderr and exit status 2;
  any other exception prints its traceback and exits 1 (MEDSSL_DEBUG=1: tracebacks for both)."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  errors.guard(_train)()


def _train():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  init_distributed()
  import jax
  logging.info("JAX process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)
  results = run(FLAGS.config, FLAGS.workdir)
  if jax.process_index() == 0:
    print_summary(results)


def print_summary(results: dict) -> None:
  workdir = results["workdir"]
  for split in ("val", "test"):
    if split in results:
      print(f"\n{split} metrics (95% bootstrap CI):")
      for name, r in results[split].items():
        if isinstance(r, dict) and "value" in r:
          print(f"  {name:20s} {r['value']:.4f}  [{r['ci_low']:.4f}, {r['ci_high']:.4f}]")
  if results.get("mode") == "dvme":
    print(f"\nDone: best epoch {results['best_epoch']} of {results['epochs_run']} in {results['wall_time_sec']:.0f} s.")
    att = results.get("attention_by_class")
    if att:
      print("Attention per source (test mean): " + ", ".join(
          f"{n} {w:.3f}" for n, w in zip(att["sources"], att["mean"])))
    print(f"Results:      {os.path.join(workdir, 'results.json')}")
    return
  speed = results.get("images_per_sec", float("nan"))
  print(f"\nDone: step {results['final_step']}/{results['num_steps']} in {results['wall_time_sec']:.0f} s"
        + (f" ({speed:.0f} images/s)." if speed == speed else "."))
  probe = results.get("linear_probe")
  if probe:
    print("Linear probe on frozen features (test top-1 accuracy, 95% bootstrap CI):")
    for name, r in probe.items():
      t = r["top1"]
      print(f"  {name:12s} {t['value']:.3f}  [{t['ci_low']:.3f}, {t['ci_high']:.3f}]")
  print(f"Checkpoints:  {os.path.join(workdir, 'checkpoints')}")
  print(f"Results:      {os.path.join(workdir, 'results.json')}")
  print(f"TensorBoard:  tensorboard --logdir {workdir}   (then open http://localhost:6006)")


def check_overrides(argv) -> None:
  """Fails fast, naming the key, on a `--config.key=value` that the config does not have.

  (config_flags would also refuse it, but with a bare AttributeError deep in flag parsing.)
  """
  import runpy
  config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if not config_arg:
    return
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    raise SystemExit(f"error: --config={config_arg}: no such config file {path!r}")
  module = runpy.run_path(path)
  config = module["get_config"](arg) if arg else module["get_config"]()
  for a in argv:
    if not a.startswith("--config.") or "=" not in a:
      continue
    key = a[len("--config."):].split("=", 1)[0]
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
      if not hasattr(node, "keys") or part not in node.keys():
        known = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(not a group)"
        where = ".".join(parts[:i]) or "<top level>"
        raise SystemExit(f"error: unknown config key {key!r} in {a!r}: {where} has no {part!r}. "
                         f"Known keys there: {known}")
      node = node[part]


if __name__ == "__main__":
  import sys
  errors.guard(check_overrides)(sys.argv[1:])
  app.run(main)
