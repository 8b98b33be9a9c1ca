"""timm state_dicts <-> this project's Flax weights: timm's ResNets and ViTs (pure NumPy, no torch).

ResNets: timm's `resnet18/34/50/101/152` and `wide_resnet50_2/101_2` (timm 1.0, `timm.models.resnet`)
have torchvision's tensor names and shapes and compute what torchvision's do (ResNet v1.5, stride on
the 3x3 convolution; stem convolution padded 3, max pool and stride-2 3x3 convolutions padded 1 on
each side; BN epsilon 1e-5), so their conversion is `weights/torchvision.py`'s and so are the
`model.*` settings (`downsample_padding='symmetric'`, `input_norm='imagenet'`: the ImageNet
mean/std of their default pretrained_cfg). timm's variants with other stems (resnet50d, ...) are
not these and are refused by name.

ViTs (`timm.models.vision_transformer.VisionTransformer` with the class token, `global_pool='token'`,
no `fc_norm`, no layer scale): `vit_small_patch16_224` (ViT-S/16), `vit_base_patch16_224` (B/16),
`vit_tiny_patch16_224` (Ti/16), `vit_small_patch8_224` (S/8), `vit_base_patch8_224` (B/8) are
`models/vit.py`'s `ViT` (LayerNorm epsilon 1e-6, exact erf GELU, one fused qkv projection with
bias ordered [q | k | v]) under `model.arch='vit'`, `model.vit_variant`. Names (models/vit.py's
docstring): `blocks.N.x.weight` -> `blocks_N/x/kernel` (Linear: transposed to (in, out)),
LayerNorm `weight` -> `scale`, `patch_embed.proj.weight` (dim, 3, p, p) -> (p, p, 3, dim),
`cls_token`, `pos_embed` as they are; timm's `head` (a classifier on the final-normed class token)
is the `Classifier`'s `classifier` Dense, and a file without one (num_classes=0) has no classifier.

The image size a ViT file was made for is read off its `pos_embed`, (1, 1 + g*g, dim): g x patch
pixels. It is stored with the checkpoint as `data.image_size` (224 for timm's weights) and a run at
another size is refused in one line (`weights.check_settings`): position embeddings are not
interpolated here (timm and DINO resample them bicubically; resample them with timm before
importing, e.g. `timm.layers.resample_abs_pos_embed`, to use another size).

Input normalisation the weights expect (`model.input_norm`, stored with the checkpoint): that of
each name's default pretrained tag in timm 1.0.31 (its `pretrained_cfg` mean/std): 'inception'
((x - 0.5) / 0.5) for the augreg ViTs, 'imagenet' for `vit_small_patch8_224` (its default tag is
DINO's) and the ResNets. Weights of another tag with other statistics need `model.input_norm` set
to theirs. The placeholder `batch_stats` scalar of a ViT encoder (models/vit.py) is written as 0 on
import and not exported. Conversion only transposes, so import(export(x)) == x bit for bit.
"""
import numpy as np

from medssl_jax.errors import UserError
from medssl_jax.models.vit import PRESETS
from medssl_jax.weights import torchvision as tv
from medssl_jax import weights
from medssl_jax.models.contrastive import RESNET_DEFAULTS
from medssl_jax.training import checkpoint as ckpt_lib

RESNETS = tuple(tv.ARCHS)
# timm name -> (models/vit.py variant, input_norm of its default pretrained tag in timm 1.0.31)
VITS = {"vit_tiny_patch16_224": ("Ti/16", "inception"), "vit_small_patch16_224": ("S/16", "inception"),
        "vit_base_patch16_224": ("B/16", "inception"), "vit_small_patch8_224": ("S/8", "imagenet"),
        "vit_base_patch8_224": ("B/8", "inception")}
ARCHS = RESNETS + tuple(VITS)
# Linear / LayerNorm modules of one block, timm name -> Flax path under blocks_N
_BLOCK_MODULES = (("norm1", ("norm1",), "ln"), ("attn.qkv", ("attn", "qkv"), "linear"),
                  ("attn.proj", ("attn", "proj"), "linear"), ("norm2", ("norm2",), "ln"),
                  ("mlp.fc1", ("mlp", "fc1"), "linear"), ("mlp.fc2", ("mlp", "fc2"), "linear"))


