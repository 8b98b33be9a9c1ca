"""Every key a medssl-jax run understands, with its default: the library's settings schema.

Each config file under `configs/` starts from `get_base_config()` (re-exported by
`configs/base.py`) and changes only what differs; the result is locked, so a misspelt
`--config.key=value` on the command line is an error that names the key instead of being
silently ignored. The library reads its defaults from here, never from `configs/`.
"""
import ml_collections

# The settings block of each built-in pretraining method, config group -> defaults. They are data
# here, not in the method's file, so that loading a config imports no JAX; the method reads them
# (`Method.default_config`). A method registered elsewhere brings its own block (see
# medssl_jax/methods/base.py).
METHOD_DEFAULTS = {
    # SimCLR / MICLe (medssl_jax/methods/simclr.py): NT-Xent temperature 0.1, the SimCLR reference's
    # (PROTOCOLS.md; Azizi et al. pretrain with it).
    "simclr": {"temperature": 0.1},
    # MoCo v2 (medssl_jax/methods/moco_v2.py): PROTOCOLS.md "MoCo v2 defaults" (queue 65,536, m 0.999);
    # shuffled BN over 8 groups as the reference's 8 GPUs.
    "moco": {"queue_size": 65536, "momentum": 0.999, "temperature": 0.2, "bn": "shuffle", "bn_groups": 8},
    # BYOL (medssl_jax/methods/byol.py; Grill et al. 2020 Sec. 3.2-3.3): target EMA base momentum 0.996 (cosine
    # schedule to 1), projector and predictor MLPs 4096 hidden (their output is model.head_dim, 256 in the paper).
    "byol": {"momentum": 0.996, "projector_hidden": 4096, "predictor_hidden": 4096},
    # SimSiam (medssl_jax/methods/simsiam.py; Chen & He 2021 Sec. 3): projector 2048 hidden (3 layers, output
    # model.head_dim, 2048 in the paper), predictor bottleneck 512.
    "simsiam": {"projector_hidden": 2048, "predictor_hidden": 512},
    # Barlow Twins (medssl_jax/methods/barlow_twins.py; Zbontar et al. 2021 Sec. 4): off-diagonal weight lambda
    # 5e-3 ('lambd': lambda is a Python keyword), projector 8192 hidden (3 layers, output model.head_dim, 8192).
    "barlow": {"lambd": 5e-3, "projector_hidden": 8192},
    # VICReg (medssl_jax/methods/vicreg.py; Bardes et al. 2022 Sec. 4.1): invariance / variance / covariance weights
    # 25 / 25 / 1, projector 8192 hidden (3 layers, output model.head_dim, 8192).
    "vicreg": {"sim_weight": 25.0, "var_weight": 25.0, "cov_weight": 1.0, "projector_hidden": 8192},
    # DINO (medssl_jax/methods/dino.py; Caron et al. 2021 Sec. 3.1 and App.): 65,536 prototypes, head hidden 2048
    # (bottleneck: model.head_dim, 256 in the paper), student temperature 0.1, teacher 0.04 (the paper warms it
    # up to 0.07 for some runs), center momentum 0.9, teacher EMA 0.996 -> 1 (cosine).
    "dino": {"out_dim": 65536, "head_hidden": 2048, "student_temp": 0.1, "teacher_temp": 0.04,
             "warmup_teacher_temp": 0.04, "warmup_teacher_temp_steps": 0, "center_momentum": 0.9,
             "momentum": 0.996, "freeze_last_layer_steps": 0},
    # SwAV (medssl_jax/methods/swav.py; Caron et al. 2020 Sec. 4 and App. A.1): 3000 prototypes, projector 2048
    # hidden (2 layers, output model.head_dim, 128 in the paper), temperature 0.1, Sinkhorn-Knopp epsilon 0.05 and
    # 3 iterations; no queue (0) and no frozen prototypes unless a config sets them (the paper: a 3840-row queue
    # for batches of 256, prototypes frozen for the first epoch).
    "swav": {"num_prototypes": 3000, "projector_hidden": 2048, "temperature": 0.1, "epsilon": 0.05,
             "sinkhorn_iterations": 3, "freeze_prototypes_steps": 0, "queue_length": 0, "queue_start_step": 0},
}

