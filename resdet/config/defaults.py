"""Every config key resdet knows, with its default and what it means.

Conventions follow Detectron2: YAML files override these defaults (with `_BASE_` inheritance) and
`KEY VALUE` pairs on the command line override the files. A key that is not defined here is an error.
Modules never read this config directly: each has a `from_config(cfg)` that turns the keys it needs
into plain keyword arguments.
"""
from .node import CfgNode as CN

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
# "auto": what MODEL.BACKBONE.WEIGHTS records (train_cls exports and converted torchvision/timm files
# describe themselves), else the config saved in MODEL.WEIGHTS' checkpoint, else "v1.5". An explicit
# value that disagrees with the weights is an error naming this key.
_C.MODEL.BACKBONE.VARIANT = "auto"
# Shortcut option of the paper's Table 3: "A" zero-padded identity where the shape changes, "B"
# projection (1x1 conv + norm) where the shape changes, "C" projection on every block.
# "" follows MODEL.BACKBONE.WEIGHTS when they record one (or show it in their blocks), else picks the
# family's own default: "B" for ImageNet models, "A" for the CIFAR ones.
_C.MODEL.BACKBONE.SHORTCUT = ""
# Normalisation: "BN", "FrozenBN" (fixed statistics and affine, for fine-tuning detection),
# "SyncBN" (statistics over all DDP processes), "GN" (GroupNorm, for detection from scratch).
_C.MODEL.BACKBONE.NORM = "BN"
# Number of groups when NORM is "GN" (also for the FPN's and the heads' GN: MODEL.FPN.NORM, ROI_*_HEAD.NORM).
_C.MODEL.BACKBONE.GN_GROUPS = 32
# Freeze the stem (1) and the first N-1 residual stages (2 freezes stem + res2, ... 5 freezes up to res5);
# 0 freezes nothing. Frozen parts keep requires_grad=False and their norms in eval behaviour.
_C.MODEL.BACKBONE.FREEZE_AT = 0
# Which stage outputs the backbone returns for detection ("stem", "res2".."res5").
_C.MODEL.BACKBONE.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
# Weights for the backbone alone (applied before MODEL.WEIGHTS): a train_cls backbone export
# (backbone_final.pth), a tools/convert_weights.py --backbone file, a torchvision or timm ResNet state
# dict, or "" for none. A path that does not exist is an error (saying how to make it) unless
# MODEL.WEIGHTS is given, which replaces the whole model's weights anyway.
_C.MODEL.BACKBONE.WEIGHTS = ""

# ---------------------------------------------------------------------------- #
# Detection model keys (FPN, anchors, RPN, RoI heads): resdet/detection adds them here.
# ---------------------------------------------------------------------------- #
# Conventions: NUM_CLASSES excludes the background (labels are 1..K, 0 is background, as torchvision);
# the defaults are Detectron2's R50-FPN; configs/torchvision/*.yaml switch to torchvision's choices.
_C.MODEL.FPN = CN()
# Backbone outputs the pyramid is built on (finest first); they become p2..p5, plus p6 for the RPN.
_C.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
# Channels of every pyramid level.
_C.MODEL.FPN.OUT_CHANNELS = 256

_C.MODEL.ANCHOR_GENERATOR = CN()
# Anchor sizes (pixels) per RPN level: one list per level of MODEL.RPN.IN_FEATURES.
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
# Height/width ratios: one list for all levels, or one list per level.
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]

_C.MODEL.RPN = CN()
# Pyramid levels the RPN runs on.
_C.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
# [background below, foreground at or above] IoU thresholds for anchors (in between: ignored).
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]
# Anchors sampled per image for the losses, and the largest foreground share among them.
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
# Weights (wx, wy, ww, wh) of the anchor box deltas.
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
# Smooth-L1 transition of the box loss (0 is plain L1, Detectron2's choice; torchvision uses 1/9).
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0
# Scale of both RPN losses.
_C.MODEL.RPN.LOSS_WEIGHT = 1.0
# Top-k proposals kept per level before NMS, and per image after it (training / testing).
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 1000
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
# IoU threshold of the proposals' NMS (done per image and level).
_C.MODEL.RPN.NMS_THRESH = 0.7
# Proposals narrower or shorter than this (pixels) are dropped before NMS.
_C.MODEL.RPN.MIN_BOX_SIZE = 0.0
# Proposals with objectness probability below this are dropped before NMS.
_C.MODEL.RPN.SCORE_THRESH = 0.0

