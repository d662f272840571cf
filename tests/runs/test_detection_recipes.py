"""The published detection recipes, choice for choice, and a few training steps of each on the CPU.

The resolved configs are compared key by key with what the sources set (Detectron2's
configs/new_baselines/mask_rcnn_R_{50,101}_FPN_{100,200,400}ep_LSJ.py with the common files they import,
COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml, Misc/cascade_mask_rcnn_R_50_FPN_{1x,3x}.yaml on
Base-RCNN-FPN.yaml); then each distinct recipe trains two steps through tools/train_det.py's main at tiny
size (64 px images of the generated shapes, narrow FPN and heads, float32; the recipe's backbone, norms,
head shapes, augmentation and schedule kind as they are; no evaluation: the heads' inference is tested in
tests/detection and tests/export). The 200/400-epoch files differ from the
100-epoch one only in their schedule (checked), and the R101/R152 cascades from the R50 one only in depth.
"""
import os

import pytest
import torch

from resdet.config import load_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIGS = os.path.join(ROOT, "configs")

# Detectron2's R50-FPN as every recipe below has it (Base-RCNN-FPN.yaml / common/models/mask_rcnn_fpn.py)
R50_FPN = {
    "MODEL.MASK_ON": True, "MODEL.ROI_HEADS.NUM_CLASSES": 80, "MODEL.FPN.OUT_CHANNELS": 256,
    "MODEL.ANCHOR_GENERATOR.SIZES": [[32], [64], [128], [256], [512]],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.RPN.IOU_THRESHOLDS": [0.3, 0.7], "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 256, "MODEL.RPN.POSITIVE_FRACTION": 0.5,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 2000, "MODEL.RPN.PRE_NMS_TOPK_TEST": 1000, "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
    "MODEL.RPN.NMS_THRESH": 0.7,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512, "MODEL.ROI_HEADS.POSITIVE_FRACTION": 0.25,
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.5], "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.05,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": 0.5, "TEST.DETECTIONS_PER_IMAGE": 100,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2", "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 0, "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": [10.0, 10.0, 5.0, 5.0],
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlignV2", "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": 14,
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 4, "MODEL.ROI_MASK_HEAD.CONV_DIM": 256,
    "INPUT.MIN_SIZE_TEST": 800, "INPUT.MAX_SIZE_TEST": 1333,
    "DATASETS.TRAIN": ["coco_2017_train"], "DATASETS.TEST": ["coco_2017_val"],
    "SOLVER.OPTIMIZER": "SGD", "SOLVER.MOMENTUM": 0.9, "SOLVER.NESTEROV": False, "SOLVER.WEIGHT_DECAY_NORM": 0.0,
    "SOLVER.LR_SCHEDULER_NAME": "WarmupMultiStepLR", "SOLVER.GAMMA": 0.1, "SOLVER.WARMUP_METHOD": "linear",
}

# configs/new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py
NEW_BASELINE_100EP = {
    **R50_FPN,
    "MODEL.WEIGHTS": "", "MODEL.BACKBONE.WEIGHTS": "", "MODEL.BACKBONE.FREEZE_AT": 0,  # from scratch
    "MODEL.BACKBONE.NAME": "resnet50", "MODEL.BACKBONE.VARIANT": "v1",  # stride_in_1x1=True
    "MODEL.BACKBONE.NORM": "SyncBN", "MODEL.FPN.NORM": "SyncBN",
    "MODEL.ROI_BOX_HEAD.NORM": "SyncBN", "MODEL.ROI_MASK_HEAD.NORM": "SyncBN",
    "MODEL.RPN.NUM_CONV": 2,  # conv_dims [-1, -1]
    "MODEL.ROI_BOX_HEAD.NUM_CONV": 4, "MODEL.ROI_BOX_HEAD.CONV_DIM": 256, "MODEL.ROI_BOX_HEAD.NUM_FC": 1,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 1024, "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 1000, "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
    "INPUT.LSJ.ENABLED": True, "INPUT.LSJ.IMAGE_SIZE": 1024, "INPUT.LSJ.SCALE_RANGE": [0.1, 2.0],
    "INPUT.LSJ.PAD_VALUE": 128.0, "INPUT.LSJ.RECOMPUTE_BOXES": True, "INPUT.RANDOM_FLIP_PROB": 0.5,
    "SOLVER.IMS_PER_BATCH": 64, "SOLVER.WEIGHT_DECAY": 4e-5,
    "SOLVER.MAX_ITER": 184375, "SOLVER.STEPS": [163889, 177546],
    "SOLVER.WARMUP_ITERS": 500, "SOLVER.WARMUP_FACTOR": 0.067, "SOLVER.AMP": "fp16", "DIST.FP16_COMPRESSION": True,
}
# Detectron2's lr is 0.1 for 64 images; resdet's effective lr is BASE_LR * IMS_PER_BATCH / REFERENCE_WORLD_BATCH
NEW_BASELINE_LR = 0.1