# Keys that were renamed, old -> new (CHANGELOG.md lists them). A config file or a command line
# that sets an old key is refused in one line naming the new one; a saved config.json written
# under the old names is read under the new ones (`upgrade_saved`).
RENAMED = {
    **{f"eval.{k}": f"finetune.{k}" for k in (
        "task", "init", "feature_norm", "head_init", "label_fraction", "fraction_seed", "num_epochs",
        "repeat_to_fill_batch", "uncertain_policy", "val_split", "eval_every", "select_metric",
        "plateau_factor", "plateau_patience", "early_stop_patience")},
    "eval.checkpoint": "train.init_checkpoint",
    "dvme.train_size": "finetune.train_size", "dvme.fold": "finetune.fold", "dvme.oversample": "finetune.oversample",
    "train.temperature": "simclr.temperature or moco.temperature (the method's own group)",
}
# train.temperature, once shared, now lives in the group of the method a saved config names.
_TEMPERATURE_GROUP = {"simclr": "simclr", "micle": "simclr", "moco_v2": "moco"}


def renamed_message(old: str, new: str) -> str:
  return f"config key {old!r} was renamed: it is now {new} (CHANGELOG.md lists the renames)"


def upgrade_saved(flat: dict) -> dict:
  """A flattened saved config ({'a.b': value}) under today's key names; keys written under a
  renamed name move to the new one (train.temperature to the group of the config's method)."""
  out = dict(flat)
  for old, new in RENAMED.items():
    if old not in out:
      continue
    value = out.pop(old)
    if old == "train.temperature":
      group = _TEMPERATURE_GROUP.get(out.get("method", "simclr"))
      if group is None:
        continue
      new = f"{group}.temperature"
    if old == "eval.checkpoint" and not value and out.get("train.init_checkpoint"):
      continue  # the pretraining start point, kept
    out[new] = value
  return out


def read_saved(saved: dict) -> dict:
  """A saved config.json's contents (nested dicts) under today's key names (`upgrade_saved`)."""
  flat = upgrade_saved(_flatten(saved))
  out = {}
  for key, value in flat.items():
    node, parts = out, key.split(".")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  return out


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _set_old_keys(c) -> list:
  """The renamed keys a config (a ConfigDict or a plain dict) still sets."""
  found = []
  for old in RENAMED:
    group, key = old.split(".")
    node = c.get(group) if hasattr(c, "get") else None
    if node is not None and hasattr(node, "keys") and key in node.keys():
      found.append(old)
  return found


# ---- the value of aug.on_device: True, False or 'auto' -------------------------------------------
class OnDeviceAuto(str):
  """aug.on_device='auto' before a pretraining run resolves it: equal to 'auto' (and written so in
  JSON) but false, so that code that reads the setting as a flag sees the CPU's choice, off."""

  def __bool__(self):
    return False


ON_DEVICE_AUTO = OnDeviceAuto("auto")


def on_device_value(value):
  """True, False or ON_DEVICE_AUTO for a value of aug.on_device ('auto', 'true', 'false' in any case,
  from a config file or the command line); ValueError for anything else."""
  if isinstance(value, str) and value.strip().lower() in ("auto", "true", "false"):
    v = value.strip().lower()
    return ON_DEVICE_AUTO if v == "auto" else v == "true"
  if type(value).__name__ in ("bool", "bool_"):  # Python's and NumPy's (1.x: bool_, 2.x: bool)
    return bool(value)
  raise ValueError(f"aug.on_device={value!r}: expected True, False or 'auto'")


