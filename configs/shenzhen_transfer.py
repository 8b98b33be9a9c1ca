"""MoCo-CXR's external transfer (Sowrirajan et al. 2021, Sec. 3.1, 3.3, 4.4): tuberculosis on the
Shenzhen chest X-ray set, from a CheXpert-pretrained encoder, at label fractions 6.25 / 25 / 100%.

What the paper states: Shenzhen (Jaeger et al. 2014) has 662 X-rays, 336 (50.8%) with
tuberculosis; images resized to 224 x 224; the fine-tuning settings of its CheXpert experiments
(Adam lr 3e-5, batch 16; configs/chexpert_finetune.py:mococxr); label fractions 6.25%, 25% and
100%, small fractions repeated on several random draws; a linear model on the frozen encoder
(`--config.mode=linear_eval`) and end-to-end fine-tuning (the default); AUC with bootstrap 95%
intervals; backbones ResNet-18 (default) and DenseNet-121 (`--config.model.arch=densenet
--config.model.depth=121`).

The data are described by a manifest CSV (`--config.data.path=shenzhen.csv`; columns path,
case_id, label, split; paths relative to the CSV's folder or `data.image_dir`): the set is not
in ../shared/data, and the paper gives no split. Readings where the paper is silent:
- the split is the user's manifest's (train / val / test; patient-disjoint, which the manifest
  reader checks; one image per patient in Shenzhen, so case_id can be the file name);
- label: 'label' column, 0 = normal, 1 = tuberculosis (or the strings, sorted into class ids);
  two-class softmax, AUC of the positive class;
- length: "epochs that scale with the size of labeled data" is all the paper says; its CheXpert
  table gives 220 epochs to its smallest labelled set (0.1% of CheXpert, about 220 images), the
  size closest to Shenzhen's (at most 662 images), so every fraction here trains 220 epochs over
  its labelled images (`finetune.num_epochs=220`: ceil(220 x labelled / 16) steps, counted when the
  run knows its labelled set);
- augmentation: MoCo-CXR's (rotation 10 degrees and horizontal flip, whole image resized, no
  crop), as in its CheXpert fine-tuning; constant learning rate, no weight decay.

  medssl-jax train --config=configs/shenzhen_transfer.py:fraction=0.0625 \\
      --config.data.path=/data/shenzhen/manifest.csv --config.train.init_checkpoint=<MoCo-CXR workdir> \\
      --config.finetune.fraction_seed=0 --workdir=runs/shenzhen_f0.0625_d0
"""
from configs.base import finalize, get_base_config

FRACTIONS = (0.0625, 0.25, 1.0)  # Sec. 3.3
EPOCHS = 220                     # reading: see the docstring
BATCH = 16
LR = 3e-5


def _fraction(variant: str) -> float:
  if not variant:
    return 1.0
  key, _, value = variant.partition("=")
  try:
    fraction = float(value)
  except ValueError:
    fraction = None
  if key != "fraction" or fraction is None or not any(abs(fraction - f) < 1e-12 for f in FRACTIONS):
    raise ValueError(f"shenzhen_transfer: variant {variant!r}: use 'fraction=F' with F one of "
                     f"{', '.join(f'{f:g}' for f in FRACTIONS)} (the paper's label fractions)")
  return fraction


def get_config(variant: str = ""):
  c = get_base_config()
  c.mode = "finetune"
  c.data.source = "manifest"
  c.data.path_column, c.data.case_column, c.data.label_column, c.data.split_column = (
      "path", "case_id", "label", "split")
  c.data.train_split, c.finetune.val_split, c.data.eval_split = "train", "val", "test"
  c.data.image_size, c.data.channels = 224, 3
  c.model.arch, c.model.depth, c.model.width, c.model.stem = "resnet", 18, 1.0, "imagenet"
  c.model.dtype = "float32"
  c.aug.crop, c.aug.eval_crop_fraction, c.aug.flip, c.aug.rotation_degrees = False, 1.0, True, 10.0
  c.aug.color_prob, c.aug.grayscale_prob, c.aug.blur_prob = 0.0, 0.0, 0.0
  c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.lr_scaling = "adam", LR, 0.0, "none"
  c.optim.schedule, c.optim.warmup_steps = "constant", 0
  c.train.batch_size = BATCH
  c.train.log_every, c.train.checkpoint_every = 20, 500
  c.finetune.task, c.finetune.init = "multiclass", "pretrained"
  c.finetune.label_fraction = _fraction(variant)
  c.finetune.num_epochs = float(EPOCHS)
  c.finetune.repeat_to_fill_batch = True
  c.eval.num_replicates = 500  # PROTOCOLS.md: AUC differences with 500 bootstrap replicates
  return finalize(c)
