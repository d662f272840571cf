"""Every config key resdet knows, with its default and what it means.

Conventions follow Detectron2: YAML files override these defaults (with `_BASE_` inheritance) and
`KEY VALUE` pairs on the command line override the files. A key that is not defined here is an error.
Modules never read this config directly: each has a `from_config(cfg)` that turns the keys it needs
into plain keyword arguments.
"""
from .config import CfgNode as CN

_C = CN()
# Version of this config layout, so that old files can be recognised if the layout ever changes.
_C.VERSION = 1

# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------
_C.MODEL = CN()
# "cuda", "cpu", or "cuda:N"; "cuda" falls back to an error (not silently to CPU) when no GPU exists.
_C.MODEL.DEVICE = "cuda"
# The meta-architecture: "GeneralizedRCNN" (detection) or "ImageClassifier" (classification).
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
# Weights to load into the whole model before training or evaluation: a path to a resdet checkpoint,
# a converted torchvision/timm checkpoint, or "" for none (random init / backbone weights only).
_C.MODEL.WEIGHTS = ""
# Mask R-CNN (True) or Faster R-CNN (False).
_C.MODEL.MASK_ON = False
# Per-channel pixel statistics for input normalisation, in the 0-255 range and RGB order
# (ImageNet's, as torchvision's pretrained models expect).
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]

# ---------------------------------------------------------------------------- #
# Backbone (resdet/backbones): a registry name, plus the paper's options.
# ---------------------------------------------------------------------------- #
_C.MODEL.BACKBONE = CN()
# A name from `resdet.backbones.list_backbones()`: resnet18/34/50/101/152, plain18/34/50/101/152,
# cifar_resnet20/32/44/56/110/1202, cifar_plain20/32/44/56/110, or "timm/<model>" for a timm model.
_C.MODEL.BACKBONE.NAME = "resnet50"
# Where the stride-2 of a bottleneck stage sits: "v1" puts it in the first 1x1 conv (the paper and
# MSRA's original models), "v1.5" in the 3x3 conv (torchvision's models). Ignored for basic blocks.
_C.MODEL.BACKBONE.VARIANT = "v1.5"
# Shortcut option of the paper's Table 3: "A" zero-padded identity where the shape changes, "B"
# projection (1x1 conv + norm) where the shape changes, "C" projection on every block.
# "" picks the family's own default: "B" for ImageNet models, "A" for the CIFAR ones.
_C.MODEL.BACKBONE.SHORTCUT = ""
# Normalisation: "BN", "FrozenBN" (fixed statistics and affine, for fine-tuning detection),
# "SyncBN" (statistics over all DDP processes), "GN" (GroupNorm, for detection from scratch).
_C.MODEL.BACKBONE.NORM = "BN"
# Number of groups when NORM is "GN".
_C.MODEL.BACKBONE.GN_GROUPS = 32
# Freeze the stem (1) and the first N-1 residual stages (2 freezes stem + res2, ... 5 freezes up to res5);
# 0 freezes nothing. Frozen parts keep requires_grad=False and their norms in eval behaviour.
_C.MODEL.BACKBONE.FREEZE_AT = 0
# Which stage outputs the backbone returns for detection ("stem", "res2".."res5").
_C.MODEL.BACKBONE.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
# Weights for the backbone alone (applied before MODEL.WEIGHTS): a train_cls backbone export, a
# torchvision or timm ResNet state dict, or "" for none.
_C.MODEL.BACKBONE.WEIGHTS = ""

# ---------------------------------------------------------------------------- #
# Detection model keys (FPN, anchors, RPN, RoI heads): resdet/detection adds them here.
# ---------------------------------------------------------------------------- #



# ---------------------------------------------------------------------------- #
# Classification model keys (head, loss): resdet/classification adds them here.
# ---------------------------------------------------------------------------- #
_C.MODEL.CLASSIFIER = CN()
# Number of classes of the classifier's fc layer; must equal the number of classes the training data
# has (1000 for ImageNet, 10 for CIFAR-10): a mismatch is an error naming both.
_C.MODEL.CLASSIFIER.NUM_CLASSES = 1000
# Label smoothing of the cross-entropy loss (timm's LabelSmoothingCrossEntropy); 0.0 is the paper's
# plain cross-entropy. With mixup/cutmix the smoothing is folded into timm's soft targets instead.
_C.MODEL.CLASSIFIER.LABEL_SMOOTHING = 0.0



