"""DVME (Truong et al. 2021, Sec. 5.6, App. C, E): a head fusing cached features of several frozen
encoders, trained with the paper's protocol (medssl_jax/runs/dvme.py; PROTOCOLS.md section 2).

Adam lr 1e-3, batch 64, ReduceLROnPlateau (factor 0.1, patience 5) and early stopping (patience 10)
on the validation loss, at most 50 epochs (the paper: 30-50), best-on-validation weights tested.
Head: per-source Dense to 512, a ViT block over one 512-d token per source, LayerNorm, Dense 512 +
ReLU, dropout 0.2, Dense to the classes (models/dvme.py says which readings it takes).

First cache each encoder's features of the three splits (same data config for all):

  for s in train val test; do
    medssl-jax features --config=configs/chexpert_finetune.py:local --checkpoint=runs/simclr \\
        --split=$s --out=feats/simclr_$s.npz
    medssl-jax features --config=configs/chexpert_finetune.py:local --checkpoint=runs/moco \\
        --split=$s --out=feats/moco_$s.npz
  done
  medssl-jax train --config=configs/truong_dvme.py --workdir=runs/dvme \\
      --config.dvme.features='simclr=feats/simclr_{split}.npz,moco=feats/moco_{split}.npz'

Data regimes (Sec. 4, Table 1): Small / Medium / Full training sets, class-balanced, 5 folds
(random draws): `--config.finetune.train_size=N --config.finetune.fold=K` with N from TRAIN_SIZES below
(0 = Full, the whole training split), K = 0..4; report the mean and spread over the folds.

Variants: `:concat` is the paper's ablation without self-attention; `:multilabel` for multi-label
features (e.g. NIH, CheXpert; sigmoid per label, uncertain labels by finetune.uncertain_policy).
"""
from configs.base import finalize, get_base_config

# Truong et al. Table 1: training images of the Small / Medium / Full regimes.
TRAIN_SIZES = {"patchcamelyon": (500, 5_000, 50_000), "aptos": (50, 500, 3_662),
               "pneumonia_cxr": (50, 500, 5_216), "nih_cxr": (20, 200, 2_414)}
NUM_FOLDS = 5


def get_config(variant: str = ""):
  c = get_base_config()
  c.mode = "dvme"
  c.data.train_split, c.finetune.val_split, c.data.eval_split = "train", "val", "test"
  c.finetune.task = "multiclass"
  if variant == "concat":
    c.dvme.attention = False
  elif variant == "multilabel":
    c.finetune.task = "multilabel"
  elif variant:
    raise ValueError(f"truong_dvme: unknown variant {variant!r} (use '', 'concat' or 'multilabel')")
  return finalize(c)
