"""`medssl-jax train`: pretrain, fine-tune, linear-evaluate or train DVME, as the config says.

  medssl-jax train --config=configs/demo.py --workdir=/tmp/run [--config.key=value ...]

Multi-host: on Cloud TPU VMs pass --multihost (JAX finds its peers itself); elsewhere pass
--coordinator_address, --num_processes and --process_id (or the MEDSSL_COORDINATOR_ADDRESS,
MEDSSL_NUM_PROCESSES, MEDSSL_PROCESS_ID environment variables) on every process.

Exit status: 0 finished, 2 a user error (one line `error: ...`), 1 a bug (traceback), 75 stopped by
SIGTERM or SIGINT (Ctrl-C) after saving a checkpoint ("stopped at step S of N (resumable)"): the
same command resumes it.
"""
import os

from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from medssl_jax import errors
from medssl_jax import main as main_lib
from medssl_jax.commands import common

FLAGS = flags.FLAGS


def _define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Config file (configs/<name>.py[:arg]).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and results.")
  flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() with auto-detection (TPU VMs).")
  flags.DEFINE_string("coordinator_address", os.environ.get("MEDSSL_COORDINATOR_ADDRESS"),
                      "host:port of process 0, for multi-process runs off TPU.")
  flags.DEFINE_integer("num_processes", int(os.environ.get("MEDSSL_NUM_PROCESSES", "1")), "Number of processes.")
  flags.DEFINE_integer("process_id", int(os.environ.get("MEDSSL_PROCESS_ID", "0")), "This process's id.")
  flags.mark_flags_as_required(["config", "workdir"])


def init_distributed() -> None:
  if FLAGS.coordinator_address:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  elif FLAGS.multihost:
    jax.distributed.initialize()


def main(argv):
  """Runs under `errors.guard` (common.run): a UserError ends the run with one line `error: ...` on
  stderr and exit status 2; any other exception prints its traceback and exits 1."""
  del argv  # common.run refuses positional arguments
  init_distributed()
  logging.info("JAX process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)
  results = main_lib.run(FLAGS.config, FLAGS.workdir)
  if stopped(results):  # SIGTERM / SIGINT: a checkpoint was saved at the step it stopped at
    if jax.process_index() == 0:
      print(f"Checkpoints:  {os.path.join(results['workdir'], 'checkpoints')}")
      print(f"\nstopped at step {results['final_step']} of {results['num_steps']} (resumable)", flush=True)
    return errors.RESUMABLE_EXIT
  if jax.process_index() == 0:
    print_summary(results)


def stopped(results: dict) -> bool:
  """Whether the run was stopped by a signal before its last step (not a finish, not an early stop)."""
  return results.get("mode") != "dvme" and results.get("completed") is False


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


def cli(argv) -> None:
  """The sub-command's entry (medssl_jax/cli.py); argv[0] is its name."""
  common.run(argv, doc=__doc__, define_flags=_define_flags, main=main)