_C.MODEL.ROI_HEADS = CN()
# Number of object classes, background excluded (COCO: 80; torchvision's COCO weights: 90).
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80
# Pyramid levels RoIs are pooled from.
_C.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
# A RoI with IoU at or above this with some ground truth is foreground, otherwise background.
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
# RoIs sampled per image for the losses, and the largest foreground share among them.
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
# Add the ground-truth boxes to the proposals in training (so every object has a perfect RoI).
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True
# Inference: detections need a class score above this; NMS per class at this IoU.
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5

_C.MODEL.ROI_BOX_HEAD = CN()
# Fully connected layers of the box head and their width.
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 2
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
# RoIAlign output size, samples per bin (0: adaptive), and type: "ROIAlignV2" (half-pixel aligned,
# Detectron2) or "ROIAlign" (the original, torchvision's).
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
# Weights (wx, wy, ww, wh) of the class-specific box deltas.
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# Smooth-L1 transition of the box loss (0 is plain L1).
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0

_C.MODEL.ROI_MASK_HEAD = CN()
# 3x3 convs of the mask head and their width (then a 2x deconvolution and per-class logits).
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 4
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
# RoIAlign settings of the mask branch (as for the box head); masks come out at 2x this size.
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"

# --- training and inference on the CPU (issue 25: resdet/detection/roi_align.py) ---
# RoIAlign kernel of the box and mask poolers for CPU tensors: "resdet" (a sparse product built once
# per call and shared by all channels, backward on every core; torchvision's result up to float
# rounding) or "torchvision" (its CPU kernel: one thread in the backward). GPUs always use torchvision's.
_C.MODEL.POOLER_CPU_KERNEL = "resdet"

