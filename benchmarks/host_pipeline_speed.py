"""Host pipeline speed per core: pairs/s of the NumPy pair maker from image files (issue 27).

  python -m benchmarks.host_pipeline_speed --out=host_speed.json
  python -m benchmarks.host_pipeline_speed --out=host_speed.json --processes=2   # both cores, one process each

Times `numpy_pipeline.pair_maker` (the function every NumPy and grain worker runs per pair: read,
decode once, two views, stacked into batches) at `--image_size` with the SimCLR augmentation's host
part (`aug.on_device=True`: crop, resize and rotation on the host as uint8 views; colour, flip and blur
run in the train step), and with `--chexpert` also the CheXpert one (rotation 45 degrees), on:
  (a) the original image files of `--images` (default: the real chest X-rays of
      ../shared/data/covid_cxr_multi, see ../shared/data/PROVENANCE.md);
  (b) the same images re-encoded once at a `--short_side` px short side as JPEG quality `--quality`
      (grey files stay 1-channel), in a scratch folder.
Each process is pinned to one core and runs on one thread (OpenCV's too), so a row's pairs/s per
process is per core; `--processes=N` runs N such processes at once on N cores and adds their rates.
Prints a table and writes every number, the command, the CPU and the library versions to `--out`.
"pairs/s" is wall-clock; "per CPU-s" divides by the process's CPU time instead, the per-core rate
when other work shares the cores (one thread: CPU time is the time on its core).
"""
import argparse
import itertools
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time

import cv2
import numpy as np
import PIL
from PIL import Image

from configs import chexpert_simclr, derm_simclr
from input_pipeline import indexing, numpy_pipeline, sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_IMAGES = os.path.join(ROOT, "..", "shared", "data", "covid_cxr_multi")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="JSON result file.")
  p.add_argument("--images", default=DEFAULT_IMAGES, help="A covid_cxr_multi-style folder or any folder of JPEG/PNG.")
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--channels", type=int, default=3, help="data.channels of the views (grey files are tiled).")
  p.add_argument("--short_side", type=int, default=256, help="Short side of the re-encoded copies.")
  p.add_argument("--quality", type=int, default=95, help="JPEG quality of the re-encoded copies.")
  p.add_argument("--pairs", type=int, default=384, help="Timed pairs per row and process (after a warm-up batch).")
  p.add_argument("--batch", type=int, default=32, help="Pairs per stacked batch.")
  p.add_argument("--processes", type=int, default=1, help="Processes at once, each pinned to its own core.")
  p.add_argument("--chexpert", action="store_true", help="Also time the CheXpert augmentation's host part.")
  p.add_argument("--scratch", default="", help="Folder for the re-encoded copies (default: a temporary folder).")
  return p.parse_args(argv)


def _paths(folder: str) -> list:
  if os.path.isfile(os.path.join(folder, sources.COVID_METADATA)):
    table = sources.covid_cxr_manifest(folder, test_fraction=0.0)
    paths = [os.path.join(folder, p) for p in table["path"]]
  else:
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg", ".png")))
  paths = [p for p in paths if os.path.isfile(p)]
  if not paths:
    raise SystemExit(f"error: --images={folder}: no JPEG/PNG files found")
  return paths


def _source(name: str, paths: list):
  n = len(paths)
  return sources.Source(name=name, labels=np.full(n, -1, np.int64), case_ids=np.arange(n).astype(str),
                        image_ids=np.arange(n).astype(str), num_classes=1, paths=np.asarray(paths))


def reencode(paths: list, folder: str, short_side: int, quality: int) -> list:
  """Each image decoded once, resized (area filter) to `short_side` px on its short side (never enlarged)
  and written as JPEG `quality`; grey stays 1-channel. Returns the new paths, in order."""
  out = []
  for k, path in enumerate(paths):
    x = numpy_pipeline._decode(path)
    h, w = x.shape[:2]
    scale = short_side / min(h, w)
    if scale < 1:
      x = cv2.resize(x, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
      x = x.reshape(x.shape[0], x.shape[1], -1)
    target = os.path.join(folder, f"{k:05d}.jpg")
    Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).save(target, quality=quality)
    out.append(target)
  return out


class _DataCfg:
  def __init__(self, image_size, channels):
    self.image_size, self.channels, self.max_bag_size = image_size, channels, 1


def _aug(name: str):
  c = {"simclr": derm_simclr, "chexpert": chexpert_simclr}[name].get_config()
  with c.unlocked():
    c.aug.on_device = True  # the host part only: crop, resize, rotation; uint8 views
  return c.aug


