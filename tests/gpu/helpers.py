"""Models and inputs shared by the GPU acceptance checks."""
import os

import torch

from resdet.config import load_config
from resdet.detection.rcnn import build_detection_model

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
R50_MASK = os.path.join(CONFIGS, "torchvision", "maskrcnn_resnet50_fpn.yaml")
SHAPES = os.path.join(CONFIGS, "quickstart_shapes.yaml")


def detector(config=R50_MASK, *overrides, seed=0, num_classes=3):
    """A detection model with seeded random weights (ROI_HEADS.NUM_CLASSES `num_classes`; every
    candidate kept at test time, so that outputs are not empty)."""
    cfg = load_config(config, ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", num_classes,
                               "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, *overrides])
    torch.manual_seed(seed)
    return build_detection_model(cfg), cfg


def photo_inputs(batch, height, width, device, boxes=5, num_classes=3, masks=True, seed=0):
    """Photographs (float 0-255) with random boxes and box-shaped masks, on `device`."""
    from resdet.benchmarks.detection import synthetic_batch

    return synthetic_batch(batch, height, width, boxes, num_classes + 1, masks, str(device), seed=seed)


def by_score(out):
    order = out["scores"].argsort(descending=True)
    return {k: v[order] for k, v in out.items()}


def assert_same_detections(a, b, box_atol, score_atol, mask_atol=None, top=50):
    """The `top` highest-scoring detections agree: labels equal, boxes / scores (and mask probabilities)
    within the tolerances. Near-ties beyond `top` may order differently on another device or layout."""
    a, b = by_score({k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in a.items()}), \
        by_score({k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in b.items()})
    assert len(a["scores"]) == len(b["scores"]) > 0
    n = min(top, len(a["scores"]))
    assert torch.equal(a["labels"][:n], b["labels"][:n])
    torch.testing.assert_close(a["scores"][:n], b["scores"][:n], rtol=0, atol=score_atol)
    torch.testing.assert_close(a["boxes"][:n], b["boxes"][:n], rtol=0, atol=box_atol)
    if mask_atol is not None and "masks" in a:
        torch.testing.assert_close(a["masks"][:n], b["masks"][:n], rtol=0, atol=mask_atol)