class OnDeviceField(ml_collections.FieldReference):
  """The aug.on_device field: holds True, False or 'auto' (ml_collections fields otherwise keep the
  type of their default), each value normalised by `on_device_value`."""

  def __init__(self, default="auto"):
    super().__init__(on_device_value(default), field_type=object)

  def set(self, value, type_safe=True):
    super().set(value if isinstance(value, ml_collections.FieldReference) else on_device_value(value), type_safe)


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # What kind of run: 'pretrain' (SimCLR / MICLe / MoCo v2), 'finetune' (end to end) or
  # 'linear_eval' (frozen encoder, new linear head).
  c.mode = "pretrain"            # 'pretrain' | 'finetune' | 'linear_eval' | 'dvme'.
  # Pretraining method, the objective: a name registered in medssl_jax/methods/ ('simclr',
  # 'moco_v2'). Its own settings are its block in METHOD_DEFAULTS above (e.g. c.moco).
  c.method = "simclr"
  # Where the two views of a pair come from: 'views' (two augmentations of one image) or 'case'
  # (two images of one patient case when it has several: MICLe = simclr + case).
  c.pairing = "views"

  # ---- data --------------------------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  # 'synthetic' (embedded, generated), 'npz' (MedMNIST format), 'manifest' (folder + CSV),
  # 'tfds' (a TFDS builder such as chexpert, read from a manual directory).
  c.data.source = "synthetic"
  c.data.path = ""             # .npz file, manifest CSV, or TFDS data_dir.
  c.data.image_dir = ""        # manifest: folder the CSV's image paths are relative to.
  c.data.tfds_name = ""        # tfds: builder name, e.g. 'chexpert'.
  c.data.chexpert_folder = "CheXpert-v1.0-small"  # or 'CheXpert-v1.0' (the full-resolution download)
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32       # side of the square images fed to the network.
  c.data.channels = 3          # 1 = grey, 3 = colour; sources are converted to this.
  c.data.max_bag_size = 6      # MICLe: at most this many images per case (Azizi et al. Sec. 4.2: up to 6); a
                               # larger case keeps a seeded random subset of all its images; 0 = all.
  c.data.verify_images = True  # manifest: open every image once at start (fail early).
  # Host pipeline: 'tf' (tf.data), 'numpy' (no TensorFlow needed; same batches, NumPy augmentation
  # draws), 'grain' (numpy's batches, built on grain worker processes: for many-core accelerator
  # hosts) or 'auto' (tf when TensorFlow imports, else numpy).
  c.data.pipeline = "auto"
  c.data.host_workers = 0      # 'grain': worker processes (0: one per core, at most 16).
  # npz: a CSV that groups the file's images into cases (e.g. dermamnist_split_lesions.csv).
  c.data.group_table = ""
  c.data.group_case_column = "lesion_id"
  # manifest CSV column names.
  c.data.path_column = "path"
  c.data.case_column = "case_id"
  c.data.label_column = "label"
  c.data.split_column = "split"
  # nih: an NIH ChestX-ray14 folder (metadata.csv + images/, e.g. ../shared/data/nih_cxr14_kcr1000_64px).
  c.data.nih_target = "binary"       # 'binary' (0 No Finding, 1 any finding) | 'multilabel' (the 14 findings).
  c.data.nih_split = "patient"       # 'patient': seeded patient-disjoint re-split into train / val / test;
                                     # 'source': the folder's own split (shares patients: refused as leakage).
  c.data.nih_split_fractions = (0.6, 0.2, 0.2)  # train / val / test shares of the images (per patient).
  c.data.nih_split_seed = 0
  c.data.nih_train_patients = 1.0    # < 1: keep this share of the training patients (stratified by the
  c.data.nih_train_draw = 0          # binary target, the same patients for both targets); which draw.
  # folder: a folder of JPEG / PNG / DICOM files, scanned recursively, unlabelled (pretraining);
  # input_pipeline/sources/folder.py.
  c.data.case_rule = "stem"    # case (patient) id of an image: 'stem' (its path without the extension: every
                               # image its own case) | 'parent' (its folder: one folder per patient) |
                               # 'regex:<pattern>' (the pattern's first group, searched in the path relative
                               # to data.path) | 'dicom' (the PatientID tag of DICOM files).
  c.data.val_fraction = 0.0    # folder: share of the images (drawn per case) held out as split 'val';
  c.data.test_fraction = 0.0   # and as split 'test'; the rest is 'train' (0, 0: every image pretrains).
  c.data.split_seed = 0        # folder: seed of that case-disjoint draw.
  # synthetic data set (the default for the demo and tests).
  c.data.synthetic = ml_collections.ConfigDict()
  c.data.synthetic.num_cases = 600
  c.data.synthetic.num_classes = 4
  c.data.synthetic.max_images_per_case = 6
  c.data.synthetic.image_size = 32
  c.data.synthetic.colour = True
  c.data.synthetic.seed = 0    # the data set's own seed (independent of the training seed)

  # ---- augmentation (host side, tf.data and NumPy) -----------------------------------------
  c.aug = ml_collections.ConfigDict()
  c.aug.crop = True            # False: no crop (the whole image is resized).
  # 'inception': random resized crop, area fraction U(crop_area_min, max), aspect (w/h) in
  # [crop_aspect_min, max] (SimCLR); a draw that finds no box uses the whole image and is counted
  # and logged as a fallback. 'fixed': a square of fixed_crop_fraction x the SHORT side at a
  # uniformly random offset (anywhere in a non-square image), resized to data.image_size; e.g.
  # 0.875 = "resize to 256, random crop 224". Its box is the same in both host pipelines.
  c.aug.crop_mode = "inception"
  c.aug.fixed_crop_fraction = 0.875
  # Evaluation / feature extraction: 1.0 = the whole image resized to data.image_size (aspect not
  # kept); < 1 = its centred square of this fraction of the short side, resized (SimCLR code:
  # 0.875). Default 1.0: the papers do not state their test transform, pretraining probes and the
  # MedMNIST studies see whole 28 px images, and earlier results stay comparable; configs that
  # train on fixed crops set 0.875, so test images are seen at the training crops' scale.
  c.aug.eval_crop_fraction = 1.0
  c.aug.crop_area_min = 0.08
  c.aug.crop_area_max = 1.0
  c.aug.crop_aspect_min = 3.0 / 4.0
  # Multi-crop (Caron et al. 2020, SwAV Sec. 3.2; DINO): `local_crops` extra small views per example
  # (batch['local_views'] (N, L, S, S, C)), random resized crops of area U(local_crop_area_min, max)
  # at local_crop_size px, with the same ops as the two global views; with pairing='case' they come
  # alternately from the pair's two images. For the methods that use them (DINO, SwAV); 0 = off. The papers:
  # 6 x 96 px, area (0.05, 0.14) [DINO's code: (0.05, 0.4)], the global views' area then (0.14, 1).
  c.aug.local_crops = 0
  c.aug.local_crop_size = 96
  c.aug.local_crop_area_min = 0.05
  c.aug.local_crop_area_max = 0.14
  c.aug.crop_aspect_max = 4.0 / 3.0
  c.aug.flip = True
  c.aug.color_strength = 1.0   # s: brightness/contrast/saturation 0.8*s, hue 0.2*s.
  c.aug.color_prob = 0.8       # 0 switches colour distortion off.
  c.aug.grayscale_prob = 0.2
  c.aug.blur_prob = 0.5        # kernel 10% of the side, sigma ~ U(0.1, 2.0).
  c.aug.rotation_degrees = 0.0  # uniform in [-r, r]; 0 = off.
  # CheXpert fine-tune augmentation (Azizi App. A.2); 0 = off.
  c.aug.additive_brightness = 0.0  # add U(-b, b) to all channels.
  c.aug.std_contrast = 0.0         # scale deviation from the channel mean by 1 + U(-c, c).
  # Pretraining only: the host crops, resizes and rotates and sends uint8 views; flip, colour,
  # grayscale, brightness/contrast and blur run in the jitted step (input_pipeline/augment_device.py).
  # 'auto': on where a pretraining run's backend is a GPU or TPU, off on the CPU (decided once at the
  # start of the run, logged, and recorded in results.json); True / False force it. Unresolved, 'auto'
  # reads as False (fine-tuning and linear evaluation always augment on the host: True is refused there).
  c.aug.on_device = OnDeviceField("auto")

  # ---- model ------------------------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.arch = "resnet"      # encoder: 'resnet' (ResNet v1), 'vit' (below), 'densenet' (DenseNet-BC, torchvision layout:
                               # depth 121/169/201, width 1 and the 'imagenet' stem only) or 'bit' (BiT's ResNet v2 with
                               # Group Norm + Weight Standardisation, models/bit.py; stem and bn_momentum do not apply).
  c.model.depth = 50           # resnet: 18, 34, 50, 101, 152; densenet: 121, 169, 201; bit: 50, 101, 152.
  c.model.width = 1.0          # width multiplier (1x, 2x, 4x; < 1 for tests and CPU demos; bit: a multiple of 0.5).
  c.model.stem = "imagenet"    # 'imagenet' (7x7/2 conv + max pool) or 'small' (3x3/1, no pool).
  c.model.head_layers = 2      # projection head depth (Azizi et al.: 2; SimCLR code: 3).
  c.model.head_dim = 128
  c.model.dtype = "float32"    # compute dtype: 'float32' or 'bfloat16' (params stay float32).
  c.model.bn_momentum = 0.9
  # ResNet settings that imported weights imply (medssl_jax/weights/, models/resnet.py); the
  # defaults are this project's ResNet. `import-weights --format torchvision` writes
  # 'symmetric' / 'imagenet' (and bottleneck_width 2 for wide_resnet50_2 / 101_2) in its config.json.
  c.model.downsample_padding = "same"  # 'same' (TF SAME: (0, 1) on even sizes) | 'symmetric' (torchvision)
                                       # | 'tf_fixed' (SimCLR's TF ResNet: convs as 'symmetric', max pool SAME)
  c.model.bottleneck_width = 1.0       # inner width of bottleneck blocks (torchvision wide_resnet*_2: 2.0)
  c.model.input_norm = "none"          # 'none' ([0, 1] images as they are) | 'imagenet' (ImageNet mean/std)
                                       # | 'inception' ((x - 0.5) / 0.5; model.arch='vit' (timm's ViTs) and 'bit')
  # model.arch='vit' (models/vit.py; depth, width, stem and bn_momentum do not apply): the size, and
  # how many class tokens make the features (those of the last k blocks, concatenated: k x width;
  # 1 = the usual class token; DVME uses 4 with DINO's ViT-S/16: 1536-d).
  c.model.vit_variant = "S/16"  # 'S/16' | 'B/16' | 'S/8' | 'B/8' | 'Ti/16' | 'test' (2 blocks, width 48, patch 8)
  c.model.vit_tokens = 1

  # ---- optimisation -----------------------------------------------------------------------
  c.optim = ml_collections.ConfigDict()
  c.optim.name = "lars"
  c.optim.base_lr = 0.3
  c.optim.lr_scaling = "linear"  # 'linear': base*batch/256; 'sqrt': base*sqrt(batch).
  c.optim.weight_decay = 1e-6
  # 'cosine': the weight decay goes from optim.weight_decay at step 0 to optim.weight_decay_end at the
  # last step along a half cosine (DINO, Caron et al. 2021: 0.04 -> 0.4); 'sgd' and 'adam' only.
  c.optim.weight_decay_schedule = "constant"
  c.optim.weight_decay_end = 0.0
  c.optim.momentum = 0.9
  c.optim.trust_coefficient = 0.001
  c.optim.warmup_steps = 0
  c.optim.schedule = "cosine"  # 'cosine' (warm-up then cosine to 0), 'constant' or 'piecewise' (after warm-up).
  c.optim.decay_at = (0.5, 0.75)  # 'piecewise': multiply the lr by decay_factor at these fractions of the steps.
  c.optim.decay_factor = 0.1

  # ---- training loop ----------------------------------------------------------------------
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 512     # global batch: number of pairs (2x as many views).
  c.train.num_steps = 1000
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3
  c.train.profile_steps = (0, 0)  # (N, M): jax.profiler trace of steps N..M into <workdir>/profile/.
  c.train.resume_with_changes = False  # resume a workdir whose saved settings differ (else refused).
  c.train.prefetch = 2          # batches kept on device ahead of the step.
  # Where the weights start: a workdir (or its checkpoints/ folder, or imported weights). Pretraining
  # continues from its encoder (MICLe after SimCLR; ImageNet weights); fine-tuning and linear
  # evaluation load its encoder (finetune.init='pretrained' or 'supervised'). '' = random init.
  c.train.init_checkpoint = ""
  # Load train.init_checkpoint even while the run that writes it still trains (holds its workdir lock):
  # it takes that run's latest step so far. Else such a start is refused, naming the step.
  c.train.init_from_running = False

  # ---- fine-tuning and linear evaluation (mode 'finetune' / 'linear_eval'): how the supervised
  # training runs. The encoder comes from train.init_checkpoint. ----------------------------------
  c.finetune = ml_collections.ConfigDict()
  c.finetune.task = "multiclass"        # 'multiclass' (softmax) or 'multilabel' (sigmoid per label).
  c.finetune.init = "pretrained"        # 'pretrained' | 'supervised' (encoder of a checkpoint) | 'random'.
  c.finetune.feature_norm = "none"      # 'batchnorm': standardise the features before the linear layer.
  c.finetune.head_init = "auto"         # linear head's kernel: 'auto' (zeros in linear_eval, LeCun normal
                                        # in finetune) | 'zeros' | 'lecun_normal'.
  c.finetune.label_fraction = 1.0       # fraction of training CASES with labels, stratified, per case.
  c.finetune.fraction_seed = 0          # which draw of the label fraction.
  c.finetune.num_epochs = 0.0           # > 0: fine-tuning length in epochs over the labelled images
                                        # (steps = ceil(epochs x labelled / batch)); 0: train.num_steps.
  c.finetune.train_size = 0             # > 0: a class-balanced training subset of this many images (Truong's
                                        # Small / Medium regimes; input_pipeline/subsets.py), in every mode.
  c.finetune.fold = 0                   # which draw of that subset (Truong: 5 folds).
  c.finetune.oversample = False         # True: each epoch draws its images with replacement so every class (multi-
                                        # label: each image's rarest positive label, or none) is equally frequent
                                        # (Truong's NIH setting), in every mode.
  c.finetune.repeat_to_fill_batch = False  # fewer labelled images than train.batch_size: repeat them
                                           # within a batch (True) instead of refusing the batch.
  c.finetune.uncertain_policy = "ignore"  # CheXpert uncertain (-1) labels: 'ones' | 'zeros' | 'ignore'.
  c.finetune.val_split = "val"          # model selection split ('' = none).
  c.finetune.eval_every = 0             # steps between validation evaluations (0 = at the end only); a
                                        # multiple of train.log_every. > 0: the test metrics are those of
                                        # the best state on validation (results.json: selected_step).
  c.finetune.eval_every_epochs = 0.0    # > 0 (instead of eval_every): validate every this many epochs over the
                                        # labelled images (ceil(epochs x labelled / batch) steps), so plateau /
                                        # early-stopping patience counts epochs as the papers do.
  c.finetune.min_epochs = 0.0           # early stopping never ends training before this many epochs (Truong: 30).
  c.finetune.select_metric = ""         # validation metric that picks that state ('' = top1 for multiclass,
                                        # mean_auc for multilabel; any metric name of the task, or 'loss':
                                        # the validation cross-entropy, lower is better).
  c.finetune.plateau_factor = 0.0       # > 0 (with eval_every > 0): ReduceLROnPlateau on select_metric, the
                                        # lr x this factor after plateau_patience validations without an
                                        # improvement (> 1e-4 above the best); 0 = off.
  c.finetune.plateau_patience = 5       # validations (one per eval_every steps) without improvement.
  c.finetune.early_stop_patience = 0    # > 0 (with eval_every > 0): stop training after this many
                                        # validations without improvement; the best state is tested.

  # ---- test metrics of a fine-tuned or linear-evaluation run (and of compare / select-best) ----
  c.eval = ml_collections.ConfigDict()
  c.eval.case_level = False         # average the predictions of a case's images before metrics.
  c.eval.exclude_classes = ()       # classes left out of the top-k sensitivity: names (e.g. ('Other',),
                                    # looked up in the data's class names) or indices (checked to exist).
  c.eval.min_positives = 0          # multilabel: labels with fewer positive images in the test split are
                                    # left out of mean_auc / mean_auprc (results.json: mean_over_labels).
  c.eval.num_replicates = 1000      # bootstrap replicates for the 95% intervals.
  c.eval.bootstrap_seed = 0

  # ---- evaluation after pretraining (linear probe on frozen features) ----------------------
  c.probe = ml_collections.ConfigDict()
  c.probe.enabled = False
  c.probe.compare_random_init = True
  c.probe.max_train_examples = 4000
  c.probe.batch_size = 256

  # ---- watching a pretraining run (medssl_jax/runs/monitor.py): every `every` steps, features of
  # labelled images from the current encoder, scored by a kNN classifier (k, cosine, temperature:
  # the DINO / InstDisc protocol) and by a linear head fitted on them with its own optimiser;
  # TensorBoard monitor/knn_top1 ..., the workdir's monitor.json; `select-best --pretrain_dir`.
  c.monitor = ml_collections.ConfigDict()
  c.monitor.every = 0                   # steps between evaluations; 0 = off.
  c.monitor.train_split = ""            # labelled images of the kNN bank and the probe's fit ('' = data.train_split).
  c.monitor.eval_split = "val"          # the split scored.
  c.monitor.knn = True
  c.monitor.knn_k = 20
  c.monitor.knn_temperature = 0.07
  c.monitor.probe = True
  c.monitor.probe_steps = 200           # full-batch Adam steps of the linear head, from zero each time.
  c.monitor.probe_lr = 1e-2
  c.monitor.max_train_examples = 2000   # a seeded subset of the train split, the same at every evaluation.
  c.monitor.max_eval_examples = 1000
  c.monitor.batch_size = 256
  c.monitor.keep_best = ""              # a metric ('knn/top1', 'probe/auc', ...): its best state in checkpoints_best/.

  # ---- DVME on cached features (mode 'dvme', medssl_jax/runs/dvme.py; Truong et al. 2021) -------
  c.dvme = ml_collections.ConfigDict()
  c.dvme.features = ""           # 'name=path_{split}.npz,...': files of `medssl-jax features`, one per encoder.
  c.dvme.attention = True        # False: the paper's ablation without self-attention (concatenation).
  c.dvme.tokens = "source"       # 'source' (one 512-d token per encoder) | 'scalar' (Listing 1's layout).
  c.dvme.block = "vit"           # 'vit' (pre-norm ViT block) | 'attention' (attention alone).
  c.dvme.num_heads = 8
  c.dvme.proj_dim = 512
  c.dvme.hidden_dim = 512
  c.dvme.dropout_rate = 0.2
  c.dvme.lr = 1e-3               # Adam.
  c.dvme.batch_size = 64
  c.dvme.epochs = 50             # at most; early stopping usually ends sooner.
  c.dvme.plateau_factor = 0.1    # ReduceLROnPlateau on the validation loss.
  c.dvme.lr_patience = 5
  c.dvme.stop_patience = 10      # early stopping on the validation loss.
  c.dvme.monitor = "loss"        # the validation quantity for both (the paper does not say; a reading).
  c.dvme.tsne = True             # t-SNE PNGs of each source's test features and of the DVME embedding.
  c.dvme.tsne_max_points = 2000  # at most this many test images in them (a seeded draw; 0 = all).

  # ---- segmentation (mode 'finetune', finetune.task='segmentation', data.source='seg_manifest') --
  # The manifest CSV (data.path) has an image column (data.path_column), a mask column, a case
  # column (data.case_column) and a split column (data.split_column; '' = drawn, see below).
  c.seg = ml_collections.ConfigDict()
  c.seg.mask_column = "mask"
  c.seg.mask_dir = ""            # folder the mask paths are relative to ('' = the CSV's folder).
  c.seg.mask_threshold = 128     # foreground = grey mask value >= this (8-bit masks, 255 = object).
  c.seg.keep_rows = ""           # 'column=value': only rows with that value (e.g. 'canonical_mask=True').
  c.seg.test_fraction = 0.2      # data.split_column='': seeded case-disjoint draw of 'test' ...
  c.seg.val_fraction = 0.1       # ... then 'val' from the remaining cases ('train' = the rest).
  c.seg.split_seed = 0
  c.seg.threshold = 0.5          # predicted foreground = sigmoid probability >= this (metrics, overlay).
  c.seg.dice_weight = 1.0        # loss = dice_weight x soft Dice loss + bce_weight x pixel BCE.
  c.seg.bce_weight = 1.0
  c.seg.decoder_width = 1.0      # U-Net decoder widths = this x (256, 128, 64, 32, 16) (models/unet.py);
                                 # < 1 for small CPU runs (a narrow encoder under a full decoder is slow).
  c.seg.overlay_images = 8       # test images drawn in <workdir>/overlay_test.png (0 = none).
  c.seg.data_note = ""           # copied into results.json (e.g. that the masks are model-made).
  # Joint image + mask augmentation (input_pipeline/augment_seg.py). Defaults: the settings of
  # Hosseinzadeh Taher et al.'s code (albumentations, 224 px); pixel sizes scale with data.image_size.
  c.seg.crop_prob = 0.25         # square crop of side U{crop_min_side..1} x side, resized back.
  c.seg.crop_min_side = 156 / 224
  c.seg.flip_prob = 0.0          # horizontal flip (their segmentation code: none).
  c.seg.vflip_prob = 0.0         # vertical flip (fundus: configs/fundus_segmentation.py).
  c.seg.transpose_prob = 0.0     # diagonal flip, the transpose (fundus).
  c.seg.color_prob = 0.0         # SimCLR colour jitter of strength seg.color_strength (fundus).
  c.seg.color_strength = 0.25
  c.seg.noise_prob = 0.0         # additive Gaussian noise, std ~ U(seg.noise_std_range) in [0, 1] units (fundus).
  c.seg.noise_std_range = (10 ** 0.5 / 255, 50 ** 0.5 / 255)  # variance 10-50 in 8-bit units (albumentations GaussNoise default)
  c.seg.rotation_degrees = 0.0   # uniform in [-r, r] (their segmentation code: none).
  c.seg.distort_prob = 0.3       # one of elastic / grid / optical distortion, equally likely.
  c.seg.elastic_alpha = 120.0    # at 224 px; x (size/224)^2.
  c.seg.elastic_sigma = 6.0      # at 224 px; x size/224.
  c.seg.elastic_alpha_affine = 3.6  # at 224 px; x size/224.
  c.seg.grid_steps = 5
  c.seg.grid_limit = 0.3
  c.seg.optical_limit = 2.0      # radial coefficient k ~ U(-l, l).
  c.seg.optical_shift = 0.5      # centre shift round(U(-s, s)) pixels at 224 px.
  c.seg.intensity_prob = 0.3     # one of brightness/contrast or gamma (image only), equally likely.
  c.seg.brightness_limit = 0.2
  c.seg.contrast_limit = 0.2
  c.seg.gamma_range = (0.8, 1.2)

  # ---- each built-in pretraining method's own settings (METHOD_DEFAULTS below) ---------------
  for group, defaults in METHOD_DEFAULTS.items():
    c[group] = ml_collections.ConfigDict(defaults)
  return c


def finalize(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks the config so unknown keys raise instead of being silently added; refuses a key set
  under its old name (RENAMED) with the new name."""
  old = _set_old_keys(c)
  if old:
    raise ValueError(renamed_message(old[0], RENAMED[old[0]]))
  c.lock()
  return c
