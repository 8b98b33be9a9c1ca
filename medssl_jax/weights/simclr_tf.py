"""google-research/simclr TF1 checkpoints (SimCLR v1 and v2) -> our ResNet + SimCLR projection head.

Read with `tf.train.load_checkpoint` (a checkpoint prefix such as `.../r50_1x_sk0/model.ckpt-250228`,
or its directory). The variable names are those the repository's TF1 model code creates
(`resnet.py`, `model.py`, `model_util.py`; the same in the v1 code, first commit, and the v2 code):

* the trunk under `base_model/`, made with `tf.layers`, which numbers layers in the order they are
  created: `conv2d`, `conv2d_1`, ... and `batch_normalization`, `batch_normalization_1`, ...
  The stem is conv 0 / BN 0; each bottleneck block then creates, in this order, its projection
  shortcut (first block of a group only), then its 1x1, 3x3 and 1x1 convolutions, each followed by
  its BN. A conv is `<name>/kernel` (kh, kw, in, out: Flax's layout); a BN is `gamma`, `beta`,
  `moving_mean`, `moving_variance`.
* the projection head under `head_contrastive/nl_{j}/` (v2; v1 files have none, as the repository
  says): `dense/kernel` (in, out; no bias) and `batch_normalization/{gamma, beta, moving_*}`, the
  last layer without `beta` (`center=False`). That is our SimCLR head (`models/heads.py`) layer for
  layer: `head/dense_{j}` and `head/bn_{j}`; `model.head_layers` = the file's number of layers
  (v2 pretrained: 3), `model.head_dim` its output width.
* ignored: `head_supervised/*` (the linear-evaluation head), `global_step`, and optimizer or moving-
  average slots of the variables above (`<variable>/Momentum`, ...).

The architecture this implies (`model_settings`): ResNet v1 with the stride of a bottleneck block on
its 3x3 convolution (as ours), a width multiplier on every layer (`model.width` = the 1x/2x/3x/4x
of the checkpoint), BN epsilon 1e-5 and decay 0.9 (ours), the 7x7 stem padded 3 on each side
(ours). Two differences: `fixed_padding` pads a stride-2 convolution by (k - 1) // 2 on each side
and then convolves VALID, while the stem's max pool is TF's SAME (`model.downsample_padding=
'tf_fixed'`), and the images go in as [0, 1] RGB without normalisation (`model.input_norm='none'`).
ResNet-18/34 do not convert: the TF code gives the first block of every group a projection
shortcut, also where the shape does not change, which our ResNet has not; nor do the SimCLR v2
`_sk1` models (selective kernels, ResNet-D stem). The TF2 SavedModels (gs://simclr-checkpoints-tf2)
are not read: convert the TF1 checkpoints of the same models.
"""
import re

import numpy as np

from medssl_jax.errors import MissingFileError, UserError
from medssl_jax.models.resnet import STAGES

ARCH_RE = re.compile(r"^(?:resnet|r)(50|101|152)_([1-9][0-9]?)x(?:_sk([01]))?$")
BN = {"gamma": ("params", "scale"), "beta": ("params", "bias"), "moving_mean": ("batch_stats", "mean"),
      "moving_variance": ("batch_stats", "var")}


def parse_arch(arch: str):
  """(depth, width) of an --arch such as 'r50_1x_sk0' (SimCLR v2 names) or 'resnet50_4x' (v1)."""
  m = ARCH_RE.match(arch)
  if not m:
    raise UserError(f"--arch={arch!r}: expected a SimCLR name such as r50_1x_sk0, r152_3x_sk0 (v2) or resnet50_4x "
                    f"(v1): ResNet-50/101/152 with a width multiplier")
  if m.group(3) == "1":
    raise UserError(f"--arch={arch!r}: the SimCLR v2 _sk1 models (selective kernels, ResNet-D stem) are not an "
                    f"architecture this project has; use the _sk0 checkpoint of the same size")
  return int(m.group(1)), int(m.group(2))


