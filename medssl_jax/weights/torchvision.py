"""torchvision ResNet state_dicts <-> this project's Flax ResNet weights (pure NumPy, no torch).

torchvision's `resnet18/34/50/101/152` and `wide_resnet50_2/101_2` (He et al. 2016, ResNet v1.5:
the stride of a bottleneck block on its 3x3 convolution, BN epsilon 1e-5, momentum 0.1 =
Flax's 0.9) are `models/resnet.py`'s `ResNet` with width 1, the 'imagenet' stem and three
settings (`model_settings`): `downsample_padding='symmetric'` (torchvision pads its stride-2
3x3 convolutions and its max pool by 1 on each side; Flax's SAME pads (0, 1) on even sizes),
`input_norm='imagenet'` (the weights expect (x - ImageNet mean) / std of [0, 1] images) and,
for the wide variants, `bottleneck_width=2` (inner width of a bottleneck block 2x, output
unchanged). Our width multiplier scales every layer (SimCLR's ResNet-50 (2x)), which no
torchvision model does, so only width 1 converts.

Names: torchvision's `conv1`/`bn1` are `stem_conv`/`stem_bn`; `layer{s}.{b}` is the Flax block
`BasicBlock_i` / `BottleneckBlock_i` counted over all stages; its `conv{j}`/`bn{j}` are
`Conv_{j-1}`/`BatchNorm_{j-1}` and `downsample.0/.1` are `proj_conv`/`proj_bn`; `fc` is the
`Classifier`'s `classifier` Dense. A convolution kernel is (out, in, kh, kw) in torch and
(kh, kw, in, out) in Flax; a Dense kernel is (out, in) in torch and (in, out) in Flax. BN
`weight`/`bias` are params `scale`/`bias`, `running_mean`/`running_var` are batch_stats
`mean`/`var`; `num_batches_tracked` is not used by either framework at a set momentum: it is
dropped on import and written as 0 on export. Conversion only transposes, so
import(export(x)) == x bit for bit.

DenseNet-121/169/201 (`densenet121` ...): `models/densenet.py` is torchvision's layout with
torchvision's names minus the `features.` prefix; its classifier is `classifier` (not `fc`). The
only setting they imply is `input_norm='imagenet'` (torchvision's DenseNet pads symmetrically
everywhere, as ours does).
"""
import numpy as np

from medssl_jax.errors import UserError
from medssl_jax.models import densenet as densenet_lib
from medssl_jax.models.resnet import STAGES

# torchvision name -> (depth, bottleneck_width)
ARCHS = {
    "resnet18": (18, 1.0), "resnet34": (34, 1.0), "resnet50": (50, 1.0), "resnet101": (101, 1.0),
    "resnet152": (152, 1.0), "wide_resnet50_2": (50, 2.0), "wide_resnet101_2": (101, 2.0),
}
DENSENETS = {"densenet121": 121, "densenet169": 169, "densenet201": 201}
ALL_ARCHS = tuple(ARCHS) + tuple(DENSENETS)
BN_PARAMS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def model_settings(arch: str) -> dict:
  """The `model.*` config settings under which our ResNet computes what torchvision's `arch` does."""
  if arch in DENSENETS:
    return {"arch": "densenet", "depth": DENSENETS[arch], "width": 1.0, "stem": "imagenet", "input_norm": "imagenet"}
  depth, bottleneck_width = _arch(arch)
  return {"arch": "resnet", "depth": depth, "width": 1.0, "stem": "imagenet", "downsample_padding": "symmetric",
          "bottleneck_width": bottleneck_width, "input_norm": "imagenet"}


def _arch(arch: str):
  if arch not in ARCHS:
    raise UserError(f"--arch={arch!r} is not a torchvision model this project has; expected one of {list(ALL_ARCHS)}")
  return ARCHS[arch]


def fc_name(arch: str) -> str:
  """The name of the classifier in torchvision's state_dict of `arch`."""
  return "classifier" if arch in DENSENETS else "fc"