def _schedule(factor):
    return {"SOLVER.MAX_ITER": 184375 * factor, "SOLVER.STEPS": [163889 * factor, 177546 * factor]}


# Misc/cascade_mask_rcnn_R_50_FPN_{1x,3x}.yaml and the CascadeROIHeads defaults they rely on
CASCADE = {"MODEL.ROI_HEADS.NAME": "CascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True,
           "MODEL.RPN.POST_NMS_TOPK_TRAIN": 2000, "MODEL.ROI_BOX_CASCADE_HEAD.IOUS": [0.5, 0.6, 0.7],
           "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS": [[10.0, 10.0, 5.0, 5.0], [20.0, 20.0, 10.0, 10.0],
                                                          [30.0, 30.0, 15.0, 15.0]]}
COCO_1X = {**R50_FPN, "MODEL.BACKBONE.NORM": "FrozenBN", "MODEL.BACKBONE.FREEZE_AT": 2,
           "MODEL.ROI_BOX_HEAD.NUM_CONV": 0, "MODEL.ROI_BOX_HEAD.NUM_FC": 2, "MODEL.ROI_BOX_HEAD.FC_DIM": 1024,
           "INPUT.MIN_SIZE_TRAIN": [640, 672, 704, 736, 768, 800], "INPUT.MAX_SIZE_TRAIN": 1333,
           "INPUT.LSJ.ENABLED": False, "SOLVER.IMS_PER_BATCH": 16, "SOLVER.WEIGHT_DECAY": 1e-4,
           "SOLVER.MAX_ITER": 90000, "SOLVER.STEPS": [60000, 80000], "SOLVER.WARMUP_ITERS": 1000,
           "SOLVER.WARMUP_FACTOR": 0.001}
COCO_3X = {**COCO_1X, "SOLVER.MAX_ITER": 270000, "SOLVER.STEPS": [210000, 250000]}
COCO_LR = 0.02  # for 16 images

PUBLISHED = {
    "new_baselines/mask_rcnn_r50_fpn_100ep_lsj.yaml": (NEW_BASELINE_100EP, NEW_BASELINE_LR),
    "new_baselines/mask_rcnn_r50_fpn_200ep_lsj.yaml": ({**NEW_BASELINE_100EP, **_schedule(2)}, NEW_BASELINE_LR),
    "new_baselines/mask_rcnn_r50_fpn_400ep_lsj.yaml": ({**NEW_BASELINE_100EP, **_schedule(4)}, NEW_BASELINE_LR),
    "new_baselines/mask_rcnn_r101_fpn_100ep_lsj.yaml": ({**NEW_BASELINE_100EP, "MODEL.BACKBONE.NAME": "resnet101"},
                                                        NEW_BASELINE_LR),
    "new_baselines/mask_rcnn_r101_fpn_200ep_lsj.yaml": ({**NEW_BASELINE_100EP, **_schedule(2),
                                                         "MODEL.BACKBONE.NAME": "resnet101"}, NEW_BASELINE_LR),
    "new_baselines/mask_rcnn_r101_fpn_400ep_lsj.yaml": ({**NEW_BASELINE_100EP, **_schedule(4),
                                                         "MODEL.BACKBONE.NAME": "resnet101"}, NEW_BASELINE_LR),
    "coco_r50_3x.yaml": ({**COCO_3X, "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
                          "MODEL.RPN.POST_NMS_TOPK_TRAIN": 1000}, COCO_LR),
    "coco_r50_cascade_3x.yaml": ({**COCO_3X, **CASCADE}, COCO_LR),
    "coco_r50_cascade.yaml": ({**COCO_1X, **CASCADE}, COCO_LR),
    "coco_r101_cascade.yaml": ({**COCO_1X, **CASCADE, "MODEL.BACKBONE.NAME": "resnet101"}, COCO_LR),
    "coco_r152_cascade.yaml": ({**COCO_1X, **CASCADE, "MODEL.BACKBONE.NAME": "resnet152"}, COCO_LR),
}


def _value(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _plain(v):
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


@pytest.mark.parametrize("config", sorted(PUBLISHED))
def test_resolved_config_makes_the_published_choices(config):
    from resdet.engine.schedules import build_lr_scheduler, build_optimizer

    expected, lr = PUBLISHED[config]
    cfg = load_config(os.path.join(CONFIGS, config))
    wrong = {k: (_plain(_value(cfg, k)), v) for k, v in expected.items() if _plain(_value(cfg, k)) != v}
    assert not wrong, f"{config}: key -> (resolved, published): {wrong}"
    # the lr the optimizer gets (linear scaling by REFERENCE_WORLD_BATCH), after warm-up and at the start of it
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr * cfg.SOLVER.WARMUP_FACTOR)
    after_warmup = sched.lr_tensor(torch.tensor(cfg.SOLVER.WARMUP_ITERS))
    assert float(after_warmup[0]) == pytest.approx(lr)
    after_first_drop = sched.lr_tensor(torch.tensor(cfg.SOLVER.STEPS[0]))
    assert float(after_first_drop[0]) == pytest.approx(lr * 0.1)


