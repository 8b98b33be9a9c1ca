"""What the weight-port tests share: test images, the closeness measure, and reference models
made non-trivial (random batch-norm statistics, norm scales and biases, so every tensor of a port
matters). Torch is imported by the functions that need it, so test_simclr_tf.py (TensorFlow, no
torch) can use the rest."""
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def images(n=2, size=32, seed=0):
  """[0, 1] float32 NHWC images."""
  return np.random.RandomState(seed).rand(n, size, size, 3).astype(np.float32)


def rel_err(ours, ref) -> float:
  """max |ours - ref| relative to the output scale max |ref|."""
  return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def numpy_state_dict(model) -> dict:
  return {k: v.numpy() for k, v in model.state_dict().items()}


def randomize_norms(model):
  """In place, in eval mode: random BN running statistics, norm scales/offsets and Linear biases."""
  import torch
  model.eval()
  with torch.no_grad():
    for mod in model.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        mod.running_mean.uniform_(-0.5, 0.5)
        mod.running_var.uniform_(0.5, 2.0)
        mod.weight.uniform_(0.5, 1.5)
        mod.bias.uniform_(-0.2, 0.2)
      elif isinstance(mod, torch.nn.LayerNorm):
        mod.weight.uniform_(0.5, 1.5)
        mod.bias.uniform_(-0.2, 0.2)
      elif isinstance(mod, torch.nn.Linear) and mod.bias is not None:
        mod.bias.uniform_(-0.1, 0.1)
  return model


# ---- torchvision ResNets (test_torchvision and the tests that start from its models) ------------

PORT_KEYS = ("bottleneck_width", "downsample_padding", "input_norm")  # model.* settings a port fixes


def torchvision_model(arch, num_classes=10, seed=0):
  """A torchvision model, random weights and random norms (randomize_norms), eval mode."""
  import torch
  import torchvision
  torch.manual_seed(seed)
  return randomize_norms(getattr(torchvision.models, arch)(num_classes=num_classes))


def port_images(n=2, size=64, seed=0):
  return images(n, size, seed)


def torch_outputs(model, x, head: str = "fc"):
  """(pooled features, logits) of a torchvision model on [0, 1] NHWC images; features = the input
  of its classifier module `head` ('fc' for ResNets, 'classifier' for DenseNets)."""
  import torch
  xt = torch.from_numpy(((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    logits = model(xt).numpy()
    kept = getattr(model, head)
    setattr(model, head, torch.nn.Identity())
    feats = model(xt).numpy()
    setattr(model, head, kept)
  return feats, logits


def torchvision_run_config(mode, out, steps=1):
  """A tiny run of torchvision's ResNet-18 layout (full width: what the file holds) on 16 px images."""
  from medssl_jax.weights import torchvision as tv
  from tests.helpers import tiny_config
  c = tiny_config(batch_size=8, image_size=16, depth=18, width=1.0, steps=steps)
  c.mode = mode
  c.model.stem = "imagenet"
  for k, v in tv.model_settings("resnet18").items():
    setattr(c.model, k, v)
  c.data.source = "synthetic"
  c.data.synthetic.num_cases = 16
  c.data.synthetic.image_size = 16
  c.aug.blur_prob = 0.0
  c.train.log_every = c.train.checkpoint_every = 1
  c.train.prefetch = 1
  c.optim.warmup_steps = 0
  c.finetune.init, c.train.init_checkpoint, c.finetune.val_split, c.eval.num_replicates = "pretrained", out, "", 20
  c.optim.name, c.optim.lr_scaling, c.optim.base_lr = "sgd", "none", 0.01
  return c


# ---- timm ------------------------------------------------------------------------------------------

TIMM_SIZE = 32  # ViTs at img_size=32: 4 patches + class token


def timm_model(name, num_classes=10, seed=0, **kw):
  """A timm model, random weights and random norms, eval mode (ViTs at TIMM_SIZE px)."""
  import timm
  import torch
  torch.manual_seed(seed)
  if name.startswith("vit"):
    kw.setdefault("img_size", TIMM_SIZE)
  return randomize_norms(timm.create_model(name, pretrained=False, num_classes=num_classes, **kw))


# ---- official MoCo checkpoints (facebookresearch/moco's main_moco.py layout) -----------------------

def moco_query_encoder(seed=0, mlp=True):
  """A torchvision resnet18 whose fc is MoCo v2's MLP: (pooled features, projections)."""
  import torch
  m = torchvision_model("resnet18", num_classes=128, seed=seed)
  if mlp:
    torch.manual_seed(seed + 100)
    m.fc = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), m.fc).eval()
  return m


def write_moco_file(path, encoder_q, queue_size=16):
  """Writes `encoder_q` (+ a key encoder and a queue) as main_moco.py's checkpoint."""
  import torch
  encoder_k = moco_query_encoder(seed=7, mlp=isinstance(encoder_q.fc, torch.nn.Sequential))
  sd = {}
  sd.update({f"module.encoder_q.{k}": v for k, v in encoder_q.state_dict().items()})
  sd.update({f"module.encoder_k.{k}": v for k, v in encoder_k.state_dict().items()})
  sd["module.queue"] = torch.nn.functional.normalize(torch.randn(128, queue_size), dim=0)
  sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
  opt = torch.optim.SGD(encoder_q.parameters(), lr=0.03, momentum=0.9)
  torch.save({"epoch": 200, "arch": "resnet18", "state_dict": sd, "optimizer": opt.state_dict()}, str(path))
  return sd


def import_moco(root):
  """An official-layout MoCo v2 checkpoint written under `root` and imported with --format moco_v2:
  (the torch query encoder, its state dict, the imported dir, root)."""
  from medssl_jax.commands import common, import_weights as import_lib
  ref = moco_query_encoder(seed=1)
  sd = write_moco_file(root / "checkpoint_0199.pth.tar", ref)
  out = str(root / "imported")
  assert common.call(import_lib.cli, ["medssl-jax import-weights", "--format", "moco_v2", "--arch", "resnet18",
                                      "--in", str(root / "checkpoint_0199.pth.tar"), "--out", out]) == 0
  return ref, sd, out, root
