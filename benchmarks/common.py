"""Shared pieces of the studies: scale presets, skip-if-done runs, machine and data records."""
import hashlib
import json
import os
import platform
import shlex
import sys
import time

import jax
import numpy as np

from input_pipeline import backends
from input_pipeline import fractions
from input_pipeline import sources
from medssl_jax import jsonio
from medssl_jax import main as main_lib
from medssl_jax.runs import pretrain as pretrain_run
from medssl_jax.training import workdir as workdir_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))
DEFAULT_WORKDIR = "workdirs/benchmarks"
MANIFEST = "study.json"

# Every scale-dependent setting of both studies. 'smoke' is a real end-to-end run that only
# checks the plumbing (its numbers mean nothing); 'small' fits a CPU; 'full' is for a GPU.
SCALES = {
    "smoke": dict(width=0.125, batch=16, pretrain_steps=4, eval_steps=3, continue_steps=4,
                  covid_batch=16, num_replicates=50, draws=1, fractions=(1.0,),
                  datasets=("breastmnist",), val_split="", fractions_b=(1.0,),
                  recipe=(("breastmnist", 0.125),), recipe_epochs=0.2, recipe_batch=16),
    "small": dict(width=0.25, batch=128, pretrain_steps=500, eval_steps=300, continue_steps=300,
                  covid_batch=32, num_replicates=1000, draws=2, fractions=(0.01, 0.1, 1.0),
                  datasets=("pneumoniamnist", "breastmnist"), val_split="val",
                  fractions_b=(0.01, 0.1, 1.0),
                  recipe=(("breastmnist", 0.25),), recipe_epochs=100, recipe_batch=128),
    "full": dict(width=1.0, batch=512, pretrain_steps=5000, eval_steps=2000, continue_steps=2000,
                 covid_batch=64, num_replicates=1000, draws=3, fractions=(0.01, 0.1, 1.0),
                 datasets=("pneumoniamnist", "breastmnist"), val_split="val",
                 fractions_b=(0.01, 0.1, 1.0),
                 recipe=(("breastmnist", 1.0), ("pneumoniamnist", 1.0)), recipe_epochs=100, recipe_batch=128),
}
# 'recipe': (data set, width) pairs fine-tuned from random init with the MedMNIST v2 training recipe,
# to compare our pipeline with the published ResNet-18 (28) rows on the published protocol.
# One architecture for every run of both studies: grey 28 px, ResNet-18 with the small stem.
IMAGE_SIZE, CHANNELS, DEPTH, STEM, HEAD_LAYERS, HEAD_DIM = 28, 1, 18, "small", 2, 128
# Linear evaluation standardises the frozen features before the linear layer (batch norm without
# scale or offset, `finetune.feature_norm`). Without it, the random-init arm's features (standard
# deviation across images about 0.004 at 0.25x width) leave an SGD-trained head at the majority
# class, which overstated the pretraining gain in the first small-scale report.
LINEAR_FEATURE_NORM = "batchnorm"


def add_common_flags(parser) -> None:
  parser.add_argument("--scale", choices=sorted(SCALES), default="smoke")
  parser.add_argument("--workdir", default=DEFAULT_WORKDIR, help="root of all run outputs")
  parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="folder with the real data files")
  parser.add_argument("--only_finished", action="store_true",
                      help="run nothing: write study.json from the runs that have finished (the rest are "
                           "listed as missing), e.g. for a report while a long study is still going")


def study_dir(workdir: str, scale: str, study: str) -> str:
  return os.path.join(workdir, scale, study)


def pretrain_dir(workdir: str, scale: str, dataset: str) -> str:
  """The SimCLR pretraining run of a data set, shared by both studies (same config, run once)."""
  return os.path.join(workdir, scale, f"pretrain_simclr_{dataset}")


def set_architecture(c, width: float) -> None:
  c.data.image_size, c.data.channels = IMAGE_SIZE, CHANNELS
  c.model.depth, c.model.width, c.model.stem = DEPTH, width, STEM
  c.model.head_layers, c.model.head_dim = HEAD_LAYERS, HEAD_DIM
  c.model.dtype = "float32"


