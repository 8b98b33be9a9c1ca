"""Weights from and for other libraries: one file per format (`torchvision.py`), shared I/O here.

An imported checkpoint is a directory laid out as a run's workdir, so every mode reads it:

  DIR/config.json        the base config with the `model.*` settings the weights imply
                         (`model_settings` of the format) and `imported_weights` (format, arch, file)
  DIR/checkpoints/0/     Orbax checkpoint, items `params` and `batch_stats`, trunk under 'encoder'
                         (+ 'classifier' when the file has a classifier), as `Classifier` names them

`check_settings` refuses a run that loads such weights (`train.init_checkpoint`)
under other `model.*` settings than those stored with them (padding, input
normalisation, bottleneck width): the weights would load but compute something else.
Reading and writing `.pth` needs torch, `.safetensors` the safetensors package: both come with
`pip install medssl-jax[torch]`.
"""
import collections
import importlib
import json
import os

from etils import epath
import flax
import numpy as np

from medssl_jax import jsonio
from medssl_jax.errors import MissingFileError, UserError
from medssl_jax.models.contrastive import RESNET_DEFAULTS
from medssl_jax.settings import get_base_config
from medssl_jax.training import checkpoint as ckpt_lib
from medssl_jax.training import loop

EXTRA = "pip install medssl-jax[torch]"


def _need(module: str):
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise UserError(f"{module} is not installed ({e.name} missing); it comes with: {EXTRA}") from None