def _check_arch(arch: str, fmt: str = "timm") -> None:
  if arch not in ARCHS:
    raise UserError(f"--arch={arch!r} is not a {fmt} model this project converts; expected one of {list(ARCHS)}")


def model_settings(arch: str) -> dict:
  """The `model.*` config settings under which our encoder computes what timm's `arch` does."""
  _check_arch(arch)
  if arch in RESNETS:
    return tv.model_settings(arch)
  variant, norm = VITS[arch]
  return {"arch": "vit", "vit_variant": variant, "vit_tokens": 1, "input_norm": norm}


# ---- ViT ------------------------------------------------------------------------------------------

def vit_layout(variant: str, num_tokens: int, with_head: bool = False) -> list:
  """[(timm tensor name, Flax path under 'encoder', kind, torch shape)] of a ViT `variant` with
  `num_tokens` position embeddings, in timm's state_dict order; kind: 'raw', 'conv', 'linear', 'ln'."""
  s = PRESETS[variant]
  dim, p, mlp = s["dim"], s["patch_size"], s["mlp_dim"]
  out = [("cls_token", ("cls_token",), "raw", (1, 1, dim)), ("pos_embed", ("pos_embed",), "raw", (1, num_tokens, dim)),
         ("patch_embed.proj.weight", ("patch_embed", "proj", "kernel"), "conv", (dim, 3, p, p)),
         ("patch_embed.proj.bias", ("patch_embed", "proj", "bias"), "raw", (dim,))]
  shapes = {"norm1": (dim,), "attn.qkv": (3 * dim, dim), "attn.proj": (dim, dim), "norm2": (dim,),
            "mlp.fc1": (mlp, dim), "mlp.fc2": (dim, mlp)}
  for i in range(s["depth"]):
    for name, path, kind in _BLOCK_MODULES:
      t, f = f"blocks.{i}.{name}", (f"blocks_{i}",) + path
      if kind == "ln":
        out += [(f"{t}.weight", f + ("scale",), "raw", shapes[name]), (f"{t}.bias", f + ("bias",), "raw", shapes[name])]
      else:
        out += [(f"{t}.weight", f + ("kernel",), "linear", shapes[name]),
                (f"{t}.bias", f + ("bias",), "raw", (shapes[name][0],))]
  out += [("norm.weight", ("norm", "scale"), "raw", (dim,)), ("norm.bias", ("norm", "bias"), "raw", (dim,))]
  return out


def _grid(num_tokens: int):
  """g with 1 + g*g == num_tokens, or None."""
  g = int(round(max(num_tokens - 1, 0) ** 0.5))
  return g if g >= 1 and 1 + g * g == num_tokens else None


def vit_mismatch(state_dict: dict, variant: str, name: str, head: str | None = "head") -> str | None:
  """A sentence naming the first tensor of `state_dict` that does not fit ViT `variant`, or None.
  `head`: the classifier's tensor prefix ('head'; None: the format has no classifier)."""
  dim = PRESETS[variant]["dim"]
  pos = state_dict.get("pos_embed")
  if pos is not None:
    shape = tuple(np.shape(pos))
    if len(shape) != 3 or shape[0] != 1 or shape[2] != dim or _grid(shape[1]) is None:
      return (f"tensor 'pos_embed' has shape {shape} in the file but (1, 1 + g*g, {dim}) in {name} "
              f"(a square grid of g x g patches plus the class token)")
  num_tokens = tuple(np.shape(pos))[1] if pos is not None else 197
  want = vit_layout(variant, num_tokens)
  for t, _, _, shape in want:
    if t not in state_dict:
      return f"the file has no tensor '{t}' ({name} has it with shape {shape})"
    got = tuple(np.shape(state_dict[t]))
    if got != shape:
      return f"tensor '{t}' has shape {got} in the file but {shape} in {name}"
  names = {t for t, _, _, _ in want}
  if head:
    w, b = f"{head}.weight", f"{head}.bias"
    if (w in state_dict) != (b in state_dict):
      return f"the file has only one of '{w}' and '{b}'"
    if w in state_dict:
      ws, bs = tuple(np.shape(state_dict[w])), tuple(np.shape(state_dict[b]))
      if len(ws) != 2 or ws[1] != dim or bs != (ws[0],):
        return f"tensor '{w}' has shape {ws} (bias {bs}) in the file but (num_classes, {dim}) in {name}"
      names |= {w, b}
  extra = [k for k in state_dict if k not in names]
  if extra:
    return f"the file has tensor '{extra[0]}' (shape {tuple(np.shape(state_dict[extra[0]]))}), which {name} does not"
  return None