# ----------------------------------------------------------------------------------------------------
# Solver (shared by classification and detection training)
# ----------------------------------------------------------------------------------------------------
_C.SOLVER = CN()
# "SGD" (momentum, as in the paper) or "AdamW".
_C.SOLVER.OPTIMIZER = "SGD"
# Learning rate for SOLVER.IMS_PER_BATCH images per step, summed over all processes.
_C.SOLVER.BASE_LR = 0.1
# If > 0, the batch size BASE_LR was tuned for; the lr actually used is BASE_LR * IMS_PER_BATCH /
# REFERENCE_WORLD_BATCH (the linear scaling rule). 0 uses BASE_LR as given.
_C.SOLVER.REFERENCE_WORLD_BATCH = 0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 1e-4
# Weight decay on norm layers' affine parameters and on all biases (0.0: none, as Detectron2 and timm
# do by default; the paper's Caffe recipe decays everything, i.e. set it equal to WEIGHT_DECAY).
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
# Total images per step over all processes (each process takes IMS_PER_BATCH / world size).
_C.SOLVER.IMS_PER_BATCH = 16
# Training length in iterations (steps).
_C.SOLVER.MAX_ITER = 90000
# Learning rate schedule: "WarmupMultiStepLR" (divide by GAMMA at each of STEPS) or "WarmupCosineLR".
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
# Iterations at which the lr is multiplied by GAMMA.
_C.SOLVER.STEPS = (60000, 80000)
_C.SOLVER.GAMMA = 0.1
# Warm-up: the lr starts at BASE_LR * WARMUP_FACTOR and reaches BASE_LR after WARMUP_ITERS steps.
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
_C.SOLVER.WARMUP_ITERS = 1000
# "linear" ramps up; "constant" holds BASE_LR * WARMUP_FACTOR (the paper's 0.01 start for ResNet-110).
_C.SOLVER.WARMUP_METHOD = "linear"
# Save a checkpoint every this many iterations (and always at the end); 0: only at the end.
_C.SOLVER.CHECKPOINT_PERIOD = 5000
# --- engine (resdet/engine) keys ---
# Keep only the newest this many periodic checkpoints (model_<iter>.pth); the final one is always kept.
# 0 keeps them all.
_C.SOLVER.CHECKPOINT_MAX_KEEP = 3
# AdamW's (beta1, beta2); ignored by SGD.
_C.SOLVER.ADAMW_BETAS = (0.9, 0.999)
# WarmupCosineLR decays to BASE_LR * COSINE_END_FACTOR at MAX_ITER (0.0: to zero).
_C.SOLVER.COSINE_END_FACTOR = 0.0
# Let float32 matrix multiplications use TF32 tensor cores on Ampere and newer GPUs (much faster fully
# connected layers; 10-bit mantissa inputs, fp32 accumulation). cuDNN convolutions use TF32 by default
# in PyTorch either way. False: full-precision float32 matmuls.
_C.SOLVER.ALLOW_TF32 = True
# Gradient clipping by global norm; 0 disables it.
_C.SOLVER.CLIP_GRAD_NORM = 0.0
# Mixed precision: "" (float32), "fp16" (with a gradient scaler) or "bf16".
_C.SOLVER.AMP = ""
# Use channels_last memory format for the model and inputs (faster convolutions on tensor cores).
_C.SOLVER.CHANNELS_LAST = False
# Wrap the model in torch.compile.
_C.SOLVER.COMPILE = False

# ----------------------------------------------------------------------------------------------------
# Test / evaluation
# ----------------------------------------------------------------------------------------------------
_C.TEST = CN()
# Evaluate every this many iterations during training; 0 only at the end.
_C.TEST.EVAL_PERIOD = 0

# ----------------------------------------------------------------------------------------------------
# Datasets and input pipeline (detection: DATASETS, INPUT): resdet/data adds them here.
# ----------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------
# Classification data and recipe keys (CLS: dataset root, augmentation, mixup, EMA, ...) go here.
# ----------------------------------------------------------------------------------------------------
_C.CLS = CN()
_C.CLS.DATA = CN()
# Dataset name; with ROOT empty the data is looked for in $RESDET_DATASETS/<NAME> (default
# ./datasets/<NAME>). See datasets/README.md for how to prepare ImageNet and CIFAR-10.
_C.CLS.DATA.NAME = "imagenet"
# Dataset directory; "" derives it from NAME as above.
_C.CLS.DATA.ROOT = ""
# "folder": an image-folder tree (<root>/<split>/<class>/<image>); "cifar-python": CIFAR-10's python
# batches (<root>/cifar-10-batches-py/ or <root> itself); "auto": python batches if present, else folder.
_C.CLS.DATA.FORMAT = "auto"
# Sub-folders of an image-folder tree used for training and for testing (ignored for python batches).
_C.CLS.DATA.TRAIN_SPLIT = "train"
_C.CLS.DATA.TEST_SPLIT = "val"
# Decode the whole dataset once into a uint8 tensor kept on MODEL.DEVICE and augment batches there
# (pad-crop-flip only); for small fixed-size datasets such as CIFAR. False streams images from disk
# through DataLoader workers with the transforms of CLS.INPUT.
_C.CLS.DATA.IN_MEMORY = False
# Hold this many training images out as a validation set (the paper's 45k/5k CIFAR split: 5000); they
# are drawn with a fixed seed, removed from training, and evaluated as "val" besides the test split.
_C.CLS.DATA.HOLDOUT = 0
# Use only the first N images (after a fixed-seed shuffle) of the training / test set; 0 uses all.
# For quick experiments and tests.
_C.CLS.DATA.TRAIN_LIMIT = 0
_C.CLS.DATA.TEST_LIMIT = 0

