"""One-shot accelerator check: our SimCLR step against a PyTorch SimCLR step, plus the host input rate.

  bash launch/gpu_check.sh [--batch_sizes=256,512] [--out=gpu_check.json]
  python -m benchmarks.accelerator_check --depth=18 --width=0.25 --image_size=32 \
      --batch_sizes=8 --steps=2 --torch_batch=8            # the CPU dry run the tests do

Each part runs in its own subprocess (JAX and PyTorch must not share the accelerator's memory
pool, and one part failing, e.g. out of memory, must not lose the others' numbers):

- `jax`:   this project's SimCLR train step (`medssl_jax.methods.simclr`: ResNet + 2-layer projection
           head, NT-Xent over the global batch, LARS, bf16 compute) at each batch size of
           `--batch_sizes`, ascending, until one does not fit; pairs/s on views already on the device.
- `torch`: the same step written in PyTorch: torchvision ResNet of the same depth, the same head
           (Linear-BN-ReLU-Linear-BN, no bias on the last), the same NT-Xent (all 2N-1 other views),
           LARS with 1-D parameters excluded from weight decay and trust ratio, bf16 autocast,
           channels_last; eager, then `torch.compile` where it works. Skipped, saying so, where
           torch or torchvision is not installed.
- `host`:  the TensorFlow-free host pipelines of `--host_pipelines` (numpy: `numpy_pipeline.py` on
           threads; grain: `grain_pipeline.py` on processes) reading real image files with the
           SimCLR and the CheXpert augmentation at `--image_size` (with `--device_augment`, also
           the host part of aug.on_device), with 1 and with all workers (at most 16): pairs/s,
           and pairs/s per worker.

- `e2e`:   with `--end_to_end` (launch/gpu_check.sh passes it): the real pretraining loop,
           `medssl-jax throughput --end_to_end`, at `--image_size` with the step of the `jax` part
           (SimCLR augmentation, aug.on_device 'auto': on for a GPU) on `--images`, twice: from the
           original files and from records written once at a `--e2e_short_side` short side
           (`medssl-jax prepare-data --short_side`); loop pairs/s, step-only pairs/s, their ratio and
           the input-wait fraction. The two runs share a persistent XLA cache (the second compiles
           nothing); `--e2e_dry_run` prints the commands without running them.

It prints one table (the last lines of the output) and writes every number, the card and the
library versions to `--out` (JSON). Pairs/s counts positive pairs (2 views each) per second.
"""
import argparse
import importlib
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from configs import derm_simclr
from medssl_jax.commands import throughput
import jax
from input_pipeline import sources
from configs import chexpert_simclr
from input_pipeline import grain_pipeline
from input_pipeline import numpy_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_IMAGES = os.path.join(ROOT, "..", "shared", "data", "covid_cxr_multi")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--part", default="all", choices=("all", "jax", "torch", "host", "e2e"))
  p.add_argument("--depth", type=int, default=50)
  p.add_argument("--width", type=float, default=1.0)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--batch_sizes", default="128,256,512", help="JAX global batches (pairs), ascending.")
  p.add_argument("--torch_batch", type=int, default=0, help="PyTorch batch (pairs); 0 = the largest JAX batch that ran.")
  p.add_argument("--steps", type=int, default=20, help="Timed steps per measurement (after 3 warm-up steps).")
  p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  p.add_argument("--also_moco", action="store_true",
                 help="Also time the MoCo v2 step (queue, momentum encoder, shuffled BN) at the largest batch that ran.")
  p.add_argument("--methods", default="",
                 help="Also time these methods' steps (comma-separated registry names, or 'all': every method with a "
                      "configs/<name>.py) at the largest batch that ran, each with its own config's heads, loss and "
                      "optimiser on the same encoder as the SimCLR rows (--depth, --width, --dtype, --image_size).")
  p.add_argument("--torch_compile", default="auto", choices=("auto", "off"))
  p.add_argument("--device_augment", action="store_true",
                 help="Also time the SimCLR step with aug.on_device (uint8 views in, flip/colour/grayscale/blur in the "
                      "step) at the largest batch that ran, and the host pipeline sending such views.")
  p.add_argument("--images", default=DEFAULT_IMAGES,
                 help="Folder for the host part: a covid_cxr_multi-style folder or any folder of JPEG/PNG files.")
  p.add_argument("--host_batches", type=int, default=6)
  p.add_argument("--host_pipelines", default="numpy",
                 help="Comma-separated host pipelines to time: numpy (threads), grain (worker processes), "
                      "tf (tf.data, its own parallelism over all cores; needs TensorFlow).")
  p.add_argument("--host_batch", type=int, default=32, help="Pairs per host batch.")
  p.add_argument("--part_timeout", type=int, default=400, help="Seconds before a part is abandoned.")
  p.add_argument("--end_to_end", action="store_true",
                 help="Also run the real pretraining loop (medssl-jax throughput --end_to_end) from --images, as "
                      "original files and as records at --e2e_short_side.")
  p.add_argument("--e2e_batch", type=int, default=256, help="End-to-end global batch (pairs).")
  p.add_argument("--e2e_steps", default="40,100",
                 help="End-to-end steps from the original files, from the records (the first is not timed).")
  p.add_argument("--e2e_short_side", type=int, default=256, help="Short side of the records (prepare-data).")
  p.add_argument("--e2e_pipeline", default="grain", help="data.pipeline of the end-to-end runs.")
  p.add_argument("--e2e_dry_run", action="store_true", help="Print the end-to-end commands; run nothing.")
  p.add_argument("--out", default="")
  return p.parse_args(argv)