TINY = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.WEIGHTS", "", "MODEL.ROI_HEADS.NUM_CLASSES", 3,
        "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.CONV_DIM", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
        "MODEL.ROI_MASK_HEAD.CONV_DIM", 32, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 100,
        "MODEL.RPN.PRE_NMS_TOPK_TEST", 100, "MODEL.RPN.POST_NMS_TOPK_TEST", 50, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64,
        "DATASETS.TRAIN", ("shapes_train",), "DATASETS.TEST", (), "DATASETS.SHAPES.NUM_TRAIN", 4,
        "DATASETS.SHAPES.NUM_VAL", 2, "DATASETS.SHAPES.MIN_SIDE", 64, "DATASETS.SHAPES.MAX_SIDE", 80,
        "DATASETS.CHECK_IMAGES", "none", "INPUT.LSJ.IMAGE_SIZE", 64, "INPUT.MIN_SIZE_TRAIN", (64,),
        "INPUT.MAX_SIZE_TRAIN", 96, "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 96,
        "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2, "SOLVER.STEPS", (1,), "SOLVER.WARMUP_ITERS", 1,
        "SOLVER.CHECKPOINT_PERIOD", 2, "TEST.EVAL_PERIOD", 0, "DATALOADER.NUM_WORKERS", 0, "LOG_PERIOD", 1,
        # fp16 autocast is emulated on a CPU, several times slower than float32; the recipes' AMP is checked above
        "SOLVER.AMP", ""]


# one run per distinct recipe: the R101 and 200/400-epoch files differ from these only in depth or schedule
# (test_longer_new_baselines_differ_only_in_their_schedule; the R101/R152 cascades' choices, depth included,
# by test_resolved_config_makes_the_published_choices)
@pytest.mark.parametrize("config", ["new_baselines/mask_rcnn_r50_fpn_100ep_lsj.yaml", "coco_r50_3x.yaml",
                                    "coco_r50_cascade_3x.yaml"])
def test_recipe_trains_a_few_steps_on_the_cpu(config, tmp_path, monkeypatch, one_thread):
    from resdet.engine.checkpoint import load_checkpoint
    from resdet.engine.logging import read_metrics
    from resdet.runs.train_det import main

    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path / "datasets"))
    out = tmp_path / "out"
    main([os.path.join(CONFIGS, config), *map(str, TINY), "OUTPUT_DIR", str(out)])
    lines = [r for r in read_metrics(str(out / "metrics.jsonl")) if "total_loss" in r]
    assert [r["iteration"] for r in lines] == [1, 2] and all(r["total_loss"] > 0 for r in lines)
    saved, published = load_config(str(out / "config.yaml")), load_config(os.path.join(CONFIGS, config))
    for key in ("MODEL.BACKBONE.NAME", "MODEL.BACKBONE.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_HEADS.NAME",
                "INPUT.LSJ.ENABLED", "MODEL.RPN.NUM_CONV", "DIST.FP16_COMPRESSION"):
        assert _value(saved, key) == _value(published, key), key
    state = load_checkpoint(str(out / "model_final.pth"))["model"]
    expected, _ = PUBLISHED[config]
    if expected.get("MODEL.ROI_BOX_HEAD.NORM") == "SyncBN":  # SyncBN statistics in the box and mask heads and FPN
        assert {"roi_heads.box_head.convs.3.1.running_mean", "roi_heads.mask_head.convs.0.1.running_mean",
                "fpn.output_convs.0.1.running_mean", "rpn.head.conv.2.weight"} <= set(state)
    if expected["MODEL.ROI_HEADS.NAME"] == "CascadeROIHeads":
        assert {f"roi_heads.box_predictors.{k}.bbox_pred.weight" for k in range(3)} <= set(state)
        assert state["roi_heads.box_predictors.2.bbox_pred.weight"].shape[0] == 4  # class-agnostic


def test_longer_new_baselines_differ_only_in_their_schedule():
    base = load_config(os.path.join(CONFIGS, "new_baselines/mask_rcnn_r50_fpn_100ep_lsj.yaml"))
    from resdet.config.node import flatten_keys

    for name in ("mask_rcnn_r50_fpn_200ep_lsj.yaml", "mask_rcnn_r50_fpn_400ep_lsj.yaml",
                 "mask_rcnn_r101_fpn_100ep_lsj.yaml"):
        cfg = load_config(os.path.join(CONFIGS, "new_baselines", name))
        differ = {k for k in flatten_keys(cfg) if _value(cfg, k) != _value(base, k)}
        assert differ <= {"SOLVER.MAX_ITER", "SOLVER.STEPS", "OUTPUT_DIR", "MODEL.BACKBONE.NAME"}, (name, differ)