# ---------------------------------------------------------------------------- #
# Cascade R-CNN, head norms and the new-baselines head shapes (resdet/detection/cascade.py, roi_heads.py,
# layers.py, fpn.py, rpn.py)
# ---------------------------------------------------------------------------- #
# The RoI heads: "StandardROIHeads" (Faster / Mask R-CNN) or "CascadeROIHeads" (Cai and Vasconcelos 2018:
# box stages at rising IoU thresholds, MODEL.ROI_BOX_CASCADE_HEAD; needs CLS_AGNOSTIC_BBOX_REG).
_C.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
# 3x3 convs (each conv, norm, ReLU) before the box head's fully connected layers, and their width: 0 is
# the 2fc head; NUM_CONV 4 with NUM_FC 1 is Detectron2's "4conv1fc" head.
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
# Norm after each conv of the box head: "" (none), "BN", "SyncBN" (statistics over all processes) or "GN"
# (MODEL.BACKBONE.GN_GROUPS groups).
_C.MODEL.ROI_BOX_HEAD.NORM = ""
# One box regression for all classes (4 outputs) instead of one per class (4 (K + 1)); the cascade's stages
# regress class-agnostic boxes (Detectron2 requires it there too).
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
# Norm after each 3x3 conv of the mask head, as ROI_BOX_HEAD.NORM.
_C.MODEL.ROI_MASK_HEAD.NORM = ""
# Norm after the FPN's lateral and output convs, as ROI_BOX_HEAD.NORM (Detectron2's FPN.NORM).
_C.MODEL.FPN.NORM = ""
# 3x3 convs (with ReLU) of the RPN head before its two 1x1 predictors (Detectron2's new baselines: 2).
_C.MODEL.RPN.NUM_CONV = 1
_C.MODEL.ROI_BOX_CASCADE_HEAD = CN()
# The stages' foreground IoU thresholds (training); the first must equal MODEL.ROI_HEADS.IOU_THRESHOLDS[0].
# Stage k > 0 trains on stage k-1's regressed boxes (all of them, no new sampling), labelled at IOUS[k].
_C.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = (0.5, 0.6, 0.7)
# Box-delta weights (wx, wy, ww, wh) of each stage: finer boxes, larger weights (the paper's and
# Detectron2's values: the deltas' spread shrinks stage by stage). One entry per stage of IOUS.
_C.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0),
                                                   (30.0, 30.0, 15.0, 15.0))




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
# Training length in epochs (passes over the training images) instead: when > 0, MAX_ITER is set at
# start-up to ceil(MAX_EPOCHS * training images / IMS_PER_BATCH) (images counted after
# DATASETS.FILTER_EMPTY_ANNOTATIONS), and the resolved value is saved in config.yaml and checkpoints.
# 0 uses MAX_ITER as given. For datasets whose size is not fixed in advance (your own).
_C.SOLVER.MAX_EPOCHS = 0.0
# Learning rate schedule: "WarmupMultiStepLR" (divide by GAMMA at each of STEPS) or "WarmupCosineLR".
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
# Iterations at which the lr is multiplied by GAMMA.
_C.SOLVER.STEPS = (60000, 80000)
# The lr steps as fractions of the training length instead, e.g. (0.75, 0.92): when given, STEPS is
# set at start-up to round(fraction * MAX_ITER) for each. () uses STEPS as given.
_C.SOLVER.STEPS_FRACTIONS = ()
_C.SOLVER.GAMMA = 0.1
# Warm-up: the lr starts at BASE_LR * WARMUP_FACTOR and reaches BASE_LR after WARMUP_ITERS steps.
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
_C.SOLVER.WARMUP_ITERS = 1000
# "linear" ramps up; "constant" holds BASE_LR * WARMUP_FACTOR (the paper's 0.01 start for ResNet-110).
_C.SOLVER.WARMUP_METHOD = "linear"
# Save a checkpoint every this many iterations (and always at the end); 0: only at the end.
_C.SOLVER.CHECKPOINT_PERIOD = 5000
# Save a checkpoint every this fraction of training instead (0.25: at 25%, 50%, 75% and the end); when
# > 0 it sets CHECKPOINT_PERIOD at start-up. 0 uses CHECKPOINT_PERIOD as given.
_C.SOLVER.CHECKPOINT_PERIOD_FRACTION = 0.0
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
# --- fast training step (resdet/engine/static_step.py) ---
# The training step: "eager" (the plain loop), "compiled" (torch.compile of the forward/backward and the
# update; CUDA graphs through "reduce-overhead" on a GPU) or "cuda_graph" (the whole step captured in one
# CUDA graph and replayed; GPU only). The last two: SGD, AMP "" or "bf16", one process, fixed batch
# shapes; the lr follows the schedule on the device and losses are read once per LOG_PERIOD.
_C.SOLVER.STEP_MODE = "eager"

# ----------------------------------------------------------------------------------------------------
# Test / evaluation
# ----------------------------------------------------------------------------------------------------
_C.TEST = CN()
# Evaluate every this many iterations during training; 0 only at the end.
_C.TEST.EVAL_PERIOD = 0
# Evaluate every this fraction of training instead (0.25: at 25%, 50%, 75% and the end); when > 0 it
# sets EVAL_PERIOD at start-up (detection training). 0 uses EVAL_PERIOD as given.
_C.TEST.EVAL_PERIOD_FRACTION = 0.0
# Detection: at most this many detections per image (the highest scoring) after NMS.
_C.TEST.DETECTIONS_PER_IMAGE = 100
# A predicted mask probability above this counts as inside the mask (evaluation, drawing).
_C.TEST.MASK_THRESHOLD = 0.5
# Images per batch per process at test time.
_C.TEST.IMS_PER_BATCH = 1
# Detections drawn by tools/demo.py and the predictor's pictures: those scoring at least this.
_C.TEST.VIS_SCORE_THRESHOLD = 0.5
# COCOeval implementation: "pycocotools" (the reference) or "faster_coco_eval" (faster-coco-eval's C++
# port, same numbers, much faster on large sets; `pip install faster-coco-eval`).
_C.TEST.COCO_EVAL_BACKEND = "pycocotools"
# --- per-class deploy thresholds (tools/analyze.py finds them; resdet/predictor.py applies them) ---
# One score threshold per class, in label order (categories sorted by id): the predictor, tools/demo.py
# and exported models' metadata keep a detection when its score is at least its class's value. Empty:
# TEST.VIS_SCORE_THRESHOLD for every class. tools/analyze.py prints the line that sets the thresholds of
# best F1. COCO evaluation never reads it (AP is measured over all detections).
_C.TEST.SCORE_THRESH_PER_CLASS = []