# ---- JAX ------------------------------------------------------------------------------------------
def _jax_config(args, batch: int):
  c = derm_simclr.get_config()
  with c.unlocked():
    c.model.depth, c.model.width, c.model.dtype = args.depth, args.width, args.dtype
    c.data.image_size, c.train.batch_size = args.image_size, batch
  return c


def _timed_row(c, args) -> dict:
  """One step measurement as a table row; a failure (e.g. out of memory) is a row with its error."""
  b = int(c.train.batch_size)
  try:
    r = throughput.time_step(c, args.steps)
  except Exception as e:  # noqa: BLE001 - reported in the table
    return {"batch": b, "error": str(e).splitlines()[0][:300], "oom": "RESOURCE_EXHAUSTED" in str(e)
            or "out of memory" in str(e).lower()}
  return {"batch": b, "pairs_per_sec": r["images_per_sec"] / 2, "compile_s": r["compile_and_warmup_seconds"],
          "step_ms": 1000 * r["seconds"] / r["steps"], "loss_finite": r["loss_finite"]}


# Methods timed by --methods=all: those with their own config (configs/<name>.py); SimCLR and MoCo v2
# have their rows already.
OTHER_METHODS = ("byol", "simsiam", "barlow_twins", "vicreg", "dino", "swav")


def _method_names(spec: str) -> list:
  if not spec:
    return []
  if spec == "all":
    return [n for n in OTHER_METHODS if importlib.util.find_spec(f"configs.{n}") is not None]
  names = [n for n in spec.split(",") if n]
  unknown = [n for n in names if n not in OTHER_METHODS]
  if unknown:
    raise SystemExit(f"error: --methods: unknown {unknown}; expected names from {list(OTHER_METHODS)} or 'all'")
  return names


def _method_config(args, name: str, batch: int):
  """configs/<name>.py's recipe (heads, loss, optimiser) on the SimCLR rows' encoder, size and batch."""
  c = importlib.import_module(f"configs.{name}").get_config("")
  with c.unlocked():
    if int(c.aug.get("local_crops", 0)):  # multi-crop recipes (SwAV): local views scaled with the image
      c.aug.local_crop_size = max(1, round(c.aug.local_crop_size * args.image_size / c.data.image_size))
    c.model.arch, c.model.depth, c.model.width, c.model.stem = "resnet", args.depth, args.width, "imagenet"
    c.model.dtype, c.data.image_size, c.data.channels = args.dtype, args.image_size, 3
    c.train.batch_size = batch
  return c


