"""Fine-tuning on chest X-rays (Azizi et al. 2021, Sec. 4.3 and App. A.2; CheXpert, multi-label).

Full scale: ResNet-50 (1x) at 224 px, 5 pathologies (atelectasis, cardiomegaly, consolidation,
edema, pleural effusion) with sigmoid cross-entropy, uncertain labels by `finetune.uncertain_policy`,
SGD momentum 0.9, batch 256, 30,000 steps, lr/weight decay from the Azizi grid. Augmentation
(App. A.2): rotation U(-20, 20) degrees, random crop to 224, left-right flip, additive
brightness U(-0.2, 0.2), contrast U(-0.2, 0.2) on the per-channel standard deviation, clip to
[0, 1]. Metric: mean AUC over the 5 labels (and per label), bootstrap 95% intervals.

Splits: the paper re-splits CheXpert's training set ("67,429 training images, 22,240
validation and 33,745 test images") because the official validation set has 234 images. Those
counts sum to 123,414, not to the 223,414 images of the training set they split; 167,429 does,
exactly, so "67,429" is read as a dropped leading 1. The fractions of the training set are
therefore 167,429 / 22,240 / 33,745 out of 223,414 (74.9% / 10.0% / 15.1%), drawn by patient
with a fixed seed (splits `resplit_train` / `resplit_val` / `resplit_test` of the chexpert
source; patient-disjoint, each within a patient's images of its fraction). The validation part
is what `medssl-jax select-best` selects on; the test part gives the reported metrics.

Variants:
- `:mococxr` / `:mococxr,fraction=F`: the MoCo-CXR fine-tuning protocol (Sowrirajan et al. 2021,
  Sec. 3.3): ResNet-18 (the paper's other backbone, DenseNet-121: add `--config.model.arch=densenet
  --config.model.depth=121`), the pleural-effusion task
  alone (one sigmoid output), rotation 10 degrees + flip only, Adam lr 3e-5, batch 16, epochs by
  label fraction: 220 / 95 / 41 / 18 at F = 0.001 / 0.01 / 0.1 / 1.0 (0.1% / 1% / 10% / 100%;
  plain `:mococxr` = 1.0). The variant sets finetune.label_fraction = F and train.num_steps =
  ceil(epochs x round(F x 167,429) / 16), 167,429 being the training part of the re-split above
  (the paper's "67,429" read as 167,429, see Splits): 2,297 / 9,940 / 42,904 / 188,358 steps.
  Another fraction is an error naming these four (the paper gives no rule between them; no
  interpolation). Choose the fraction in the variant: `--config.finetune.label_fraction=...` on the
  command line comes after the config is built and would leave num_steps at the variant's value.
  Other draws: `--config.finetune.fraction_seed=K`. Readings where the paper is silent: Adam (the
  CheXpert baseline's optimiser, Irvin et al. 2019, whose settings MoCo-CXR says it reuses)
  without weight decay at a constant learning rate; uncertain labels counted as positive
  (`finetune.uncertain_policy='ones'`: the paper's prevalence of pleural effusion counts images
  "labeled as positive or uncertain"); label fractions of the re-split training set (MoCo-CXR's
  are of the whole CheXpert training set).
- `:imagenet,weights=DIR[,arch=A]`: Azizi's supervised ImageNet baseline: fine-tuning from
  supervised ImageNet weights imported with `import-weights --format torchvision --arch A`
  (default resnet50) into DIR (`train.init_checkpoint=DIR`, torchvision's model settings; torchvision's
  ResNet-50 stands in for the paper's TF models, a reading); the paper's strongest supervised
  model, BiT-M ResNet-101x3 (Sec. 5.3), is `arch=BiT-M-R101x3` with weights imported by
  `import-weights --format bit` (model.arch='bit'). MoCo-CXR's ImageNet baseline is
  `:mococxr` with `--config.train.init_checkpoint=DIR` of an imported resnet18 and the settings
  import-weights prints.
- `:local`: PneumoniaMNIST (../shared/data, 28 px, 2 classes, multi-class) with the App. A.2 ops.
Readings: "random crop 224" as the fixed-size random crop (`aug.crop_mode='fixed'`): a square of
87.5% of the short side (224 of 256) at a uniformly random place, resized to the input size; a
non-square CheXpert image (e.g. 390 x 320) gives a 280 x 280 square anywhere inside it, what
resizing its short side to 256 and cropping 224 would take. (It was an Inception crop of exactly
0.875^2 of the area at aspect 1, which tf.data cannot draw on non-square or 28 px images, so it
silently used the whole image.) Evaluation: the App. A.2 text is silent; we take the SimCLR
code's centre crop of 87.5% of the short side, resized (`aug.eval_crop_fraction=0.875`), so
test images are seen at the training crops' scale; `:mococxr` trains without crops and
evaluates the whole image (1.0).
"""
import math
import os

from configs.base import finalize, get_base_config
from configs import presets

_SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")

# MoCo-CXR (Sowrirajan et al. 2021, Sec. 3.3): fine-tuning epochs for each label fraction.
MOCOCXR_EPOCHS = {0.001: 220, 0.01: 95, 0.1: 41, 1.0: 18}
MOCOCXR_BATCH = 16
MOCOCXR_TASK = "Pleural Effusion"
# Training images of the patient re-split of CheXpert's training set (Azizi et al. 2021, Sec. 4.1,
# "67,429" / 22,240 / 33,745 train / validation / test; 167,429 makes the three sum to the 223,414
# images of the set they split: see Splits above and input_pipeline/sources/tfds.py CHEXPERT_RESPLIT).
CHEXPERT_RESPLIT_TRAIN_IMAGES = 167_429


