"""Input checks for the detection models: each failure says which image or target is wrong, what it
got, and what was expected (the model would otherwise fail deep inside with a shape error)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from resdet.utils.counting import declared_sync

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
        if mask_on:
            masks = t["masks"]
            h, w = im.shape[-2:]
            if not isinstance(masks, Tensor) or masks.shape != (k, h, w):
                shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
                raise ValueError(f"targets[{i}]['masks'] must have shape [{k}, {h}, {w}] (one mask per box, the "
                                 f"image's size); got {shape}")
            if masks.dtype not in (torch.uint8, torch.bool):
                raise ValueError(f"targets[{i}]['masks'] must be uint8 or bool; got {masks.dtype}")
    _check_values(targets, num_classes)


def _check_values(targets: Sequence[Dict[str, Tensor]], num_classes: int) -> None:
    """Box areas, finiteness and label range of all targets at once: one host read when all is well (on
    a GPU a read per image and check would stall the stream several times per step)."""
    counts = [int(t["boxes"].shape[0]) for t in targets]
    if not sum(counts):
        return
    boxes = torch.cat([t["boxes"] for t in targets]) if len(targets) > 1 else targets[0]["boxes"]
    labels = torch.cat([t["labels"].to(boxes.device) for t in targets]) if len(targets) > 1 else targets[0]["labels"]
    no_area = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    not_finite = ~torch.isfinite(boxes).all(dim=1)
    bad_label = (labels < 1) | (labels > num_classes)
    with declared_sync(boxes.device, "input check"):
        bad = bool((no_area | not_finite | bad_label).any())  # the one read
    if not bad:
        return
    start = 0
    for i, (t, k) in enumerate(zip(targets, counts)):  # an error: find it and say where (reads are fine now)
        part = slice(start, start + k)
        start += k
        if bool(no_area[part].any()):
            j = int(no_area[part].nonzero()[0])
            raise ValueError(f"targets[{i}]['boxes'][{j}] = {t['boxes'][j].tolist()} has no area: boxes must be "
                             "x1, y1, x2, y2 with x2 > x1 and y2 > y1")
        if bool(not_finite[part].any()):
            raise ValueError(f"targets[{i}]['boxes'] contains NaN or infinite values")
        if bool(bad_label[part].any()):
            lo, hi = int(t["labels"].min()), int(t["labels"].max())
            raise ValueError(f"targets[{i}]['labels'] must lie in 1..{num_classes} (0 is background); "
                             f"got values from {lo} to {hi}")