def jax_part(args) -> dict:

  rows = []
  for b in [int(x) for x in args.batch_sizes.split(",") if x]:
    rows.append(_timed_row(_jax_config(args, b), args))
    if rows[-1].pop("oom", False):  # out of memory ends the sweep, reported as such
      break
    if "pairs_per_sec" in rows[-1]:
      print(f"jax batch {b}: {rows[-1]['pairs_per_sec']:.0f} pairs/s", file=sys.stderr, flush=True)
      print(json.dumps({"rows": rows, "jax": jax.__version__, "device": jax.devices()[0].device_kind}), flush=True)
  ran = [r["batch"] for r in rows if "pairs_per_sec" in r]
  moco, device_aug = [], []
  if args.also_moco and ran:
    c = _jax_config(args, max(ran))
    with c.unlocked():
      c.method, c.moco.temperature = "moco_v2", 0.2
      c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_steps = "sgd", 0.03, 1e-4, 0
      c.moco.queue_size = max(c.moco.queue_size // max(ran), 1) * max(ran)
      c.moco.bn_groups = max([g for g in (8, 4, 2) if max(ran) % g == 0 and max(ran) // g >= 2] or [2])
    moco.append(_timed_row(c, args))
    moco[-1].pop("oom", None)
    if "pairs_per_sec" in moco[-1]:
      moco[-1].update(queue_size=c.moco.queue_size, bn_groups=c.moco.bn_groups)
  method_rows = []
  for name in _method_names(args.methods) if ran else []:
    method_rows.append({"method": name, **_timed_row(_method_config(args, name, max(ran)), args)})
    method_rows[-1].pop("oom", None)
    if "pairs_per_sec" in method_rows[-1]:
      print(f"jax {name} batch {max(ran)}: {method_rows[-1]['pairs_per_sec']:.0f} pairs/s", file=sys.stderr, flush=True)
    print(json.dumps({"rows": rows, "moco_rows": moco, "method_rows": method_rows, "jax": jax.__version__,
                      "device": jax.devices()[0].device_kind}), flush=True)
  if args.device_augment and ran:
    c = _jax_config(args, max(ran))
    with c.unlocked():
      c.aug.on_device = True
    device_aug.append(_timed_row(c, args))
    device_aug[-1].pop("oom", None)
    if "pairs_per_sec" in device_aug[-1]:
      print(f"jax on-device augmentation batch {max(ran)}: {device_aug[-1]['pairs_per_sec']:.0f} pairs/s",
            file=sys.stderr, flush=True)
  return {"rows": rows, "moco_rows": moco, "method_rows": method_rows, "device_aug_rows": device_aug, "jax": jax.__version__,
          "device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
          "device_count": jax.device_count()}


# ---- PyTorch ------------------------------------------------------------------------------------
def _torch_lars(params, lr, momentum=0.9, weight_decay=1e-6, trust=0.001):
  """LARS as in the SimCLR code and `medssl_jax.training.optim`: 1-D params skip decay and trust ratio."""
  import torch
  mats = [p for p in params if p.ndim > 1]
  vecs = [p for p in params if p.ndim <= 1]
  bufs = {p: torch.zeros_like(p) for p in params}

  @torch.no_grad()
  def step():
    if mats:
      g = [p.grad for p in mats]
      torch._foreach_add_(g, mats, alpha=weight_decay)
      pn = torch._foreach_norm(mats)
      gn = torch._foreach_norm(g)
      ratios = [torch.where((a > 0) & (b > 0), trust * a / b, torch.ones_like(a)) for a, b in zip(pn, gn)]
      torch._foreach_mul_(g, ratios)
      m = [bufs[p] for p in mats]
      torch._foreach_mul_(m, momentum)
      torch._foreach_add_(m, g)
      torch._foreach_add_(mats, m, alpha=-lr)
    if vecs:
      m = [bufs[p] for p in vecs]
      torch._foreach_mul_(m, momentum)
      torch._foreach_add_(m, [p.grad for p in vecs])
      torch._foreach_add_(vecs, m, alpha=-lr)
  return step


def torch_part(args, batch: int) -> dict:
  try:
    import torch
    import torchvision
  except ImportError as e:
    return {"skipped": f"PyTorch/torchvision not installed ({e}); pip install torch torchvision"}
  from torch import nn
  import torch.nn.functional as F

  dev = "cuda" if torch.cuda.is_available() else "cpu"
  torch.backends.cudnn.benchmark = True
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  arch = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}[args.depth]
  # torchvision has no width multiplier of SimCLR's kind: the 1x network is timed (`torch_width`).
  enc = getattr(torchvision.models, arch)()
  dim = enc.fc.in_features
  enc.fc = nn.Identity()
  head = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(),
                       nn.Linear(dim, 128, bias=False), nn.BatchNorm1d(128, affine=True))
  net = nn.Sequential(enc, head).to(dev).to(memory_format=torch.channels_last)
  lars = _torch_lars(list(net.parameters()), lr=0.3 * batch / 256)
  amp = args.dtype == "bfloat16"

  def nt_xent(z, t=0.1):
    z = F.normalize(z.float(), dim=1)
    n2 = z.shape[0]
    logits = z @ z.T / t
    logits = logits - torch.eye(n2, device=z.device) * 1e9
    pos = torch.arange(n2, device=z.device) ^ 1   # views interleaved: a0, b0, a1, b1, ...
    return F.cross_entropy(logits, pos)

  def make_step(model):
    def step(x):
      with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=amp):
        z = model(x)
      loss = nt_xent(z)
      for p in net.parameters():
        p.grad = None
      loss.backward()
      lars()
      return loss
    return step

  x = torch.rand(2 * batch, 3, args.image_size, args.image_size, device=dev).contiguous(
      memory_format=torch.channels_last)

  def timed(step):
    t0 = time.perf_counter()
    for _ in range(3):
      loss = step(x)
    if dev == "cuda":
      torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
      loss = step(x)
    if dev == "cuda":
      torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"pairs_per_sec": batch * args.steps / dt, "step_ms": 1000 * dt / args.steps,
            "compile_s": warm, "loss_finite": bool(torch.isfinite(loss).item())}

  out = {"batch": batch, "torch_width": 1.0, "torch": torch.__version__, "torchvision": torchvision.__version__, "device": dev,
         "device_name": torch.cuda.get_device_name(0) if dev == "cuda" else platform.processor()}
  try:
    out["eager"] = timed(make_step(net))
    print(f"torch eager: {out['eager']['pairs_per_sec']:.0f} pairs/s", file=sys.stderr, flush=True)
  except Exception as e:  # noqa: BLE001 - reported in the table
    out["eager"] = {"error": str(e).splitlines()[0][:300]}
  if args.torch_compile == "auto":
    try:
      out["compiled"] = timed(make_step(torch.compile(net)))
      print(f"torch compiled: {out['compiled']['pairs_per_sec']:.0f} pairs/s", file=sys.stderr, flush=True)
    except Exception as e:  # noqa: BLE001 - torch.compile is optional; the table says why it is missing
      out["compiled"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
  return out


# ---- host pipeline ---------------------------------------------------------------------------------
def _image_source(folder: str):
  if os.path.isfile(os.path.join(folder, sources.COVID_METADATA)):
    table = sources.covid_cxr_manifest(folder, test_fraction=0.0)
    paths = [os.path.join(folder, p) for p in table["path"]]
  else:
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
  paths = [p for p in paths if os.path.isfile(p)]
  if not paths:
    raise SystemExit(f"error: --images={folder}: no JPEG/PNG files found")
  n = len(paths)
  return sources.Source(name="host_check", labels=np.full(n, -1, np.int64), case_ids=np.arange(n).astype(str),
                        image_ids=np.arange(n).astype(str), num_classes=1, paths=np.asarray(paths))


def host_part(args) -> dict:

  source = _image_source(args.images)
  rows = []
  cores = os.cpu_count() or 1
  modes = (False, True) if args.device_augment else (False,)
  for pipe, (aug_name, cfg_mod), on_device in [
      (p, a, d) for p in args.host_pipelines.split(",") for a in (("simclr", derm_simclr), ("chexpert", chexpert_simclr))
      for d in modes]:
    c = cfg_mod.get_config()
    with c.unlocked():
      c.aug.on_device = on_device  # True: crop, resize and rotation only; uint8 views
    # tf.data sets its own parallelism (AUTOTUNE over all cores): one row, counted as all cores.
    for workers in ([cores] if pipe == "tf" else sorted({1, min(cores, 16)})):
      numpy_pipeline._workers = lambda w=workers: w  # noqa: E731 - thread count under test
      if pipe == "tf":
        from input_pipeline import pipeline as tf_pipeline
      module = {"numpy": numpy_pipeline, "grain": grain_pipeline}.get(pipe) or tf_pipeline
      it = module.pretrain_iterator(source, data_cfg=_DataCfg(args.image_size, 3, workers), aug_cfg=c.aug,
                                    pairing="views", global_batch=args.host_batch, seed=0)
      # Warm-up: grain's workers each buffer up to 3 batches; those are drained before the clock starts,
      # so the timed batches are produced while timed (the steady rate, not a buffer being emptied).
      for _ in range(3 * workers + 1 if pipe == "grain" else 4 if pipe == "tf" else 1):  # tf: past its prefetch
        next(it)
      t0 = time.perf_counter()
      for _ in range(args.host_batches):
        next(it)
      dt = time.perf_counter() - t0
      # grain's close waits for its workers (up to 25 s each); off the clock and off the next row's path.
      threading.Thread(target=it.close, daemon=True).start()
      pairs = args.host_batch * args.host_batches / dt
      rows.append({"pipeline": "tf.data (AUTOTUNE)" if pipe == "tf" else pipe, "augmentation": aug_name + (" (host part of on_device)" if on_device else ""),
                   "workers": workers,
                   "pairs_per_sec": pairs, "pairs_per_sec_per_worker": pairs / workers})
      print(f"host {pipe} {aug_name} workers={workers}: {pairs:.0f} pairs/s", file=sys.stderr, flush=True)
      print(json.dumps({"rows": rows, "host_cores": cores}), flush=True)
  return {"rows": rows, "images": len(source), "host_cores": cores, "image_size": args.image_size}


# ---- end to end ------------------------------------------------------------------------------------
E2E_CONFIG = "configs/covid_cxr_micle.py:simclr"  # the manifest source, pairing 'views'


def write_manifest(images: str, csv_path: str) -> int:
  """A manifest CSV of every image of `images` (a covid_cxr_multi folder: its metadata, by patient; any
  other folder: its JPEG/PNG files), all in split 'train', absolute paths; returns the row count."""
  import pandas as pd
  if os.path.isfile(os.path.join(images, sources.COVID_METADATA)):
    table = sources.covid_cxr_manifest(images, test_fraction=0.0, out_csv=csv_path)
    return len(table)
  paths = [str(p) for p in _image_source(images).paths]
  pd.DataFrame({"path": [os.path.abspath(p) for p in paths], "case_id": [f"c{i}" for i in range(len(paths))],
                "label": "", "split": "train"}).to_csv(csv_path, index=False)
  return len(paths)


def e2e_commands(args, manifest: str, records: str) -> dict:
  """The prepare-data command and the two `throughput --end_to_end` commands (argv lists)."""
  py = [sys.executable, "-m", "medssl_jax"]
  data = [f"--config={E2E_CONFIG}", f"--config.data.path={manifest}", "--config.data.verify_images=False"]
  model = [f"--config.data.image_size={args.image_size}", "--config.data.channels=3",
           f"--config.model.depth={args.depth}", f"--config.model.width={args.width}", "--config.model.stem=imagenet",
           f"--config.model.dtype={args.dtype}", f"--config.train.batch_size={args.e2e_batch}",
           f"--config.data.pipeline={args.e2e_pipeline}", "--config.optim.warmup_steps=0",
           # SimCLR's augmentation (the settings' defaults), in place of the config's CheXpert-style one
           "--config.aug.crop_area_min=0.08", "--config.aug.color_strength=1.0", "--config.aug.grayscale_prob=0.2",
           "--config.aug.blur_prob=0.5", "--config.aug.rotation_degrees=0.0", "--config.aug.on_device=auto"]
  files_steps, records_steps = (int(x) for x in args.e2e_steps.split(","))
  run = py + ["throughput", "--end_to_end", "--input_batches=0"]
  return {"prepare": py + ["prepare-data", *data, f"--out={records}", "--splits=train",
                           f"--short_side={args.e2e_short_side}"],
          "files": run + [f"--steps={files_steps}", *data, *model],
          "records": run + [f"--steps={records_steps}", *data, *model, "--config.data.source=records",
                            f"--config.data.path={records}"]}


def e2e_part(args) -> dict:
  tmp = tempfile.mkdtemp(prefix="medssl-jax-e2e-")
  manifest, records = os.path.join(tmp, "manifest.csv"), os.path.join(tmp, "records")
  cmds = e2e_commands(args, manifest, records)
  out = {"commands": {k: shlex.join(v) for k, v in cmds.items()}, "rows": [], "images": args.images}
  if args.e2e_dry_run:
    return out
  out["num_images"] = write_manifest(args.images, manifest)
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "xla_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1")
  t0 = time.time()
  p = subprocess.run(cmds["prepare"], cwd=ROOT, env=env, capture_output=True, text=True)
  out["prepare_seconds"] = time.time() - t0
  if p.returncode:
    out["error"] = f"prepare-data exit {p.returncode}: {(p.stderr.strip().splitlines() or ['no output'])[-1][:300]}"
  for kind, label in (("files", "original files"), ("records", f"records, short side {args.e2e_short_side}")):
    if kind == "records" and p.returncode:
      break
    t0 = time.time()
    r = subprocess.run(cmds[kind], cwd=ROOT, env=env, capture_output=True, text=True)
    row = {"data": label, "wall_s": time.time() - t0}
    if r.returncode:
      row["error"] = f"exit {r.returncode}: {(r.stderr.strip().splitlines() or ['no output'])[-1][:300]}"
    else:
      e2e = json.loads(r.stdout[r.stdout.index("{"):])["end_to_end"]
      row.update({k: e2e[k] for k in ("pairs_per_sec", "step_only_pairs_per_sec", "of_step_rate", "input_wait_fraction",
                                      "second_half", "timed_steps", "host_pipeline", "aug_on_device", "batch_size")})
      print(f"end to end from {label}: {e2e['pairs_per_sec']:.0f} pairs/s, input wait "
            f"{100 * e2e['input_wait_fraction']:.0f}%", file=sys.stderr, flush=True)
    out["rows"].append(row)
    print(json.dumps(out), flush=True)
  return out