_C.CLS.INPUT = CN()
# Training augmentation: "pad_crop_flip" (the paper's CIFAR recipe: pad, random crop, flip),
# "scale" (the paper's ImageNet recipe: shorter side drawn from TRAIN_SHORT_SIDE, random crop, flip),
# "rrc" (torchvision/timm's RandomResizedCrop + flip).
_C.CLS.INPUT.TRAIN_AUG = "scale"
# Side of the square training and test crops (224 ImageNet, 32 CIFAR).
_C.CLS.INPUT.CROP_SIZE = 224
# The shorter side is resized to a random integer in [low, high] for "scale" augmentation.
_C.CLS.INPUT.TRAIN_SHORT_SIDE = (256, 480)
# For testing, the shorter side is resized to this before the centre (or ten) crops; 0 keeps the image
# as it is (CIFAR: "test on the original image").
_C.CLS.INPUT.TEST_SHORT_SIDE = 256
# Pixels of padding on each side for "pad_crop_flip" (the paper: 4). The padding is zero after
# normalisation (padded pixels take MODEL.PIXEL_MEAN).
_C.CLS.INPUT.PAD = 4
# Random horizontal flip in training.
_C.CLS.INPUT.HFLIP = True
# Colour augmentation for image-folder training: "pca" (AlexNet's PCA lighting noise, which the paper
# uses), "jitter" (torchvision ColorJitter with strength COLOR_JITTER), "" none.
_C.CLS.INPUT.COLOR_AUG = "pca"
# PCA lighting noise standard deviation (AlexNet: 0.1) / ColorJitter strength.
_C.CLS.INPUT.PCA_STD = 0.1
_C.CLS.INPUT.COLOR_JITTER = 0.4
# timm RandAugment policy string, e.g. "rand-m9-mstd0.5-inc1"; "" disables it.
_C.CLS.INPUT.RANDAUGMENT = ""
# timm Mixup / CutMix: alpha 0 disables each; PROB is the chance a batch is mixed; SWITCH_PROB the
# chance of cutmix rather than mixup when both are on. Needs an even per-process batch size.
_C.CLS.INPUT.MIXUP_ALPHA = 0.0
_C.CLS.INPUT.CUTMIX_ALPHA = 0.0
_C.CLS.INPUT.MIXUP_PROB = 1.0
_C.CLS.INPUT.MIXUP_SWITCH_PROB = 0.5

_C.CLS.EMA = CN()
# Keep an exponential moving average of the weights (timm's ModelEmaV3), checkpointed with the run and
# evaluated besides the raw model ("ema/test/top1_err"); DECAY is its per-step decay.
_C.CLS.EMA.ENABLED = False
_C.CLS.EMA.DECAY = 0.9998

_C.CLS.TEST = CN()
# Images per process per evaluation batch.
_C.CLS.TEST.BATCH_SIZE = 256
# Ten-crop testing (four corners and centre, and their mirrors; softmax averaged: the paper's Table 3)
# instead of the single centre crop.
_C.CLS.TEST.TEN_CROP = False
# At each evaluation also measure the error on this many (unaugmented) training images, so training
# and test error can be plotted together (the paper's CIFAR figure); 0 skips it.
_C.CLS.TEST.TRAIN_SUBSET = 10000



# ----------------------------------------------------------------------------------------------------
# Data loading
# ----------------------------------------------------------------------------------------------------
_C.DATALOADER = CN()
# Worker processes per training process.
_C.DATALOADER.NUM_WORKERS = 4

# ----------------------------------------------------------------------------------------------------
# Misc
# ----------------------------------------------------------------------------------------------------
# Where a run writes its checkpoints, metrics (metrics.jsonl, TensorBoard events), resolved config
# (config.yaml) and pictures.
_C.OUTPUT_DIR = "./output"
# Random seed; a negative value draws one (and records it in the saved config).
_C.SEED = 0
# Deterministic algorithms where PyTorch has them (slower; for debugging reproducibility).
_C.CUDNN_DETERMINISTIC = False
# Log training metrics every this many iterations.
_C.LOG_PERIOD = 20
