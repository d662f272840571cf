"""The few containers the detection modules pass to each other, and the padding helpers that let
per-image sets (ground truth, proposals, detections) be processed as one batch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ImageBatch", "GroundTruth", "top_k_per_image", "pad_images"]


@dataclass
class ImageBatch:
    """Normalised images padded into one tensor [N, C, H, W], with each image's own (h, w) as [N, 2]."""

    tensor: Tensor
    image_sizes: Tensor

    @property
    def padded_size(self) -> Tuple[int, int]:
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])


def pad_images(images: Sequence[Tensor], size_divisibility: int, pad_value: float = 0.0) -> ImageBatch:
    """Stack CHW images of different sizes, padding bottom/right to a multiple of `size_divisibility`."""
    sizes = torch.tensor([[im.shape[-2], im.shape[-1]] for im in images], dtype=torch.int64)
    max_h, max_w = (int(v) for v in sizes.max(dim=0).values)
    if size_divisibility > 1:
        max_h = -(-max_h // size_divisibility) * size_divisibility
        max_w = -(-max_w // size_divisibility) * size_divisibility
    if len(images) == 1 or all(im.shape[-2:] == (max_h, max_w) for im in images):
        tensor = torch.stack([F.pad(im, (0, max_w - im.shape[-1], 0, max_h - im.shape[-2]), value=pad_value)
                              for im in images])
    else:
        tensor = images[0].new_full((len(images), images[0].shape[0], max_h, max_w), pad_value)
        for i, im in enumerate(images):  # a copy per image; no per-pixel work in Python
            tensor[i, :, : im.shape[-2], : im.shape[-1]].copy_(im)
    return ImageBatch(tensor, sizes.to(tensor.device))


@dataclass
class GroundTruth:
    """Targets of a batch, padded to the largest box count G: boxes [N, G, 4], labels [N, G],
    valid [N, G] (False for padding) and, for Mask R-CNN, the per-image masks [G_i, H_i, W_i] (stacked
    only for the positive RoIs' targets, in one roi_align call)."""

    boxes: Tensor
    labels: Tensor
    valid: Tensor
    masks: Optional[List[Tensor]] = None

    @classmethod
    def from_targets(cls, targets: Sequence[Dict[str, Tensor]], device) -> "GroundTruth":
        n = len(targets)
        # at least one (invalid) slot, so that indexing by a matched index works when no image has boxes
        g = max([int(t["boxes"].shape[0]) for t in targets] + [1])
        boxes = torch.zeros((n, g, 4), dtype=torch.float32, device=device)
        labels = torch.zeros((n, g), dtype=torch.int64, device=device)
        valid = torch.zeros((n, g), dtype=torch.bool, device=device)
        for i, t in enumerate(targets):  # copies only; the matching itself is batched
            k = t["boxes"].shape[0]
            boxes[i, :k] = t["boxes"].to(device, torch.float32)
            labels[i, :k] = t["labels"].to(device)
            valid[i, :k] = True
        masks = [t["masks"] for t in targets] if all("masks" in t for t in targets) else None
        return cls(boxes, labels, valid, masks)


def top_k_per_image(boxes: Tensor, image_idx: Tensor, num_images: int, k: int,
                    extra: Sequence[Tensor] = ()) -> Tuple[Tensor, ...]:
    """Keep the first `k` rows of each image from rows already sorted by score (e.g. NMS output),
    and lay them out as [N, K, ...] with a validity mask [N, K] (K = the largest count kept).

    Returns (boxes [N, K, 4], valid [N, K], *extra padded the same way). A stable sort by image keeps
    each image's score order, so no Python loop over images is needed.
    """
    order = torch.argsort(image_idx, stable=True)
    image_idx = image_idx[order]
    counts = torch.bincount(image_idx, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(image_idx.numel(), device=image_idx.device) - starts[image_idx]
    sel = rank < k
    img, rank = image_idx[sel], rank[sel]
    width = int(counts.clamp(max=k).max()) if num_images else 0
    out_boxes = boxes.new_zeros((num_images, width) + boxes.shape[1:])
    out_boxes[img, rank] = boxes[order][sel]
    valid = torch.zeros((num_images, width), dtype=torch.bool, device=boxes.device)
    valid[img, rank] = True
    outs = [out_boxes, valid]
    for e in extra:
        o = e.new_zeros((num_images, width) + e.shape[1:])
        o[img, rank] = e[order][sel]
        outs.append(o)
    return tuple(outs)