def e2e_table(e2e: dict) -> str:
  lines = ["| end to end (pretraining loop) | host pipeline | batch | loop pairs/s (2nd half) | step-only pairs/s | "
           "loop / step | input wait (2nd half) |", "| --- | --- | --- | --- | --- | --- | --- |"]
  for r in e2e.get("rows", []):
    if "error" in r:
      lines.append(f"| {r['data']} | failed: {r['error'][:80]} | | | | | |")
      continue
    half = r["second_half"]
    half_wait = "-" if half["input_wait_fraction"] is None else f"{100 * half['input_wait_fraction']:.0f}%"
    lines.append(f"| {r['data']} (aug.on_device {r['aug_on_device']}) | {r['host_pipeline']} | {r['batch_size']} | "
                 f"{r['pairs_per_sec']:.0f} ({half['pairs_per_sec']:.0f}) | {r['step_only_pairs_per_sec']:.0f} | "
                 f"{r['of_step_rate']:.2f} | {100 * r['input_wait_fraction']:.0f}% ({half_wait}) |")
  if "error" in e2e:
    lines.append(f"| end to end | failed: {e2e['error']} | | | | | |")
  return "\n".join(lines)


class _DataCfg:
  def __init__(self, image_size, channels, host_workers=0):
    self.image_size, self.channels, self.max_bag_size = image_size, channels, 6
    self.host_workers = host_workers