def densenet_layout(arch: str) -> list:
  """`layout` of a torchvision DenseNet: its `features.*` modules in order."""
  out = [("features.conv0", ("conv0",), "conv", (64, 3, 7, 7)), ("features.norm0", ("norm0",), "bn", (64,))]
  blocks, growth, inner, channels = densenet_lib.BLOCKS[DENSENETS[arch]], 32, 4 * 32, 64
  for b, n in enumerate(blocks):
    for layer in range(n):
      c = channels + layer * growth
      t, f = f"features.denseblock{b + 1}.denselayer{layer + 1}", (f"denseblock{b + 1}", f"denselayer{layer + 1}")
      out += [(f"{t}.norm1", f + ("norm1",), "bn", (c,)), (f"{t}.conv1", f + ("conv1",), "conv", (inner, c, 1, 1)),
              (f"{t}.norm2", f + ("norm2",), "bn", (inner,)), (f"{t}.conv2", f + ("conv2",), "conv", (growth, inner, 3, 3))]
    channels += n * growth
    if b != len(blocks) - 1:
      t, f = f"features.transition{b + 1}", (f"transition{b + 1}",)
      out += [(f"{t}.norm", f + ("norm",), "bn", (channels,)),
              (f"{t}.conv", f + ("conv",), "conv", (channels // 2, channels, 1, 1))]
      channels //= 2
  return out + [("features.norm5", ("norm5",), "bn", (channels,))]


def layout(arch: str) -> list:
  """[(torch module name, Flax module path, 'conv' | 'bn', shape)] of `arch`'s trunk in torchvision's
  order; shape: a conv's torch kernel shape, a BN's number of channels."""
  if arch in DENSENETS:
    return densenet_layout(arch)
  depth, bottleneck_width = _arch(arch)
  kind, blocks = STAGES[depth]
  block = "BasicBlock" if kind == "basic" else "BottleneckBlock"
  out = [("conv1", ("stem_conv",), "conv", (64, 3, 7, 7)), ("bn1", ("stem_bn",), "bn", (64,))]
  inplanes, i = 64, 0
  for s, n in enumerate(blocks):
    planes = 64 * 2**s
    for b in range(n):
      stride = 2 if s > 0 and b == 0 else 1
      if kind == "basic":
        convs, planes_out = [(planes, inplanes, 3), (planes, planes, 3)], planes
      else:
        inner, planes_out = int(planes * bottleneck_width), planes * 4
        convs = [(inner, inplanes, 1), (inner, inner, 3), (planes_out, inner, 1)]
      t, f = f"layer{s + 1}.{b}", f"{block}_{i}"
      for j, (o, c, k) in enumerate(convs):
        out.append((f"{t}.conv{j + 1}", (f, f"Conv_{j}"), "conv", (o, c, k, k)))
        out.append((f"{t}.bn{j + 1}", (f, f"BatchNorm_{j}"), "bn", (o,)))
      if stride != 1 or inplanes != planes_out:
        out.append((f"{t}.downsample.0", (f, "proj_conv"), "conv", (planes_out, inplanes, 1, 1)))
        out.append((f"{t}.downsample.1", (f, "proj_bn"), "bn", (planes_out,)))
      inplanes, i = planes_out, i + 1
  return out


def feature_dim(arch: str) -> int:
  if arch in DENSENETS:
    return densenet_lib.feature_dim(DENSENETS[arch])
  depth, _ = _arch(arch)
  return 512 * (1 if STAGES[depth][0] == "basic" else 4)


def expected_shapes(arch: str) -> dict:
  """{torch tensor name: shape} of `arch`'s state_dict, `fc` left out (its size is the user's)."""
  shapes = {}
  for name, _, kind, shape in layout(arch):
    if kind == "conv":
      shapes[f"{name}.weight"] = shape
    else:
      for p in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{name}.{p}"] = shape
      shapes[f"{name}.num_batches_tracked"] = ()
  return shapes


def _mismatch(state_dict: dict, arch: str):
  """A sentence naming the first tensor of `state_dict` that does not fit `arch`, or None."""
  want = expected_shapes(arch)
  for name, shape in want.items():
    if name.endswith("num_batches_tracked") and name not in state_dict:
      continue
    if name not in state_dict:
      return f"the file has no tensor '{name}' ({arch} has it with shape {shape})"
    got = tuple(np.shape(state_dict[name]))
    if got != shape:
      return f"tensor '{name}' has shape {got} in the file but {shape} in {arch}"
  fc_in, fc = feature_dim(arch), fc_name(arch)
  if (f"{fc}.weight" in state_dict) != (f"{fc}.bias" in state_dict):
    return f"the file has only one of '{fc}.weight' and '{fc}.bias'"
  if f"{fc}.weight" in state_dict:
    w, b = np.shape(state_dict[f"{fc}.weight"]), np.shape(state_dict[f"{fc}.bias"])
    if len(w) != 2 or w[1] != fc_in or b != (w[0],):
      return (f"tensor '{fc}.weight' has shape {tuple(w)} (bias {tuple(b)}) in the file but (num_classes, {fc_in}) "
              f"in {arch}")
  extra = [k for k in state_dict if k not in want and k not in (f"{fc}.weight", f"{fc}.bias")]
  if extra:
    return f"the file has tensor '{extra[0]}' (shape {tuple(np.shape(state_dict[extra[0]]))}), which {arch} does not"
  return None


def check_state_dict(state_dict: dict, arch: str) -> None:
  """Refuses (one-line UserError) a state_dict whose names or shapes are not `arch`'s."""
  problem = _mismatch(state_dict, arch)
  if problem is None:
    return
  fits = [a for a in ALL_ARCHS if a != arch and _mismatch(state_dict, a) is None]
  hint = f"; it fits --arch {fits[0]}" if fits else ""
  raise UserError(f"not a torchvision {arch} state_dict: {problem}{hint}")


def _set(tree: dict, path: tuple, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: dict, path: tuple, where: str):
  for key in path:
    if not isinstance(tree, dict) or key not in tree:
      raise UserError(f"{where} has no '{'/'.join(path)}' (is it a ResNet of this architecture?)")
    tree = tree[key]
  return np.asarray(tree)


def from_state_dict(state_dict: dict, arch: str):
  """(params, batch_stats) of our `Classifier` / encoder from a torchvision state_dict of NumPy arrays.

  params = {'encoder': ..., 'classifier': {'kernel', 'bias'}} ('classifier' only when the file has
  `fc`), batch_stats = {'encoder': ...}; the arrays keep the file's dtype (torchvision: float32).
  """
  state_dict = {k: np.asarray(v) for k, v in state_dict.items()}
  check_state_dict(state_dict, arch)
  enc_p, enc_bs = {}, {}
  for name, path, kind, _ in layout(arch):
    if kind == "conv":
      _set(enc_p, path + ("kernel",), np.ascontiguousarray(np.transpose(state_dict[f"{name}.weight"], (2, 3, 1, 0))))
    else:
      for t, (col, leaf) in BN_PARAMS.items():
        _set(enc_p if col == "params" else enc_bs, path + (leaf,), state_dict[f"{name}.{t}"].copy())
  params, fc = {"encoder": enc_p}, fc_name(arch)
  if f"{fc}.weight" in state_dict:
    params["classifier"] = {"kernel": np.ascontiguousarray(state_dict[f"{fc}.weight"].T),
                            "bias": state_dict[f"{fc}.bias"].copy()}
  return params, {"encoder": enc_bs}


def infer_arch(params: dict) -> str:
  """The torchvision name of the ResNet whose weights are `params['encoder']`; UserError if none."""
  enc = params.get("encoder") if isinstance(params, dict) else None
  if isinstance(enc, dict) and "conv0" in enc and "denseblock3" in enc:  # a DenseNet: its third block's length
    n = sum(1 for k in enc["denseblock3"] if k.startswith("denselayer"))
    for arch, depth in DENSENETS.items():
      if densenet_lib.BLOCKS[depth][2] == n:
        return arch
    raise UserError(f"the checkpoint's DenseNet has {n} layers in its third block; torchvision has {list(DENSENETS)}")
  if not isinstance(enc, dict) or "stem_conv" not in enc:
    raise UserError("the checkpoint has no ResNet encoder ('encoder/stem_conv'); only ResNets export to torchvision")
  stem = tuple(np.shape(enc["stem_conv"]["kernel"]))
  if stem[:2] != (7, 7) or stem[3] != 64:
    raise UserError(f"the checkpoint's stem kernel is {stem}; torchvision has the 7x7 'imagenet' stem with 64 "
                    f"channels (model.stem='imagenet', model.width=1)")
  for kind in ("basic", "bottleneck"):
    n = sum(1 for k in enc if k.startswith("BasicBlock_" if kind == "basic" else "BottleneckBlock_"))
    for arch, (depth, bw) in ARCHS.items():
      if STAGES[depth][0] == kind and sum(STAGES[depth][1]) == n:
        if kind == "bottleneck" and np.shape(enc["BottleneckBlock_0"]["Conv_0"]["kernel"])[3] != int(64 * bw):
          continue
        return arch
  raise UserError("the checkpoint's encoder is not a ResNet depth/width torchvision has "
                  f"({sorted(ARCHS)})")


def to_state_dict(params: dict, batch_stats: dict, arch: str | None = None, include_fc: bool = True) -> dict:
  """torchvision state_dict (name -> NumPy array, torchvision's order) of our ResNet weights.

  `params`/`batch_stats` hold the trunk under 'encoder' (a pretraining, fine-tuning or imported
  checkpoint); a 'classifier' Dense becomes `fc` when `include_fc`. Without `fc` the dict loads
  strictly into a torchvision model whose `fc` is `torch.nn.Identity()` (it then returns the
  pooled features). Shapes are checked against `arch` (inferred when None).
  """
  arch = arch or infer_arch(params)
  enc_p, enc_bs = params.get("encoder", {}), batch_stats.get("encoder", {})
  where = "the checkpoint's encoder"
  out = {}
  for name, path, kind, _ in layout(arch):
    if kind == "conv":
      out[f"{name}.weight"] = np.ascontiguousarray(np.transpose(_get(enc_p, path + ("kernel",), where), (3, 2, 0, 1)))
    else:
      for t, (col, leaf) in BN_PARAMS.items():
        out[f"{name}.{t}"] = _get(enc_p if col == "params" else enc_bs, path + (leaf,), where).copy()
      out[f"{name}.num_batches_tracked"] = np.zeros((), np.int64)
  if include_fc and "classifier" in params:
    fc = fc_name(arch)
    out[f"{fc}.weight"] = np.ascontiguousarray(np.asarray(params["classifier"]["kernel"]).T)
    out[f"{fc}.bias"] = np.asarray(params["classifier"]["bias"]).copy()
  problem = _mismatch(out, arch)
  if problem:
    raise UserError(f"the checkpoint is not a torchvision {arch}: {problem}")
  return out