def mococxr_steps(fraction: float, train_images: int = CHEXPERT_RESPLIT_TRAIN_IMAGES) -> int:
  """Steps of MoCo-CXR fine-tuning at a label fraction: its epochs over the labelled images."""
  epochs = next((e for f, e in MOCOCXR_EPOCHS.items() if math.isclose(f, fraction, rel_tol=1e-9)), None)
  if epochs is None:
    supported = ", ".join(f"{f:g}" for f in MOCOCXR_EPOCHS)
    raise ValueError(f"chexpert_finetune:mococxr: label fraction {fraction:g} has no epoch count in MoCo-CXR; "
                     f"supported fractions: {supported}")
  return math.ceil(epochs * round(fraction * train_images) / MOCOCXR_BATCH)


def _mococxr_fraction(options: str) -> float:
  """'' -> 1.0; 'fraction=F' -> F."""
  if not options:
    return 1.0
  key, _, value = options.partition("=")
  try:
    if key != "fraction" or "," in value:
      raise ValueError
    return float(value)
  except ValueError:
    raise ValueError(f"chexpert_finetune: unknown variant option {options!r} (use 'mococxr,fraction=F', "
                     f"F one of {', '.join(f'{f:g}' for f in MOCOCXR_EPOCHS)})") from None


def get_config(variant: str = ""):
  c = get_base_config()
  c.mode = "finetune"
  c.data.source, c.data.tfds_name = "tfds", "chexpert"
  c.data.image_size, c.data.channels = 224, 3
  # Azizi et al.'s re-split of the official training set by patient (input_pipeline/sources/tfds.py,
  # CHEXPERT_RESPLIT); the official 234-image validation set is not used.
  c.data.train_split, c.finetune.val_split, c.data.eval_split = "resplit_train", "resplit_val", "resplit_test"
  c.model.depth, c.model.width, c.model.stem = 50, 1.0, "imagenet"
  c.model.dtype = "bfloat16"
  c.aug.crop, c.aug.crop_mode, c.aug.fixed_crop_fraction = True, "fixed", 0.875
  c.aug.eval_crop_fraction = 0.875
  c.aug.color_prob, c.aug.grayscale_prob, c.aug.blur_prob = 0.0, 0.0, 0.0
  c.aug.flip, c.aug.rotation_degrees = True, 20.0
  c.aug.additive_brightness, c.aug.std_contrast = 0.2, 0.2
  c.optim.name, c.optim.lr_scaling = "sgd", "none"
  c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_steps = 10 ** -2.0, 1e-4, 0
  c.train.batch_size, c.train.num_steps = 256, 30_000
  c.train.log_every, c.train.checkpoint_every = 100, 5000
  c.finetune.task, c.finetune.init, c.finetune.uncertain_policy = "multilabel", "pretrained", "ignore"
  name, _, options = variant.partition(",")
  if name == "mococxr":
    fraction = _mococxr_fraction(options)
    c.model.depth, c.model.width, c.model.stem = 18, 1.0, "imagenet"  # ResNet-18 (DenseNet-121: model.arch='densenet', depth 121)
    c.data.label_column = MOCOCXR_TASK  # one label: pleural effusion
    c.finetune.uncertain_policy = "ones"
    c.aug.rotation_degrees, c.aug.additive_brightness, c.aug.std_contrast = 10.0, 0.0, 0.0
    c.aug.crop, c.aug.eval_crop_fraction = False, 1.0
    c.optim.name, c.optim.base_lr, c.optim.weight_decay = "adam", 3e-5, 0.0
    c.optim.schedule = "constant"
    c.train.batch_size = MOCOCXR_BATCH
    c.finetune.label_fraction = fraction
    c.train.num_steps = mococxr_steps(fraction)
    c.eval.num_replicates = 500  # PROTOCOLS.md (MoCo-CXR Sec. 3.4): 500 bootstrap replicates, 95% intervals
  elif name == "imagenet":
    opts = presets.parse_options(options, "chexpert_finetune", ("weights", "arch"))
    presets.apply(c, presets.imagenet_settings(opts.get("arch", "resnet50")))
    c.finetune.init, c.train.init_checkpoint = "pretrained", opts["weights"]
  elif variant == "local":
    c.data.source = "npz"
    c.data.path = os.path.normpath(os.path.join(_SHARED, "pneumoniamnist.npz"))
    c.data.image_size, c.data.channels = 28, 1
    c.data.train_split, c.data.eval_split, c.finetune.val_split = "train", "test", "val"
    c.model.depth, c.model.width, c.model.stem, c.model.dtype = 18, 0.25, "small", "float32"
    c.finetune.task = "multiclass"
    c.finetune.init = "random"
    c.optim.base_lr = 0.05
    c.train.batch_size, c.train.num_steps = 128, 300
    c.train.log_every, c.train.checkpoint_every = 50, 300
  elif variant:
    raise ValueError(f"chexpert_finetune: unknown variant {variant!r} (use '', 'mococxr', "
                     f"'mococxr,fraction=F', 'imagenet,weights=DIR' or 'local')")
  return finalize(c)
