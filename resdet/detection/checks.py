"""Input checks for the detection models: each failure says which image or target is wrong, what it
got, and what was expected (the model would otherwise fail deep inside with a shape error)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["check_images", "check_targets"]


def check_images(images) -> None:
    if isinstance(images, Tensor) and images.dim() == 4:
        return  # a batch tensor [N, C, H, W] is accepted as N images
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise ValueError(f"images must be a non-empty list of CHW float tensors; got {type(images).__name__}"
                         + (" of length 0" if isinstance(images, (list, tuple)) else ""))
    for i, im in enumerate(images):
        if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3:
            shape = tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__
            raise ValueError(f"images[{i}] must be a [3, H, W] RGB tensor (0-255); got {shape}")
        if not im.is_floating_point():
            raise ValueError(f"images[{i}] must be a float tensor with values in 0-255; got dtype {im.dtype} "
                             "(convert with .float())")


def check_targets(targets: Optional[Sequence[Dict[str, Tensor]]], images, num_classes: int, mask_on: bool) -> None:
    """Validate training targets against the images (one dict per image)."""
    n = len(images)
    if targets is None:
        raise ValueError("in training mode the model needs targets: a list with one dict per image "
                         "(boxes [N, 4] float xyxy, labels [N] int64 in 1..K" + (", masks [N, H, W] uint8" if mask_on else "") + ")")
    if not isinstance(targets, (list, tuple)) or len(targets) != n:
        got = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"expected one target dict per image ({n} images); got {got}")
    for i, (t, im) in enumerate(zip(targets, images)):
        if not isinstance(t, dict):
            raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels'; got {type(t).__name__}")
        for key in ("boxes", "labels") + (("masks",) if mask_on else ()):
            if key not in t:
                raise ValueError(f"targets[{i}] has no '{key}' (keys: {sorted(t)}); Mask R-CNN needs 'masks' too"
                                 if key == "masks" else f"targets[{i}] has no '{key}' (keys: {sorted(t)})")
        boxes, labels = t["boxes"], t["labels"]
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"targets[{i}]['boxes'] must be a float tensor of shape [N, 4] (x1, y1, x2, y2); got {shape}")
        if not boxes.is_floating_point():
            raise ValueError(f"targets[{i}]['boxes'] must be a float tensor; got dtype {boxes.dtype}")
        k = boxes.shape[0]
        if not isinstance(labels, Tensor) or labels.shape != (k,) or labels.dtype != torch.int64:
            desc = f"{tuple(labels.shape)} {labels.dtype}" if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"targets[{i}]['labels'] must be an int64 tensor of shape [{k}] (one per box); got {desc}")
        if k:
            bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if bad.any():
                j = int(bad.nonzero()[0])
                raise ValueError(f"targets[{i}]['boxes'][{j}] = {boxes[j].tolist()} has no area: boxes must be "
                                 "x1, y1, x2, y2 with x2 > x1 and y2 > y1")
            if not torch.isfinite(boxes).all():
                raise ValueError(f"targets[{i}]['boxes'] contains NaN or infinite values")
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 1 or hi > num_classes:
                raise ValueError(f"targets[{i}]['labels'] must lie in 1..{num_classes} (0 is background); "
                                 f"got values from {lo} to {hi}")
        if mask_on:
            masks = t["masks"]
            h, w = im.shape[-2:]
            if not isinstance(masks, Tensor) or masks.shape != (k, h, w):
                shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
                raise ValueError(f"targets[{i}]['masks'] must have shape [{k}, {h}, {w}] (one mask per box, the "
                                 f"image's size); got {shape}")
            if masks.dtype not in (torch.uint8, torch.bool):
                raise ValueError(f"targets[{i}]['masks'] must be uint8 or bool; got {masks.dtype}")