# --- test-time augmentation (resdet/detection/tta.py): tools/eval.py, the predictor, tools/predict.py ---
_C.TEST.AUG = CN()
# See every test image at several scales (and mirrored) and merge the detections; several times slower
# (one model pass per view). Training's periodic evaluations never use it.
_C.TEST.AUG.ENABLED = False
# Shorter sides of the views; () = INPUT.MIN_SIZE_TRAIN, the scales the model was trained at (views far
# outside them tend to lower AP). Views are resized from the image the test-time resize gives.
_C.TEST.AUG.MIN_SIZES = ()
# Longer-side cap of the views; 0 = INPUT.MAX_SIZE_TRAIN.
_C.TEST.AUG.MAX_SIZE = 0
# Add the mirror image of every view.
_C.TEST.AUG.FLIP = True
# How the views' boxes are merged per image and class: "nms" (the best of overlapping boxes, at
# MODEL.ROI_HEADS.NMS_THRESH_TEST; Detectron2's) or "vote" (then each kept box becomes the score-weighted
# mean of the boxes overlapping it by TEST.AUG.VOTE_IOU or more: box voting).
_C.TEST.AUG.MERGE = "nms"
# IoU at which boxes take part in a kept box's vote (MERGE "vote").
_C.TEST.AUG.VOTE_IOU = 0.8

# ----------------------------------------------------------------------------------------------------
# Datasets and input pipeline (detection: DATASETS, INPUT): resdet/data adds them here.
# ----------------------------------------------------------------------------------------------------
_C.DATASETS = CN()
# Names of registered datasets (resdet/data/catalog.py) to train on (concatenated) and to evaluate on:
# "coco_2017_train", "coco_2017_val" (under $RESDET_DATASETS/coco, default ./datasets/coco),
# "shapes_train", "shapes_val" (generated on first use, see DATASETS.SHAPES), or a name given in
# DATASETS.CUSTOM_NAMES.
_C.DATASETS.TRAIN = ("coco_2017_train",)
_C.DATASETS.TEST = ("coco_2017_val",)
# Custom COCO-format datasets: parallel lists of names, annotation JSON paths and image folders.
# Each name becomes usable in DATASETS.TRAIN / DATASETS.TEST.
_C.DATASETS.CUSTOM_NAMES = []
_C.DATASETS.CUSTOM_JSONS = []
_C.DATASETS.CUSTOM_IMAGE_DIRS = []
# Leave out training images that have no (non-crowd) annotation, as Detectron2 does by default.
_C.DATASETS.FILTER_EMPTY_ANNOTATIONS = True
# How images are checked when a dataset is loaded: "none" (the file exists), "header" (also its size,
# EXIF orientation applied, matches the JSON; cheap), "decode" (also decodes every image whole; slow
# on COCO, thorough). Every image read for training or evaluation is also checked as it is decoded.
_C.DATASETS.CHECK_IMAGES = "header"
# A non-crowd instance whose segmentation is missing, null or [] when masks are needed (MODEL.MASK_ON
# training, segm evaluation): "error" stops with the annotation ids; "ignore" treats it as a crowd
# region there (left out of training, an ignore region in segm evaluation) with a warning and a count.
# Boxes-only models and bbox evaluation use such instances as they are. datasets/README.md lists all checks.
_C.DATASETS.INSTANCES_WITHOUT_MASK = "error"
# The generated quick-start dataset (resdet/data/shapes.py).
_C.DATASETS.SHAPES = CN()
# Where it is cached: "" = the datasets root ($RESDET_DATASETS/shapes, else ./datasets/shapes).
_C.DATASETS.SHAPES.ROOT = ""
# Images in shapes_train and shapes_val.
_C.DATASETS.SHAPES.NUM_TRAIN = 300
_C.DATASETS.SHAPES.NUM_VAL = 50
# Each image's height and width are drawn from [MIN_SIDE, MAX_SIDE] pixels.
_C.DATASETS.SHAPES.MIN_SIDE = 128
_C.DATASETS.SHAPES.MAX_SIDE = 256
# Generation seed: the same seed (and settings) always gives the same files.
_C.DATASETS.SHAPES.SEED = 0