# ---- driver ----------------------------------------------------------------------------------------
def _run_part(args, part: str, extra=()) -> dict:
  cmd = [sys.executable, "-m", "benchmarks.accelerator_check", f"--part={part}"] + [
      a for a in sys.argv[1:] if not a.startswith("--part") and not a.startswith("--out")] + list(extra)
  t0 = time.time()
  try:
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.part_timeout)
  except subprocess.TimeoutExpired as e:
    # A part prints its result so far after every row: keep the rows that finished.
    out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    done = [l for l in out.splitlines() if l.startswith("{")]
    kept = json.loads(done[-1]) if done else {}
    kept["error"] = f"timed out after {args.part_timeout} s" + (" (the rows above finished)" if done else "")
    return kept
  sys.stderr.write(p.stderr[-2000:])
  lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
  if p.returncode or not lines:
    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {p.returncode}: {tail[:300]}"}
  out = json.loads(lines[-1])
  out["wall_s"] = time.time() - t0
  return out


def _gpu_info() -> str:
  try:
    return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=20).stdout.strip()
  except (OSError, subprocess.TimeoutExpired):
    return ""


def table(res: dict) -> str:
  a = res["args"]
  lines = [f"## Accelerator check: SimCLR ResNet-{a['depth']} {a['width']}x, {a['image_size']} px, {a['dtype']}",
           f"card: {res.get('gpu') or res['jax'].get('device', '?')}; jax {res['jax'].get('jax', '?')}; "
           f"torch {res['torch'].get('torch', 'n/a')}; host cores {res['host'].get('host_cores', '?')}",
           "", "| what | batch (pairs) | pairs/s | step ms | compile+warm-up s |", "| --- | --- | --- | --- | --- |"]
  for label, key in (("JAX (ours)", "rows"), ("JAX MoCo v2 (ours)", "moco_rows"), ("JAX {method} (ours)", "method_rows"),
                     ("JAX (ours), aug.on_device", "device_aug_rows")):
    for r in res["jax"].get(key, []):
      what = label.format(method=r.get("method", ""))
      if "error" in r:
        lines.append(f"| {what} | {r['batch']} | failed: {r['error'][:80]} | | |")
      else:
        lines.append(f"| {what} | {r['batch']} | {r['pairs_per_sec']:.0f} | {r['step_ms']:.1f} | "
                     f"{r['compile_s']:.1f} |")
  if "error" in res["jax"]:
    lines.append(f"| JAX (ours) | | failed: {res['jax']['error']} | | |")
  t = res["torch"]
  torch_best = 0.0
  for kind in ("eager", "compiled"):
    r = t.get(kind)
    if not r:
      continue
    if "error" in r:
      lines.append(f"| PyTorch {kind} | {t['batch']} | failed: {r['error'][:80]} | | |")
    else:
      torch_best = max(torch_best, r["pairs_per_sec"])
      lines.append(f"| PyTorch {kind} | {t['batch']} | {r['pairs_per_sec']:.0f} | {r['step_ms']:.1f} | {r['compile_s']:.1f} |")
  if "skipped" in t or "error" in t:
    lines.append(f"| PyTorch | | {t.get('skipped') or t.get('error')} | | |")
  jb = {r["batch"]: r["pairs_per_sec"] for r in res["jax"].get("rows", []) if "pairs_per_sec" in r}
  if torch_best and t.get("batch") in jb:
    lines.append("")
    lines.append(f"JAX / best PyTorch at batch {t['batch']}: {jb[t['batch']] / torch_best:.2f}x")
  return "\n".join(lines + ["", host_table(res["host"])] + (["", e2e_table(res["e2e"])] if "e2e" in res else []))