def vit_from_state_dict(state_dict: dict, variant: str, head: str | None = "head"):
  """(params, batch_stats) of our `Classifier` / encoder (models/vit.py names) from a checked ViT
  state_dict; 'classifier' from `head` when the file has one."""
  num_tokens = np.shape(state_dict["pos_embed"])[1]
  enc = {}
  for t, path, kind, _ in vit_layout(variant, num_tokens):
    v = np.asarray(state_dict[t])
    if kind == "conv":
      v = np.transpose(v, (2, 3, 1, 0))
    elif kind == "linear":
      v = v.T
    tv._set(enc, path, np.ascontiguousarray(v))
  params = {"encoder": enc}
  if head and f"{head}.weight" in state_dict:
    params["classifier"] = {"kernel": np.ascontiguousarray(np.asarray(state_dict[f"{head}.weight"]).T),
                            "bias": np.asarray(state_dict[f"{head}.bias"]).copy()}
  return params, {"encoder": {"placeholder": np.zeros((), np.float32)}}


def vit_image_size(params: dict) -> int:
  """The image side a ViT's position embeddings were made for (patch x grid)."""
  enc = params["encoder"]
  p = np.shape(enc["patch_embed"]["proj"]["kernel"])[0]
  return p * _grid(np.shape(enc["pos_embed"])[1])


def infer_vit_variant(params: dict) -> str:
  """The models/vit.py variant of a checkpoint's ViT encoder (patch size, width, depth)."""
  enc = params.get("encoder", {})
  k = np.shape(enc["patch_embed"]["proj"]["kernel"])
  depth = sum(1 for n in enc if n.startswith("blocks_"))
  mlp = np.shape(enc["blocks_0"]["mlp"]["fc1"]["kernel"])[1] if depth else 0
  for variant, s in PRESETS.items():
    if (s["patch_size"], s["dim"], s["depth"], s["mlp_dim"]) == (k[0], k[3], depth, mlp):
      return variant
  raise UserError(f"the checkpoint's ViT (patch {k[0]}, width {k[3]}, {depth} blocks) is not a variant of "
                  f"models/vit.py ({list(PRESETS)})")


def vit_to_state_dict(params: dict, variant: str, name: str, head: str | None = "head",
                      include_head: bool = True) -> dict:
  """ViT state_dict (timm's names and order) of our weights; `params['classifier']` becomes `head`."""
  enc = params.get("encoder", {})
  where = "the checkpoint's encoder"
  out = {}
  for t, path, kind, _ in vit_layout(variant, np.shape(tv._get(enc, ("pos_embed",), where))[1]):
    v = tv._get(enc, path, where)
    if kind == "conv":
      v = np.transpose(v, (3, 2, 0, 1))
    elif kind == "linear":
      v = v.T
    out[t] = np.ascontiguousarray(v)
  if head and include_head and "classifier" in params:
    out[f"{head}.weight"] = np.ascontiguousarray(np.asarray(params["classifier"]["kernel"]).T)
    out[f"{head}.bias"] = np.asarray(params["classifier"]["bias"]).copy()
  problem = vit_mismatch(out, variant, name, head)
  if problem:
    raise UserError(f"the checkpoint is not a {name}: {problem}")
  return out


# ---- the format ----------------------------------------------------------------------------------

def check_state_dict(state_dict: dict, arch: str) -> None:
  """Refuses (one-line UserError) a state_dict whose names or shapes are not timm's `arch`."""
  _check_arch(arch)
  if arch in RESNETS:
    problem = tv._mismatch(state_dict, arch)
    fits = [a for a in RESNETS if a != arch and tv._mismatch(state_dict, a) is None]
  else:
    problem = vit_mismatch(state_dict, VITS[arch][0], arch)
    fits = [a for a in VITS if a != arch and vit_mismatch(state_dict, VITS[a][0], a) is None]
  if problem:
    hint = f"; it fits --arch {fits[0]}" if fits else ""
    raise UserError(f"not a timm {arch} state_dict: {problem}{hint}")


