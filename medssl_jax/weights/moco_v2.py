"""The official MoCo checkpoint layout (facebookresearch/moco, also MoCo-CXR) -> our ResNet + MoCo head.

`main_moco.py` saves `{'epoch', 'arch', 'state_dict', 'optimizer'}` where `state_dict` is the
`DistributedDataParallel(MoCo)` model's: `module.encoder_q.<torchvision name>` for the query
encoder (a torchvision `arch`: ResNet-50 for the released MoCo v1/v2 checkpoints, ResNet-18 among
MoCo-CXR's, which saves the same dict with the same names), `module.encoder_k.*` (the key
encoder), `module.queue` and `module.queue_ptr`. With `--mlp` (MoCo v2) the encoder's `fc` is
`Sequential(Linear(d, d), ReLU, Linear(d, dim))`: tensors `fc.0.*` and `fc.2.*`; without it
(MoCo v1) `fc` is one `Linear(d, dim)`. (Facts from facebookresearch/moco `moco/builder.py` and
`main_moco.py`; `main_lincls.py` reads the trunk the same way: `module.encoder_q.*` less `fc`.)

Import: the query encoder's trunk as a torchvision `arch` (`weights/torchvision.py`: same names,
same model settings: symmetric padding, ImageNet input normalisation, which MoCo's
`transforms.Normalize` uses too) and its MLP as our MoCo projection head
(`models/heads.py`, `batch_norm=False`): `fc.0` -> `head/dense_0`, `fc.2` -> `head/dense_1`
(MoCo v1's `fc` -> `head/dense_0` of a 1-layer head), kernels transposed, biases as they are;
`model.head_layers` / `model.head_dim` are stored with the checkpoint. The key encoder and the
queue are not imported: our MoCo (`methods/moco_v2.py`) builds its key encoder as a copy of the
query encoder and a fresh queue when a run starts from these weights (`train.init_checkpoint`),
which is how MoCo itself starts. Optimizer state is ignored.
"""

import numpy as np

from medssl_jax.errors import UserError
from medssl_jax.weights import torchvision as tv
from medssl_jax import weights

PREFIXES = ("module.encoder_q.", "encoder_q.")   # DDP-saved (every official file), or unwrapped
IGNORED = ("encoder_k.", "queue", "queue_ptr")    # after 'module.'


def load_pth(path: str) -> dict:
  """{name: NumPy array} of a torch training checkpoint: its 'state_dict' entry when it has one
  (main_moco.py's {'epoch', 'arch', 'state_dict', 'optimizer'}), else the file's dict itself."""
  return weights.load_tensors(path, training_checkpoint=True)


def model_settings(arch: str, head_layers: int = 2, head_dim: int = 128) -> dict:
  """The `model.*` settings of MoCo weights of torchvision's `arch` with an MLP of `head_layers`."""
  return dict(tv.model_settings(arch), head_layers=head_layers, head_dim=head_dim)


def split(state_dict: dict, where: str = "the file"):
  """(trunk {torchvision name: array}, head {'fc.*' name: array}) of the query encoder."""
  prefix = next((p for p in PREFIXES if any(k.startswith(p) for k in state_dict)), None)
  if prefix is None:
    first = next(iter(state_dict), None)
    raise UserError(f"{where} has no MoCo query encoder (no tensor named 'module.encoder_q.*'; the first is "
                    f"{first!r}): not the official MoCo layout (a plain torchvision file: --format torchvision)")
  trunk, head = {}, {}
  outer = prefix[:-len("encoder_q.")]
  for k, v in state_dict.items():
    if k.startswith(prefix):
      name = k[len(prefix):]
      (head if name == "fc" or name.startswith("fc.") else trunk)[name] = v
    elif not (k.startswith(outer) and k[len(outer):].startswith(IGNORED)):
      raise UserError(f"{where} has tensor '{k}' (shape {tuple(np.shape(v))}), which the MoCo layout does not "
                      f"(expected '{prefix}*', '{outer}encoder_k.*', '{outer}queue', '{outer}queue_ptr')")
  return trunk, head, prefix


def head_layers_of(head: dict, arch: str, prefix: str) -> tuple:
  """(number of Linear layers, output dim) of the `fc` MLP; refuses a layout that is not MoCo's."""
  d = tv.feature_dim(arch)
  if set(head) == {"fc.weight", "fc.bias"}:  # MoCo v1
    layers = [("fc", None)]
  elif set(head) == {"fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"}:  # MoCo v2 (--mlp)
    layers = [("fc.0", d), ("fc.2", None)]
  else:
    raise UserError(f"the query encoder's head has tensors {sorted(prefix + k for k in head)}; the MoCo layout has "
                    f"{prefix}fc.weight/bias (v1) or {prefix}fc.0.* and {prefix}fc.2.* (v2, --mlp)")
  in_dim = d
  for name, out in layers:
    w, b = np.shape(head[f"{name}.weight"]), np.shape(head[f"{name}.bias"])
    if len(w) != 2 or w[1] != in_dim or (out is not None and w[0] != out) or b != (w[0],):
      raise UserError(f"tensor '{prefix}{name}.weight' has shape {tuple(w)} (bias {tuple(b)}) in the file but "
                      f"({'head_dim' if out is None else out}, {in_dim}) in MoCo's {arch} head")
    in_dim = w[0]
  return len(layers), in_dim


def from_state_dict(state_dict: dict, arch: str, where: str = "the file"):
  """(params, batch_stats, settings): params {'encoder', 'head'}, batch_stats {'encoder'} and the
  `model.*` settings (with head_layers/head_dim) of a MoCo checkpoint's state_dict."""
  state_dict = {k: np.asarray(v) for k, v in state_dict.items()}
  trunk, head, prefix = split(state_dict, where)
  try:
    params, batch_stats = tv.from_state_dict(trunk, arch)
  except UserError as e:
    raise UserError(f"{where}, names under '{prefix}': {e}") from None
  n, out_dim = head_layers_of(head, arch, prefix)
  names = ["fc"] if n == 1 else ["fc.0", "fc.2"]
  params["head"] = {f"dense_{i}": {"kernel": np.ascontiguousarray(head[f"{t}.weight"].T), "bias": head[f"{t}.bias"].copy()}
                    for i, t in enumerate(names)}
  return params, batch_stats, model_settings(arch, n, out_dim)


def load(path: str, arch: str):
  """(params, batch_stats, settings) of the MoCo checkpoint file at `path`."""
  tv.model_settings(arch)  # refuses an unknown arch before reading the file
  return from_state_dict(load_pth(path), arch, where=path)