def time_rows(args, images: dict, core: int, offset: int) -> list:
  """[(images, augmentation, pairs, wall seconds, CPU seconds)] of this process, on one core and one thread,
  starting at data seed `offset`."""
  if core >= 0 and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {core})
  rows = []
  augmentations = ["simclr"] + (["chexpert"] if args.chexpert else [])
  for (label, paths), aug_name in itertools.product(images.items(), augmentations):
    source = _source(label, paths)
    make = numpy_pipeline.pair_maker(source, _DataCfg(args.image_size, args.channels), _aug(aug_name), "views")
    table, sizes, case_index, _ = indexing.pretrain_units(source, "views", 1)
    stream = indexing.pair_stream(table, sizes, case_index, global_batch=1, seed=offset, start_step=0, process_index=0,
                                  process_count=1)
    batch = numpy_pipeline.stack_rows([make(next(stream)) for _ in range(args.batch)])  # warm-up
    assert batch["view_a"].dtype == np.uint8 and batch["view_a"].shape[1:] == (args.image_size,) * 2 + (args.channels,)
    n = -(-args.pairs // args.batch) * args.batch
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n // args.batch):
      numpy_pipeline.stack_rows([make(next(stream)) for _ in range(args.batch)])
    rows.append((label, aug_name, n, time.perf_counter() - t0, time.process_time() - c0))
  return rows


def _worker(job):
  args, images, core, offset = job
  return time_rows(args, images, core, offset)


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor()


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  paths = _paths(args.images)
  with tempfile.TemporaryDirectory() as tmp:
    folder = args.scratch or tmp
    os.makedirs(folder, exist_ok=True)
    t0 = time.perf_counter()
    small = reencode(paths, folder, args.short_side, args.quality)
    reencode_s = time.perf_counter() - t0
    size = lambda ps: sum(os.path.getsize(p) for p in ps)  # noqa: E731
    images = {"original files": paths, f"{args.short_side}-px JPEG q{args.quality}": small}
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if args.processes > len(cores):
      raise SystemExit(f"error: --processes={args.processes}: only {len(cores)} cores available")
    jobs = [(args, images, cores[i], 1000 * i) for i in range(args.processes)]
    if args.processes == 1:
      per_process = [_worker(jobs[0])]
    else:
      with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        per_process = pool.map(_worker, jobs)
    mb = {label: size(ps) / len(ps) / 1e6 for label, ps in images.items()}
  rows = []
  for k, (label, aug_name, *_) in enumerate(per_process[0]):
    rates = [r[k][2] / r[k][3] for r in per_process]
    cpu_rates = [r[k][2] / r[k][4] for r in per_process]
    rows.append({"images": label, "augmentation": f"{aug_name} (host part of aug.on_device)",
                 "image_size": args.image_size, "channels": args.channels, "processes": args.processes,
                 "pairs_per_sec": sum(rates), "pairs_per_sec_per_core": sum(rates) / len(rates),
                 "pairs_per_cpu_sec": sum(cpu_rates) / len(cpu_rates),
                 "ms_per_pair_per_core": 1e3 * len(rates) / sum(rates), "mean_file_mb": mb[label]})
  result = {"rows": rows, "images": len(paths), "folder": os.path.abspath(args.images), "reencode_s": reencode_s,
            "command": " ".join(["python -m benchmarks.host_pipeline_speed"] + argv), "cpu": _cpu_name(),
            "cores_available": len(cores), "load_average_1min": os.getloadavg()[0], "python": platform.python_version(),
            "versions": {"numpy": np.__version__, "opencv": cv2.__version__, "pillow": PIL.__version__},
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print(f"{len(paths)} images of {args.images}, {args.image_size} px, {args.channels} channels, "
        f"{args.processes} process(es) on {args.processes} core(s), {result['cpu']}, "
        f"load average {result['load_average_1min']:.1f} on {len(cores)} cores")
  print(f"{'images':<22} {'augmentation':<38} {'MB/file':>8} {'pairs/s':>9} {'per core':>9} {'per CPU-s':>10}")
  for r in rows:
    print(f"{r['images']:<22} {r['augmentation']:<38} {r['mean_file_mb']:>8.3f} {r['pairs_per_sec']:>9.1f} "
          f"{r['pairs_per_sec_per_core']:>9.1f} {r['pairs_per_cpu_sec']:>10.1f}")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