def model_settings(arch: str, head_layers: int | None = None, head_dim: int | None = None) -> dict:
  depth, width = parse_arch(arch)
  s = {"arch": "resnet", "depth": depth, "width": float(width), "stem": "imagenet", "downsample_padding": "tf_fixed",
       "bottleneck_width": 1.0, "input_norm": "none"}
  if head_layers:
    s.update(head_layers=head_layers, head_dim=head_dim)
  return s


def _name(base: str, i: int) -> str:
  return base if i == 0 else f"{base}_{i}"


def layout(arch: str) -> list:
  """[(TF conv name, TF BN name, Flax module path of the conv, of the BN, kernel shape)] of the
  trunk in the TF code's creation order (names without 'base_model/')."""
  depth, width = parse_arch(arch)
  kind, blocks = STAGES[depth]
  if kind != "bottleneck":
    raise UserError(f"--arch={arch!r}: only bottleneck ResNets (50, 101, 152) convert")
  out, i = [], 0

  def add(shape, conv_path, bn_path):
    nonlocal i
    out.append((_name("conv2d", i), _name("batch_normalization", i), conv_path, bn_path, shape))
    i += 1

  base = 64 * width
  add((7, 7, 3, base), ("stem_conv",), ("stem_bn",))
  c, b_i = base, 0
  for s, n in enumerate(blocks):
    f = base * 2**s
    for b in range(n):
      blk = f"BottleneckBlock_{b_i}"
      if b == 0:
        add((1, 1, c, 4 * f), (blk, "proj_conv"), (blk, "proj_bn"))
      add((1, 1, c, f), (blk, "Conv_0"), (blk, "BatchNorm_0"))
      add((3, 3, f, f), (blk, "Conv_1"), (blk, "BatchNorm_1"))
      add((1, 1, f, 4 * f), (blk, "Conv_2"), (blk, "BatchNorm_2"))
      c, b_i = 4 * f, b_i + 1
  return out


def expected_shapes(arch: str) -> dict:
  """{TF variable name: shape} of the trunk (`base_model/...`)."""
  shapes = {}
  for conv, bn, _, _, shape in layout(arch):
    shapes[f"base_model/{conv}/kernel"] = shape
    for v in BN:
      shapes[f"base_model/{bn}/{v}"] = (shape[-1],)
  return shapes


def head_shapes(shapes: dict, feature_dim: int):
  """({TF name: shape} of the projection head the file has, number of layers, output width); the
  file's own head shapes decide its width, our head's structure decides the rest."""
  layers = sorted({int(m.group(1)) for k in shapes for m in [re.match(r"^head_contrastive/nl_(\d+)/", k)] if m})
  if not any(k.startswith("head_contrastive/") for k in shapes):
    return {}, 0, 0
  n = len(layers)
  if n == 0 or layers != list(range(n)):
    first = next(k for k in sorted(shapes) if k.startswith("head_contrastive/"))
    raise UserError(f"the file's projection head has '{first}' (shape {shapes[first]}); this project's SimCLR head "
                    f"is head_contrastive/nl_0 ... nl_(n-1) (proj_head_mode='nonlinear')")
  out_dim = shapes.get(f"head_contrastive/nl_{n - 1}/dense/kernel", (0, 0))[-1]
  want = {}
  for j in range(n):
    last = j == n - 1
    d_out = out_dim if last else feature_dim
    want[f"head_contrastive/nl_{j}/dense/kernel"] = (feature_dim, d_out)
    for v in BN:
      if not (last and v == "beta"):
        want[f"head_contrastive/nl_{j}/batch_normalization/{v}"] = (d_out,)
  return want, n, out_dim


def _is_slot(name: str, known) -> bool:
  return any(name.startswith(k + "/") for k in known)


