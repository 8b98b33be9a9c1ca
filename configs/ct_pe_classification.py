"""Pulmonary embolism detection on CT (Hosseinzadeh Taher et al. 2021, task ECC on RSNA PE; App. A and
B): fine-tuning a classifier on 2-D CT images at 576 px.

What the paper states (../shared/PROTOCOLS.md, section 3): inputs resized to 576 x 576 for the CT
task; all layers fine-tuned from the pretrained ResNet-50; Adam (0.9, 0.999), lr 4e-4 for PE,
ReduceLROnPlateau, early stopping on 10% of train; classification augmentation "random cropping,
horizontal flipping, and rotating"; metric AUC.

RSNA PE is not in ../shared/data, and the paper gives no slice sampling or windowing: describe the
2-D images (e.g. windowed slices exported as PNG, one row each) by a CSV (`--config.data.path=pe.csv`;
columns path, case_id, label, split; `case_id` the study, so that no patient is in two splits,
which the manifest reader checks; `label` 1 = PE). A DICOM slice folder can be exported first with
`data.source='folder'` and `medssl-jax prepare-data`.

Readings where the paper is silent: batch 32; 30 epochs at most, validated every epoch on `val`
(the 10% hold-out, marked in the CSV), lr x0.1 after 5 validations without a better AUC, stop after
10; random crop of 80-100% of the area, horizontal flip, rotation U(-10, 10) degrees; AUC of the
positive class with 1,000 bootstrap replicates.

Variants: '' (576 px, ResNet-50 1x), 'small' (CPU: 128 px, ResNet-18 0.25x).

  medssl-jax train --config=configs/ct_pe_classification.py --config.data.path=/data/rsna_pe/pe.csv \\
      --config.train.init_checkpoint=<pretrained workdir> --workdir=runs/pe
"""
from configs.base import finalize, get_base_config

IMAGE_SIZE = 576  # App. B: CT inputs 576 x 576
LR = 4e-4         # App. B: lr 4e-4 for PE
SCALES = {"full": dict(image_size=IMAGE_SIZE, depth=50, width=1.0),
          "small": dict(image_size=128, depth=18, width=0.25)}


def get_config(variant: str = ""):
  scale = variant.strip() or "full"
  if scale not in SCALES:
    raise ValueError(f"ct_pe_classification: variant {variant!r}: use one of {sorted(SCALES)}")
  s = SCALES[scale]
  c = get_base_config()
  c.mode = "finetune"
  c.data.source = "manifest"
  c.data.path_column, c.data.case_column, c.data.label_column, c.data.split_column = (
      "path", "case_id", "label", "split")
  c.data.train_split, c.finetune.val_split, c.data.eval_split = "train", "val", "test"
  c.data.image_size, c.data.channels = s["image_size"], 3
  c.model.arch, c.model.depth, c.model.width, c.model.stem = "resnet", s["depth"], s["width"], "imagenet"
  c.aug.crop, c.aug.crop_area_min, c.aug.eval_crop_fraction = True, 0.8, 1.0
  c.aug.flip, c.aug.rotation_degrees = True, 10.0
  c.aug.color_prob, c.aug.grayscale_prob, c.aug.blur_prob = 0.0, 0.0, 0.0
  c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.lr_scaling = "adam", LR, 0.0, "none"
  c.optim.schedule, c.optim.warmup_steps = "constant", 0
  c.train.batch_size = 32
  c.train.log_every, c.train.checkpoint_every = 20, 500
  c.finetune.task, c.finetune.init = "multiclass", "pretrained"
  c.finetune.num_epochs, c.finetune.eval_every_epochs = 30.0, 1.0
  c.finetune.select_metric = "auc"
  c.finetune.plateau_factor, c.finetune.plateau_patience, c.finetune.early_stop_patience = 0.1, 5, 10
  c.finetune.repeat_to_fill_batch = True
  return finalize(c)
