"""Every key a medssl-jax run understands, with its default: the library's settings schema.

Each config file under `configs/` starts from `get_base_config()` (re-exported by
`configs/base.py`) and changes only what differs; the result is locked, so a misspelt
`--config.key=value` on the command line is an error that names the key instead of being
silently ignored. The library reads its defaults from here, never from `configs/`.
"""
import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # What kind of run: 'pretrain' (SimCLR / MICLe / MoCo v2), 'finetune' (end to end) or
  # 'linear_eval' (frozen encoder, new linear head).
  c.mode = "pretrain"            # 'pretrain' | 'finetune' | 'linear_eval' | 'dvme'.
  # Pretraining method, the objective: a name registered in medssl_jax/methods/ ('simclr',
  # 'moco_v2'). Its own settings are the block of the same name below (e.g. c.moco).
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
  c.data.max_bag_size = 6      # MICLe: cap on images per case considered.
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
  c.aug.on_device = False

  # ---- model ------------------------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.arch = "resnet"      # encoder: 'resnet' (ResNet v1), 'vit' (below) or 'densenet' (DenseNet-BC, torchvision layout:
                               # depth 121/169/201, width 1 and the 'imagenet' stem only).
  c.model.depth = 50           # resnet: 18, 34, 50, 101, 152; densenet: 121, 169, 201.
  c.model.width = 1.0          # width multiplier (1x, 2x, 4x; < 1 for tests and CPU demos).
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
                                       # | 'inception' ((x - 0.5) / 0.5; model.arch='vit' only: timm's ViTs)
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
  c.train.temperature = 0.1     # contrastive temperature (SimCLR reference 0.1; MoCo v2 0.2).
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3
  c.train.profile_steps = (0, 0)  # (N, M): jax.profiler trace of steps N..M into <workdir>/profile/.
  c.train.resume_with_changes = False  # resume a workdir whose saved settings differ (else refused).
  c.train.prefetch = 2          # batches kept on device ahead of the step.
  c.train.init_checkpoint = ""  # MICLe: a SimCLR workdir or checkpoint to start from.

  # ---- fine-tuning and linear evaluation (mode 'finetune' / 'linear_eval') ------------------
  c.eval = ml_collections.ConfigDict()
  c.eval.task = "multiclass"        # 'multiclass' (softmax) or 'multilabel' (sigmoid per label).
  c.eval.init = "pretrained"        # 'pretrained' | 'supervised' (encoder of a checkpoint) | 'random'.
  c.eval.checkpoint = ""            # workdir (or checkpoints/ folder) whose encoder is loaded.
  c.eval.feature_norm = "none"      # 'batchnorm': standardise the features before the linear layer.
  c.eval.head_init = "auto"         # linear head's kernel: 'auto' (zeros in linear_eval, LeCun normal
                                    # in finetune) | 'zeros' | 'lecun_normal'.
  c.eval.label_fraction = 1.0       # fraction of training CASES with labels, stratified, per case.
  c.eval.fraction_seed = 0          # which draw of the label fraction.
  c.eval.num_epochs = 0.0           # > 0: fine-tuning length in epochs over the labelled images
                                    # (steps = ceil(epochs x labelled / batch)); 0: train.num_steps.
  c.eval.repeat_to_fill_batch = False  # fewer labelled images than train.batch_size: repeat them
                                       # within a batch (True) instead of refusing the batch.
  c.eval.uncertain_policy = "ignore"  # CheXpert uncertain (-1) labels: 'ones' | 'zeros' | 'ignore'.
  c.eval.val_split = "val"          # model selection split ('' = none).
  c.eval.eval_every = 0             # steps between validation evaluations (0 = at the end only); a
                                    # multiple of train.log_every. > 0: the test metrics are those of
                                    # the best state on validation (results.json: selected_step).
  c.eval.select_metric = ""         # validation metric that picks that state ('' = top1 for multiclass,
                                    # mean_auc for multilabel; any metric name of the task).
  c.eval.plateau_factor = 0.0       # > 0 (with eval_every > 0): ReduceLROnPlateau on select_metric, the
                                    # lr x this factor after plateau_patience validations without an
                                    # improvement (> 1e-4 above the best); 0 = off.
  c.eval.plateau_patience = 5       # validations (one per eval_every steps) without improvement.
  c.eval.early_stop_patience = 0    # > 0 (with eval_every > 0): stop training after this many
                                    # validations without improvement; the best state is tested.
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

  # ---- DVME on cached features (mode 'dvme', medssl_jax/fusion.py; Truong et al. 2021) -------
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
  c.dvme.train_size = 0          # > 0: a class-balanced training subset of this many images (Small / Medium).
  c.dvme.fold = 0                # which draw of that subset (Truong: 5 folds).
  c.dvme.monitor = "loss"        # the validation quantity for both (the paper does not say; a reading).
  c.dvme.oversample = False      # True: each epoch draws its rows with replacement so every class (multi-label:
                                 # each image's rarest positive label, or none) is equally frequent (Truong's NIH).
  c.dvme.tsne = True             # t-SNE PNGs of each source's test features and of the DVME embedding.
  c.dvme.tsne_max_points = 2000  # at most this many test images in them (a seeded draw; 0 = all).

  # ---- segmentation (mode 'finetune', eval.task='segmentation', data.source='seg_manifest') --
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

  # ---- each pretraining method's own settings (defaults from its file in medssl_jax/methods/) --
  from medssl_jax import methods
  for group, defaults in methods.default_configs().items():
    c[group] = ml_collections.ConfigDict(defaults)
  return c


def finalize(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks the config so unknown keys raise instead of being silently added."""
  c.lock()
  return c