_C.INPUT = CN()
# Training: the shorter side is resized to one of these (drawn per image; multi-scale training),
# the longer side capped at MAX_SIZE_TRAIN.
_C.INPUT.MIN_SIZE_TRAIN = (640, 672, 704, 736, 768, 800)
_C.INPUT.MAX_SIZE_TRAIN = 1333
# Test: the shorter side is resized to this, the longer side capped at MAX_SIZE_TEST.
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
# How a resized side is rounded to whole pixels: "round" (Detectron2) or "floor" (torchvision's
# GeneralizedRCNNTransform; the configs/torchvision presets use it so that inputs match torchvision's).
_C.INPUT.RESIZE_ROUNDING = "round"
# How the shortest-edge resize (training, test loader, predictor) computes pixels: "opencv" (cv2 bilinear
# on the uint8 image: fast) or "torch" (torchvision's GeneralizedRCNNTransform arithmetic: F.interpolate
# bilinear, align_corners False, on the float 0-1 image, kept as float; with RESIZE_ROUNDING "floor" the
# same call as torchvision's, so converted torchvision weights see its pixels). LSJ training uses OpenCV.
_C.INPUT.RESIZE_BACKEND = "opencv"
# Probability of a horizontal flip in training (0 turns flipping off).
_C.INPUT.RANDOM_FLIP_PROB = 0.5
# Large-scale jitter (Ghiasi et al. 2021) instead of the multi-scale resize.
_C.INPUT.LSJ = CN()
# On/off; then the image is resized to fit IMAGE_SIZE x IMAGE_SIZE times a random factor in SCALE_RANGE
# (one resize), and a random IMAGE_SIZE x IMAGE_SIZE window of it is taken, padded at the bottom/right
# where the image is smaller: every training image is IMAGE_SIZE x IMAGE_SIZE.
_C.INPUT.LSJ.ENABLED = False
_C.INPUT.LSJ.IMAGE_SIZE = 1024
_C.INPUT.LSJ.SCALE_RANGE = (0.1, 2.0)
# --- LSJ as Detectron2's new baselines (resdet/data/transforms.py) ---
# Pixel value (0-255, every channel) of the padding that fills an image smaller than IMAGE_SIZE up to the
# square, as Detectron2's FixedSizeCrop pads (128).
_C.INPUT.LSJ.PAD_VALUE = 128.0
# With masks (MODEL.MASK_ON), each box becomes its cropped mask's tight box, and instances whose mask the
# crop emptied are dropped (Detectron2's recompute_boxes); False keeps the boxes clipped to the crop.
_C.INPUT.LSJ.RECOMPUTE_BOXES = True
# Batch training images of similar aspect ratio (wide with wide, tall with tall): less padding.
_C.INPUT.ASPECT_RATIO_GROUPING = True


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
# Subtract the training set's mean image (per pixel, as the paper's CIFAR experiments do) instead of the
# per-channel MODEL.PIXEL_MEAN. It is computed once from the training images (after HOLDOUT and
# TRAIN_LIMIT), kept in the model as a buffer (so checkpoints and --eval-only carry it), and padding
# is zero after subtraction, as in the paper. Needs IN_MEMORY and images of CLS.INPUT.CROP_SIZE.
_C.CLS.DATA.PER_PIXEL_MEAN = False
# Hold this many training images out as a validation set (the paper's 45k/5k CIFAR split: 5000); they
# are drawn with a fixed seed, removed from training, and evaluated as "val" besides the test split.
_C.CLS.DATA.HOLDOUT = 0
# Use only the first N images (after a fixed-seed shuffle) of the training / test set; 0 uses all.
# For quick experiments and tests.
_C.CLS.DATA.TRAIN_LIMIT = 0
_C.CLS.DATA.TEST_LIMIT = 0
# How streamed training images ("scale" and "rrc" augmentation) are decoded. "cpu": in DataLoader
# workers, each JPEG at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the sampled crop at least
# CROP_SIZE, then crop, resize, flip, uint8 batches (about 2x torchvision's standard pipeline per core).
# "gpu": workers only read bytes and sample the crop boxes; batches are decoded with nvJPEG
# (torchvision.io.decode_jpeg) and cropped/resized/flipped on MODEL.DEVICE (non-JPEG and unusual JPEGs
# are decoded by the workers). "pil": the textbook per-image PIL pipeline (what RANDAUGMENT always uses).
_C.CLS.DATA.DECODE = "cpu"
# Batches each DataLoader worker keeps ready (torch's prefetch_factor). Each worker makes whole batches,
# so two (one being consumed, one ready) keep it busy; more only adds memory.
_C.CLS.DATA.PREFETCH_FACTOR = 2

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
# --- detection loaders on the CPU (issue 25) ---
# Workers when MODEL.DEVICE is the CPU (-1: NUM_WORKERS). On a CPU the workers' decoding takes cycles
# from the cores the training step runs on, and decoding a batch of photos costs about 1% of a CPU step
# (4 photos of ~400 px: 13 ms, the scratch recipe's step 4-8 CPU s), so 0 (decode in the training
# process) loses nothing, starts no processes and keeps a resumed run's augmentation exact.
_C.DATALOADER.NUM_WORKERS_ON_CPU = -1
# A missing, undecodable or mis-sized training image stops the run with an error naming the file
# (False). True reports it instead (a warning naming the file, and the count) and trains without it:
# detection drops it when the dataset is loaded, or takes the next image if it breaks mid-run;
# streamed classification takes the next image. Evaluation never skips: a test image that cannot be
# read is always an error, so that scores stay comparable.
_C.DATALOADER.SKIP_BAD_IMAGES = False

# ----------------------------------------------------------------------------------------------------
# Distributed runs (resdet/engine/distributed.py)
# ----------------------------------------------------------------------------------------------------
_C.DIST = CN()
# Minutes a collective waits for a rank that never arrives before the process group gives up. A rank
# that fails or is killed ends a torchrun job at once (torchrun stops the others); this bounds the wait
# only where the launcher does not stop them.
_C.DIST.TIMEOUT_MINUTES = 30.0
# --- new-baselines recipe (engine/build.py prepare_model) ---
# All-reduce DDP's gradients in fp16 (torch's fp16_compress_hook: half the traffic; the gradients are
# rounded to fp16 on the way and averaged there): Detectron2's ddp.fp16_compression of its new baselines.
_C.DIST.FP16_COMPRESSION = False

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
# cuDNN autotuning: time every convolution algorithm for each new input shape and keep the fastest.
# Pays only when shapes repeat (fixed-size classification crops); detection refuses it, because its
# shapes change every step (image sizes, the mask head's RoI count) and it would re-tune nearly every
# step (5x slower measured). Cannot be combined with CUDNN_DETERMINISTIC.
_C.CUDNN_BENCHMARK = False
# Log training metrics every this many iterations.
_C.LOG_PERIOD = 20