def host_table(host: dict) -> str:
  """The host part's table (also printed alone by --part=host --table)."""
  lines = ["| host pipeline | augmentation | workers (numpy: threads, grain: processes) | pairs/s | pairs/s per worker |",
           "| --- | --- | --- | --- | --- |"]
  for r in host.get("rows", []):
    lines.append(f"| {r['pipeline']} | {r['augmentation']} | {r['workers']} | {r['pairs_per_sec']:.1f} | "
                 f"{r['pairs_per_sec_per_worker']:.1f} |")
  if "error" in host:
    lines.append(f"| host | | | failed: {host['error']} | |")
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  if args.part != "all":
    part = {"jax": lambda: jax_part(args), "host": lambda: host_part(args), "e2e": lambda: e2e_part(args),
            "torch": lambda: torch_part(args, args.torch_batch)}[args.part]()
    print(json.dumps(part))
    if args.out:
      with open(args.out, "w") as f:
        json.dump({"args": vars(args), "python": sys.version.split()[0], args.part: part}, f, indent=2)
    return
  res = {"args": vars(args), "gpu": _gpu_info(), "python": sys.version.split()[0], "hostname": platform.node()}
  res["jax"] = _run_part(args, "jax")
  ran = [r["batch"] for r in res["jax"].get("rows", []) if "pairs_per_sec" in r]
  tb = args.torch_batch or (max(ran) if ran else int(args.batch_sizes.split(",")[0]))
  res["torch"] = _run_part(args, "torch", [f"--torch_batch={tb}"])
  res["host"] = _run_part(args, "host")
  if args.end_to_end:
    res["e2e"] = _run_part(args, "e2e")
  text = table(res)
  res["table"] = text
  if args.out:
    with open(args.out, "w") as f:
      json.dump(res, f, indent=2)
  print(text)


if __name__ == "__main__":
  main()