def from_state_dict(state_dict: dict, arch: str):
  """(params, batch_stats) of our `Classifier` / encoder from a timm state_dict of NumPy arrays."""
  state_dict = {k: np.asarray(v) for k, v in state_dict.items()}
  check_state_dict(state_dict, arch)
  if arch in RESNETS:
    return tv.from_state_dict(state_dict, arch)
  return vit_from_state_dict(state_dict, VITS[arch][0])


def load(path: str, arch: str):
  """import-weights' loader: (params, batch_stats, model settings) of the timm file at `path`."""
  settings = model_settings(arch)  # refuses an unknown arch before reading the file
  params, batch_stats = from_state_dict(weights.load_tensors(path), arch)
  return params, batch_stats, settings


def data_settings(params: dict) -> dict:
  """`data.*` settings the imported weights imply: a ViT's image size (from its pos_embed)."""
  return {"image_size": int(vit_image_size(params))} if "patch_embed" in params.get("encoder", {}) else {}


def infer_arch(params: dict, input_norm: str = "") -> str:
  """timm's name of the checkpoint's encoder."""
  enc = params.get("encoder") if isinstance(params, dict) else None
  if isinstance(enc, dict) and "patch_embed" in enc:
    variant = infer_vit_variant(params)
    names = [a for a, (v, _) in VITS.items() if v == variant]
    if not names:
      raise UserError(f"the checkpoint's ViT-{variant} has no timm counterpart here; timm ViTs: {list(VITS)}")
    return names[0]
  return tv.infer_arch(params)


def to_state_dict(params: dict, batch_stats: dict, arch: str | None = None, include_fc: bool = True) -> dict:
  """timm state_dict (name -> NumPy array) of our weights; a ViT's classifier becomes `head`, a
  ResNet's `fc` (when `include_fc`). Without it the file loads strictly into the timm model made
  with `num_classes=0`."""
  arch = arch or infer_arch(params)
  _check_arch(arch)
  if arch in RESNETS:
    return tv.to_state_dict(params, batch_stats, arch, include_fc=include_fc)
  return vit_to_state_dict(params, VITS[arch][0], arch, include_head=include_fc)


def export(checkpoint: str, out: str, allow_padding_change: bool = False) -> dict:
  """export-weights --format timm: writes `out`; returns what export_weights reports."""
  config = weights.stored_config(checkpoint) or {}
  model = config.get("model", {})
  params, batch_stats, step = ckpt_lib.restore_weights(checkpoint)
  arch = infer_arch(params)
  input_norm = model.get("input_norm", "none")
  padding = model.get("downsample_padding", RESNET_DEFAULTS["downsample_padding"])
  if arch in RESNETS and padding != "symmetric" and not allow_padding_change:
    raise UserError(f"{checkpoint} was trained with model.downsample_padding={padding!r}; timm's ResNets pad "
                    f"'symmetric', so its outputs would differ; pass --allow_padding_change to export anyway")
  # A classifier behind a feature batch norm (linear evaluation), or on k > 1 ViT class tokens, is
  # not timm's head on the one class token / pooled features: left out.
  include_fc = ("classifier" in params and "norm" not in batch_stats
                and (arch in RESNETS or int(model.get("vit_tokens", 1)) == 1))
  state_dict = to_state_dict(params, batch_stats, arch, include_fc=include_fc)
  meta = {"format": "timm", "arch": arch, "input_norm": input_norm, "source": checkpoint, "step": step}
  if arch in RESNETS:
    meta["downsample_padding"] = padding
  else:
    meta["image_size"] = vit_image_size(params)
  weights.save_tensors(state_dict, out, metadata=meta)
  return {"arch": arch, "tensors": len(state_dict), "fc": include_fc, "input_norm": input_norm,
          "downsample_padding": padding if arch in RESNETS else "", "format": "timm",
          "dropped_classifier": "classifier" in params and not include_fc}
