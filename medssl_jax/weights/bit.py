"""The released BiT checkpoints (google-research/big_transfer, `BiT-M-R101x3.npz` and the like) -> our
BiT encoder (`model.arch='bit'`, models/bit.py) and, when the file has one, its classifier.

The file is a NumPy `.npz` of float arrays named by the TF/JAX model (read with `allow_pickle=False`):
  resnet/root_block/standardized_conv2d/kernel                  (7, 7, 3, 64k)     -> root_conv
  resnet/block{s}/unit{u:02d}/{a,b,c}/standardized_conv2d/kernel (h, w, in, out)   -> conv_{a,b,c}
  resnet/block{s}/unit{u:02d}/{a,b,c}/group_norm/{gamma,beta}                      -> gn_{a,b,c}
  resnet/block{s}/unit01/a/proj/standardized_conv2d/kernel                          -> proj
  resnet/group_norm/{gamma,beta}                                                    -> gn_final
  resnet/head/conv2d/{kernel (1, 1, 2048k, classes), bias}                          -> classifier
Kernels are already laid out as Flax's (height, width, in, out); the unit's 'a' norm is its
pre-activation (on the unit's input), 'b' and 'c' follow its first and second convolutions.
`--arch` names the model: `BiT-M-R50x1`, `BiT-S-R101x3`, or just `R152x4` (depth 50 / 101 / 152,
width 1 to 4); the file's shapes must be that model's. The weights expect [-1, 1] inputs
(`model.input_norm='inception'`, stored with the import).
"""
import os
import re

import jax
import numpy as np

from medssl_jax.errors import MissingFileError, UserError
from medssl_jax.models.bit import DEPTHS, BiT

ARCH = re.compile(r"^(?:BiT-[MS]-)?R(50|101|152)x([1-4])$")
PREFIX = "resnet/"
CONV = "standardized_conv2d/kernel"


def parse_arch(arch: str) -> tuple:
  """(depth, width) of a BiT model name."""
  m = ARCH.match(str(arch))
  if not m:
    raise UserError(f"--arch={arch!r}: expected a BiT model name such as BiT-M-R50x1, BiT-M-R101x3 or R152x4 "
                    f"(depth {'/'.join(map(str, sorted(DEPTHS)))}, width 1-4)")
  return int(m.group(1)), float(m.group(2))


def model_settings(arch: str) -> dict:
  depth, width = parse_arch(arch)
  return {"arch": "bit", "depth": depth, "width": width, "input_norm": "inception"}


def names(depth: int) -> dict:
  """{npz name: (our path in the encoder's params, ...)} for a BiT of `depth`."""
  out = {f"{PREFIX}root_block/{CONV}": ("root_conv", "kernel"),
         f"{PREFIX}group_norm/gamma": ("gn_final", "scale"), f"{PREFIX}group_norm/beta": ("gn_final", "bias")}
  for s, units in enumerate(DEPTHS[depth], start=1):
    for u in range(1, units + 1):
      unit, ours = f"{PREFIX}block{s}/unit{u:02d}/", f"block{s}_unit{u:02d}"
      for part in "abc":
        out[f"{unit}{part}/{CONV}"] = (ours, f"conv_{part}", "kernel")
        out[f"{unit}{part}/group_norm/gamma"] = (ours, f"gn_{part}", "scale")
        out[f"{unit}{part}/group_norm/beta"] = (ours, f"gn_{part}", "bias")
      if u == 1:
        out[f"{unit}a/proj/{CONV}"] = (ours, "proj", "kernel")
  return out


def _template(depth: int, width: float) -> dict:
  shapes = jax.eval_shape(lambda: BiT(depth=depth, width=width).init(jax.random.key(0), np.zeros((1, 32, 32, 3),
                                                                                                  np.float32)))
  return shapes["params"]


def from_arrays(arrays: dict, arch: str, where: str = "the file"):
  """(params {'encoder'[, 'classifier']}, batch_stats {'encoder'}, settings) of BiT's named arrays."""
  depth, width = parse_arch(arch)
  template, mapping = _template(depth, width), names(depth)
  missing = [k for k in mapping if k not in arrays]
  head = {f"{PREFIX}head/conv2d/kernel", f"{PREFIX}head/conv2d/bias"}
  unknown = sorted(k for k in arrays if k not in mapping and k not in head)
  if missing or unknown:
    other = [a for a in (f"R{d}x{w}" for d in DEPTHS for w in (1, 2, 3, 4)) if a != f"R{depth}x{int(width)}"]
    raise UserError(f"{where} is not a BiT R{depth}x{int(width)} checkpoint: "
                    + (f"{len(missing)} array(s) missing, e.g. {missing[:3]}" if missing else "")
                    + ("; " if missing and unknown else "")
                    + (f"{len(unknown)} unexpected, e.g. {unknown[:3]}" if unknown else "")
                    + f" (another depth? the BiT depths: {sorted(DEPTHS)}; e.g. --arch={other[0]})")
  encoder = {}
  for name, path in mapping.items():
    value = np.asarray(arrays[name], np.float32)
    want = template
    for p in path:
      want = want[p]
    if value.shape != tuple(want.shape):
      raise UserError(f"{where}: array '{name}' has shape {value.shape}, BiT R{depth}x{int(width)} needs "
                      f"{tuple(want.shape)} (another width? --arch=R{depth}x<width>)")
    node = encoder
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  params = {"encoder": encoder}
  if head <= set(arrays):
    kernel, bias = np.asarray(arrays[f"{PREFIX}head/conv2d/kernel"], np.float32), np.asarray(arrays[f"{PREFIX}head/conv2d/bias"], np.float32)
    if kernel.ndim != 4 or kernel.shape[:3] != (1, 1, template["gn_final"]["scale"].shape[0]) or bias.shape != kernel.shape[3:]:
      raise UserError(f"{where}: the head's kernel {kernel.shape} / bias {bias.shape} do not fit R{depth}x{int(width)}'s "
                      f"{template['gn_final']['scale'].shape[0]} features")
    params["classifier"] = {"kernel": kernel[0, 0], "bias": bias}
  return params, {"encoder": {"placeholder": np.zeros((), np.float32)}}, model_settings(arch)


def load(path: str, arch: str):
  parse_arch(arch)  # an unknown name is refused before the file is read
  if not os.path.isfile(path):
    raise MissingFileError(f"no BiT checkpoint at {path} (a .npz from google-research/big_transfer)")
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (ValueError, OSError) as e:
    raise UserError(f"{path} is not a readable .npz of arrays ({e}); BiT's releases are .npz files") from None
  return from_arrays(arrays, arch, where=path)