def set_steps(c, steps: int) -> None:
  c.train.num_steps = steps
  c.train.log_every = max(1, min(c.train.log_every, steps))
  c.train.checkpoint_every = steps
  c.optim.warmup_steps = min(c.optim.warmup_steps, steps // 10)


def num_devices() -> int:
  return jax.device_count()


def labelled_batch(data_cfg, fraction: float, draw: int, batch: int) -> tuple:
  """(global batch, labelled images): the scale's batch, lowered to the largest multiple of the
  device count that the labelled images fill; where they cannot fill one image per device
  (5 images on 8 devices), one image per device, with the images repeated within the batch."""
  src = sources.load_source(data_cfg, data_cfg.train_split)
  n = len(src.labels) if fraction >= 1.0 else len(
      fractions.sample_fraction(src.labels, src.case_ids, fraction, draw))
  ndev = num_devices()
  b = min(batch, n // ndev * ndev)
  return (b if b > 0 else ndev), n


def read_results(workdir: str):
  path = os.path.join(workdir, "results.json")
  if not os.path.isfile(path):
    return None
  return jsonio.read_json(path)  # a metric written as null (NaN) reads as NaN


def is_done(results) -> bool:
  return bool(results and results.get("completed")) and (results.get("mode") == "pretrain" or "test" in results)


def run_once(config, workdir: str, log=print, run: bool = True):
  """Runs the config in `workdir` unless a completed results.json is already there.

  With run=False nothing is run: the finished results, or None.
  """
  previous = read_results(workdir)
  if previous is not None or os.path.isfile(os.path.join(workdir, "config.json")):
    check_same_settings(config, workdir)
  if is_done(previous):
    log(f"  skip (done): {workdir}")
    return previous
  if not run:
    log(f"  not finished (left out): {workdir}")
    return None
  log(f"  run: {workdir}")
  t0 = time.time()
  results = main_lib.run(config, workdir)
  if not is_done(results):  # stopped early (SIGTERM / preemption): stop the study, do not go on
    raise SystemExit(f"{workdir}: the run stopped at step {results.get('final_step')} of "
                     f"{results.get('num_steps')}; re-run the same command to resume it")
  log(f"  done in {time.time() - t0:.1f} s")
  return results


def check_same_settings(config, workdir: str) -> None:
  """Refuses to reuse (skip or resume) a run made with other settings than `config`."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise SystemExit(f"{workdir}: has results.json but no config.json; cannot tell which settings made it. "
                     f"Move the folder away to re-run it.")
  if config.mode == "pretrain":  # its config.json records aug.on_device as the run decided it ('auto' -> on / off)
    config, _ = pretrain_run.resolve_on_device(config)
  with open(path) as f:
    diffs = workdir_lib.config_differences(json.load(f), config, ignore=())
  if diffs:
    raise SystemExit(f"{workdir} holds a run with other settings ({'; '.join(diffs)}; folder -> now). Its results "
                     f"would not answer this study's question: move the folder away (or use another --workdir) "
                     f"to re-run it.")


def add_run(manifest: dict, entry: dict, results) -> None:
  """Lists a run in the study's manifest, or under 'missing' when it has not finished."""
  if results is None:
    manifest.setdefault("missing", []).append(entry["workdir"])
  else:
    manifest["runs"].append(entry)


def md5_file(path: str) -> str:
  h = hashlib.md5()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def data_record(path: str) -> dict:
  """md5 of a file, or for a folder the md5 over its sorted (relative path, file md5) lines."""
  path = os.path.abspath(path)
  if os.path.isfile(path):
    return {"path": path, "kind": "file", "bytes": os.path.getsize(path), "md5": md5_file(path)}
  lines, total = [], 0
  for root, _, files in sorted(os.walk(path)):
    for name in sorted(files):
      p = os.path.join(root, name)
      total += os.path.getsize(p)
      lines.append(f"{os.path.relpath(p, path)}  {md5_file(p)}\n")
  digest = hashlib.md5("".join(sorted(lines)).encode()).hexdigest()
  return {"path": path, "kind": "folder", "files": len(lines), "bytes": total, "md5": digest}


def host_pipeline() -> str:
  """'tf (TensorFlow <version>)' or 'numpy (no TensorFlow)': what data.pipeline='auto' takes here."""
  mod = backends.get("auto")
  if backends.short_name(mod) == "tf":
    return f"tf (TensorFlow {mod.tf.__version__})"
  return "numpy (no TensorFlow)"


def machine_record() -> dict:
  dev = jax.devices()[0]
  return {"host_pipeline": host_pipeline(), "platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
          "cpu_cores": os.cpu_count(), "jax": jax.__version__, "backend": dev.platform,
          "device_kind": getattr(dev, "device_kind", str(dev)), "device_count": jax.device_count()}


def command_line(module: str, argv) -> str:
  """The command as a shell would take it back (arguments with ';', spaces etc. quoted)."""
  argv = sys.argv[1:] if argv is None else list(argv)
  return " ".join(["python -m", module] + [shlex.quote(a) for a in argv])


def write_manifest(path: str, manifest: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=2, default=_json_default)
  os.replace(tmp, path)


def finish_study(root: str, manifest: dict, t0: float, study: str) -> int:
  """Stamps the study's wall time, writes its study.json and says where."""
  manifest["wall_time_sec"] = time.time() - t0
  out = os.path.join(root, MANIFEST)
  write_manifest(out, manifest)
  print(f"[{study}] wrote {out}")
  return 0


def _json_default(x):
  if isinstance(x, (np.integer, np.floating)):
    return x.item()
  if isinstance(x, tuple):
    return list(x)
  raise TypeError(type(x))
