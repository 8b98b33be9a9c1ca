"""MICLe on real chest X-rays with several images per patient (../shared/data/covid_cxr_multi).

128 patients (127 after merging ids 285 and 339, which PROVENANCE.md shows to be one patient)
with 2-8 frontal X-rays each: real bags. Images are JPEG/PNG of varying size and bit depth; the
manifest source reads the folder directly (metadata_subset.csv, grouped by patientid).
CPU-sized: ResNet-18 (0.25x) at 64 px, batch 32 patients, grey -> 1 channel, the CheXpert
pretraining augmentation (crop, jitter 0.5, rotation up to 45 degrees, flip, no blur).
Start from a SimCLR checkpoint with --config.train.init_checkpoint=WORKDIR (Azizi et al.:
MICLe is initialised from SimCLR), or from scratch.

Optimiser as the paper's MICLe (Sec. 4.2): LARS base lr 0.1 under the linear rule (0.0125 at the
peak at batch 32), weight decay and warm-up steps of the SimCLR run it continues
(configs/chexpert_simclr.py:local: 50 steps).

  medssl-jax train --config=configs/covid_cxr_micle.py --workdir=workdirs/cxr_micle
"""
import os

from configs import chexpert_simclr
from configs.base import finalize, get_base_config

_SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def get_config(variant: str = ""):
  c = get_base_config()
  c.method, c.pairing = "simclr", "case"   # MICLe = SimCLR on pairs from two images of a case
  c.data.source = "manifest"
  c.data.path = os.path.normpath(os.path.join(_SHARED, "covid_cxr_multi"))
  c.data.image_size, c.data.channels = 64, 1
  c.data.max_bag_size = 8
  c.model.depth, c.model.width, c.model.stem = 18, 0.25, "small"
  c.model.head_layers, c.model.head_dim = 2, 128   # = chexpert_simclr:local, to start from it
  c.aug.crop_area_min = 0.2
  c.aug.color_strength, c.aug.color_prob, c.aug.grayscale_prob = 0.5, 0.8, 0.0
  c.aug.blur_prob, c.aug.flip, c.aug.rotation_degrees = 0.0, True, 45.0
  c.optim.name, c.optim.base_lr, c.optim.lr_scaling = "lars", 0.1, "linear"
  c.optim.weight_decay, c.optim.warmup_steps = 1e-6, chexpert_simclr.LOCAL_WARMUP_STEPS  # = SimCLR's
  c.train.batch_size, c.train.num_steps, c.simclr.temperature = 32, 300, 0.1
  c.train.log_every, c.train.checkpoint_every = 25, 100
  if variant == "simclr":  # the same data and settings, SimCLR pairs (Study B's control arm)
    c.pairing = "views"
  elif variant:
    raise ValueError(f"covid_cxr_micle: unknown variant {variant!r} (use '' or 'simclr')")
  return finalize(c)
