"""State-dict conversion from torchvision's detection models (and plain torchvision / timm ResNets)
into resdet's GeneralizedRCNN, and the COCO label mapping between torchvision's 91 indices and a
dataset's contiguous labels."""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["convert_torchvision_detection", "convert_resnet_backbone", "remap_classes",
           "torchvision_coco_class_indices"]

# torchvision name pattern -> resdet name (applied in order, first match wins)
_DETECTION_RULES = [
    (r"^backbone\.body\.(.*)$", r"backbone.\1"),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.(weight|bias)$", r"fpn.lateral_convs.\1.\2"),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.(weight|bias)$", r"fpn.lateral_convs.\1.\2"),  # torchvision < 0.13
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.(weight|bias)$", r"fpn.output_convs.\1.\2"),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.(weight|bias)$", r"fpn.output_convs.\1.\2"),
    (r"^rpn\.head\.conv\.0\.0\.(weight|bias)$", r"rpn.head.conv.\1"),
    (r"^rpn\.head\.conv\.(weight|bias)$", r"rpn.head.conv.\1"),
    (r"^rpn\.head\.cls_logits\.(weight|bias)$", r"rpn.head.objectness_logits.\1"),
    (r"^rpn\.head\.bbox_pred\.(weight|bias)$", r"rpn.head.anchor_deltas.\1"),
    (r"^roi_heads\.box_head\.fc6\.(weight|bias)$", r"roi_heads.box_head.fcs.0.\1"),
    (r"^roi_heads\.box_head\.fc7\.(weight|bias)$", r"roi_heads.box_head.fcs.1.\1"),
    (r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$", r"roi_heads.box_predictor.\1.\2"),
    (r"^roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)$", r"roi_heads.mask_head.convs.\1.\2"),
    (r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$", None),  # old names, handled below
    (r"^roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)$", r"roi_heads.mask_head.deconv.\1"),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)$", r"roi_heads.mask_head.predictor.\1"),
]


def _strip_wrappers(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    for key in ("model", "state_dict"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def convert_torchvision_detection(state_dict: Dict[str, Tensor],
                                  class_indices: Optional[Sequence[int]] = None) -> Dict[str, Tensor]:
    """A torchvision Faster/Mask R-CNN (R50-FPN) state dict in resdet's names.

    `class_indices` (optional) picks the predictor rows to keep, background first: e.g.
    `torchvision_coco_class_indices(category_ids)` turns torchvision's 91 COCO outputs into a
    dataset's contiguous labels 1..K. BatchNorm's `num_batches_tracked` counters are dropped (the
    backbone's norms are frozen). An unknown key is an error, naming the key.
    """
    state_dict = _strip_wrappers(state_dict)
    out: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        m_old = re.match(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$", key)
        if m_old:
            out[f"roi_heads.mask_head.convs.{int(m_old.group(1)) - 1}.{m_old.group(2)}"] = value
            continue
        for pattern, repl in _DETECTION_RULES:
            if repl is not None and re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            raise KeyError(f"convert_torchvision_detection: no rule for torchvision key '{key}'; is this a "
                           "Faster/Mask R-CNN ResNet-FPN checkpoint (fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn)?")
    if class_indices is not None:
        out = remap_classes(out, class_indices)
    return out


def convert_resnet_backbone(state_dict: Dict[str, Tensor], prefix: str = "backbone.") -> Dict[str, Tensor]:
    """A torchvision or timm ResNet classifier's state dict as the detection model's backbone weights:
    the parameter names already match (conv1, bn1, layer1.0.conv1, ...); `fc` is dropped."""
    state_dict = _strip_wrappers(state_dict)
    out = {}
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        if not re.match(r"^(conv1|bn1|layer[1-4])\.", key):
            raise KeyError(f"convert_resnet_backbone: '{key}' is not a torchvision/timm ResNet parameter")
        out[prefix + key] = value
    return out


def torchvision_coco_class_indices(category_ids: Sequence[int]) -> List[int]:
    """Predictor rows for a COCO-style dataset whose contiguous labels 1..K follow its sorted category
    ids: torchvision's COCO models use the category id itself as the class index (1..90, 91 outputs,
    with gaps), so label k takes row sorted_ids[k-1]; row 0 (background) stays first."""
    ids = sorted(int(c) for c in category_ids)
    bad = [c for c in ids if not 1 <= c <= 90]
    if bad:
        raise ValueError(f"COCO category ids must be in 1..90 to map onto torchvision's outputs; got {bad}")
    return [0] + ids


def remap_classes(state_dict: Dict[str, Tensor], class_indices: Sequence[int]) -> Dict[str, Tensor]:
    """Keep predictor rows `class_indices` (background first) of the box classifier, box regressor and
    mask logits, in that order."""
    idx = torch.as_tensor(list(class_indices), dtype=torch.int64)
    out = dict(state_dict)
    for key in ("roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias",
                "roi_heads.mask_head.predictor.weight", "roi_heads.mask_head.predictor.bias"):
        if key in out:
            if int(idx.max()) >= out[key].shape[0]:
                raise ValueError(f"class index {int(idx.max())} is out of range for '{key}' with "
                                 f"{out[key].shape[0]} rows")
            out[key] = out[key][idx]
    box_rows = (idx[:, None] * 4 + torch.arange(4)[None, :]).reshape(-1)
    for key in ("roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias"):
        if key in out:
            out[key] = out[key][box_rows]
    return out