def load_tensors(path: str, training_checkpoint: bool = False) -> dict:
  """{name: NumPy array} of a `.pth` state_dict (torch) or a `.safetensors` file.

  A dict whose only entry is 'state_dict' or 'model' is unwrapped. With `training_checkpoint`, a
  training script's checkpoint ({'epoch', 'arch', 'state_dict', 'optimizer', ...}, as MoCo and
  SwAV save) gives its 'state_dict' entry whatever else it holds."""
  if not os.path.isfile(path):
    raise MissingFileError(f"no weights file at {path}")
  if path.endswith(".safetensors"):
    return dict(_need("safetensors.numpy").load_file(path))
  torch = _need("torch")
  obj = torch.load(path, map_location="cpu", weights_only=True)
  if training_checkpoint and isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
    obj = obj["state_dict"]
  for key in ("state_dict", "model"):  # a training script's {'state_dict': ...} wrapper
    if isinstance(obj, dict) and set(obj) == {key} and isinstance(obj[key], dict):
      obj = obj[key]
  if not isinstance(obj, dict):
    raise UserError(f"{path} holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
  out = {}
  for k, v in obj.items():
    if not torch.is_tensor(v):
      raise UserError(f"{path}: entry '{k}' is a {type(v).__name__}, not a tensor")
    v = v.detach().cpu()
    if v.is_floating_point() and v.dtype not in (torch.float32, torch.float64):
      v = v.float()  # half / bfloat16 -> float32, exactly
    out[k] = v.numpy()
  return out


def save_tensors(state_dict: dict, path: str, metadata: dict | None = None) -> None:
  """Writes {name: NumPy array} (atomically) as a `.pth` state_dict (torch.save) or `.safetensors` (+ str metadata)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if path.endswith(".safetensors"):
    save_file = _need("safetensors.numpy").save_file
    with jsonio.atomic_path(path) as tmp:  # a temporary name unique to this writer, then a rename
      save_file({k: np.array(v, order="C") for k, v in state_dict.items()}, str(tmp),
                metadata={k: str(v) for k, v in (metadata or {}).items()})
    return
  if not path.endswith(".pth") and not path.endswith(".pt"):
    raise UserError(f"--out={path}: expected a .pth (torch state_dict) or .safetensors file name")
  torch = _need("torch")
  with jsonio.atomic_path(path) as tmp:
    torch.save(collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in state_dict.items()), str(tmp))


def write_checkpoint(out_dir: str, params: dict, batch_stats: dict, model_settings: dict, info: dict,
                     data_settings: dict | None = None) -> str:
  """Writes `out_dir` as described in the module docstring; returns its checkpoints/ path.
  `data_settings`: `data.*` values the weights imply (a ViT's data.image_size)."""

  ckpt_dir = os.path.join(os.path.abspath(out_dir), "checkpoints")
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise UserError(f"--out={out_dir} already holds checkpoints; choose a new directory")

  @flax.struct.dataclass
  class Weights:
    step: int
    params: dict
    batch_stats: dict

  ck = ckpt_lib.Checkpointer(ckpt_dir, keep=1, async_save=False)
  ck.save(0, Weights(step=0, params=params, batch_stats=batch_stats))
  ck.close()
  config = get_base_config()
  for k, v in model_settings.items():
    setattr(config.model, k, v)
  config.data.channels = 3
  for k, v in (data_settings or {}).items():
    setattr(config.data, k, v)
  saved = json.loads(config.to_json_best_effort())
  saved["imported_weights"] = dict(info)
  loop.write_json(os.path.join(out_dir, "config.json"), saved)
  return ckpt_dir


def stored_config(path: str):
  """The config.json stored with the checkpoint at `path` (a workdir or its checkpoints/), or None
  (also when there is no checkpoint directory: the caller's restore says so)."""
  try:
    directory = ckpt_lib.checkpoint_dir(path).rstrip("/")
  except MissingFileError:
    return None
  workdir = directory[:-len("/checkpoints")] if directory.endswith("/checkpoints") else directory
  config = epath.Path(workdir) / "config.json"
  return json.loads(config.read_text()) if config.is_file() else None


def check_settings(path: str, model_cfg, where: str, data_cfg=None) -> None:
  """Refuses (one-line UserError) when the `model.*` port settings of this run differ from those
  stored with the weights at `path` (its config.json; one without the key had the default).
  A ViT's (model.arch='vit'): its variant and input_norm, and, given `data_cfg`, data.image_size
  (the position embeddings are made for one number of patches and are not interpolated)."""
  saved = stored_config(path)
  saved_arch, arch = (saved or {}).get("model", {}).get("arch", "resnet"), getattr(model_cfg, "arch", "resnet")
  if saved is not None and saved_arch != arch:
    raise UserError(f"{where}: its weights are a model.arch={saved_arch!r} encoder, this run builds "
                    f"model.arch={arch!r}: run with --config.model.arch={saved_arch} (and the settings in its config.json)")
  if saved is not None and arch == "vit":
    _check_vit_settings(saved, model_cfg, data_cfg, where)
    return
  if saved is not None and arch == "densenet":  # its one port setting: the input normalisation
    old, new = saved.get("model", {}).get("input_norm", "none"), getattr(model_cfg, "input_norm", "none")
    if old != new:
      raise UserError(f"{where}: its weights expect model.input_norm={old!r} (this run: {new!r}); "
                      f"run with --config.model.input_norm={old}")
    return
  if saved is None or getattr(model_cfg, "arch", "resnet") != "resnet":
    return
  saved_model = saved.get("model", {})
  diffs = []
  for key, default in RESNET_DEFAULTS.items():
    old, new = saved_model.get(key, default), getattr(model_cfg, key, default)
    if old != new:
      diffs.append(f"model.{key}={old!r} there, {new!r} here")
  if diffs:
    fix = " ".join(f"--config.model.{k}={saved_model.get(k, d)}" for k, d in RESNET_DEFAULTS.items())
    raise UserError(f"{where}: its weights were made under other model settings ({'; '.join(diffs)}); "
                    f"they would load but compute something else: run with {fix}")


def _check_vit_settings(saved: dict, model_cfg, data_cfg, where: str) -> None:
  saved_model, saved_data = saved.get("model", {}), saved.get("data", {})
  diffs = []
  for key, default in (("vit_variant", "S/16"), ("input_norm", "none")):
    old, new = saved_model.get(key, default), getattr(model_cfg, key, default)
    if old != new:
      diffs.append((f"model.{key}", old, new))
  if data_cfg is not None and "image_size" in saved_data and saved_data["image_size"] != data_cfg.image_size:
    diffs.append(("data.image_size", saved_data["image_size"], data_cfg.image_size))
  if diffs:
    said = "; ".join(f"{k}={old!r} there, {new!r} here" for k, old, new in diffs)
    fix = " ".join(f"--config.{k}={old}" for k, old, _ in diffs)
    why = ("a ViT's position embeddings are not interpolated to another image size" if diffs[-1][0] == "data.image_size"
           else "they would load but compute something else")
    raise UserError(f"{where}: its ViT weights were made under other settings ({said}); {why}: run with {fix}")