def check(shapes: dict, arch: str):
  """Refuses (one-line UserError) a checkpoint whose trunk or head does not fit `arch`, naming the
  first differing variable and both shapes; returns (head shapes, head layers, head dim)."""
  want = expected_shapes(arch)
  depth, width = parse_arch(arch)
  head, n, out_dim = head_shapes(shapes, 2048 * width)
  want_all = {**want, **head}
  for name, shape in want_all.items():
    if name not in shapes:
      raise UserError(f"not a SimCLR {arch} checkpoint: it has no variable '{name}' ({arch} has it with shape {shape})"
                      f"{_hint(shapes, arch)}")
    if tuple(shapes[name]) != tuple(shape):
      raise UserError(f"not a SimCLR {arch} checkpoint: variable '{name}' has shape {tuple(shapes[name])} in the file "
                      f"but {tuple(shape)} in {arch}{_hint(shapes, arch)}")
  for name in sorted(shapes):
    if name.startswith(("base_model/", "head_contrastive/")) and name not in want_all and not _is_slot(name, want_all):
      raise UserError(f"not a SimCLR {arch} checkpoint: it has variable '{name}' (shape {tuple(shapes[name])}), which "
                      f"{arch} does not{_hint(shapes, arch)}")
  return head, n, out_dim


def _hint(shapes: dict, arch: str) -> str:
  stem = tuple(shapes.get("base_model/conv2d/kernel", ()))
  if len(stem) == 4 and stem[:2] == (3, 3):
    return " (a 3x3 stem: an _sk1 / ResNet-D model, which does not convert)"
  if len(stem) == 4 and stem[:3] == (7, 7, 3) and stem[3] % 64 == 0 and stem[3] // 64 != parse_arch(arch)[1]:
    return f" (its stem has {stem[3]} channels: width {stem[3] // 64}x)"
  return ""


def reader(path: str):
  """tf.train.load_checkpoint of a checkpoint prefix or of a directory (its latest checkpoint)."""
  import tensorflow as tf
  if tf.io.gfile.isdir(path):  # local or gs://
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise MissingFileError(f"{path} is a directory without a TF checkpoint (no 'checkpoint' file); pass the "
                             f"checkpoint prefix, e.g. {path}/model.ckpt-250228")
    path = latest
  elif not tf.io.gfile.exists(path + ".index"):
    raise MissingFileError(f"no TF checkpoint at {path} (expected {path}.index and its data files; pass the prefix "
                           f"without .index)")
  return tf.train.load_checkpoint(path), path


def from_reader(ckpt, arch: str):
  """(params, batch_stats, settings) from a `tf.train.load_checkpoint` reader (or anything with
  `get_variable_to_shape_map()` and `get_tensor(name)`)."""
  shapes = {k: tuple(v) for k, v in ckpt.get_variable_to_shape_map().items()}
  head, n, out_dim = check(shapes, arch)
  params, batch_stats = {"encoder": {}}, {"encoder": {}}

  def put(tree, path, value):
    for key in path[:-1]:
      tree = tree.setdefault(key, {})
    tree[path[-1]] = np.asarray(value)

  for conv, bn, conv_path, bn_path, _ in layout(arch):
    put(params["encoder"], conv_path + ("kernel",), ckpt.get_tensor(f"base_model/{conv}/kernel"))
    for v, (col, leaf) in BN.items():
      put((params if col == "params" else batch_stats)["encoder"], bn_path + (leaf,),
          ckpt.get_tensor(f"base_model/{bn}/{v}"))
  if n:
    params["head"], batch_stats["head"] = {}, {}
    for j in range(n):
      put(params["head"], (f"dense_{j}", "kernel"), ckpt.get_tensor(f"head_contrastive/nl_{j}/dense/kernel"))
      for v, (col, leaf) in BN.items():
        name = f"head_contrastive/nl_{j}/batch_normalization/{v}"
        if name in head:
          put((params if col == "params" else batch_stats)["head"], (f"bn_{j}", leaf), ckpt.get_tensor(name))
  return params, batch_stats, model_settings(arch, n, out_dim)


def digest_file(path: str) -> str:
  """The file whose SHA-256 identifies the checkpoint at `path`: its `.index`, which holds a
  CRC32C of every tensor's bytes (hashing the data files would read gigabytes)."""
  return reader(path)[1] + ".index"


def load(path: str, arch: str):
  parse_arch(arch)  # refuses an unknown arch before reading the file
  ckpt, _ = reader(path)
  return from_reader(ckpt, arch)
