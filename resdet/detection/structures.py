"""The few containers the detection modules pass to each other, and the padding helpers that let
per-image sets (ground truth, proposals, detections) be processed as one batch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["ImageBatch", "GroundTruth", "top_k_per_image", "pad_images", "padded_shape", "sizes_tensor",
           "host_tensor"]


@dataclass
class ImageBatch:
    """Normalised images padded into one tensor [N, C, H, W], with each image's own (h, w) as [N, 2]
    (on the device) and as a host list `sizes` (so that nothing needs to read them back)."""

    tensor: Tensor
    image_sizes: Tensor
    sizes: Optional[List[Tuple[int, int]]] = None

    @property
    def padded_size(self) -> Tuple[int, int]:
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])


def padded_shape(sizes: Sequence[Tuple[int, int]], size_divisibility: int) -> Tuple[int, int]:
    """The (H, W) that holds every (h, w) of `sizes`, rounded up to a multiple of `size_divisibility`."""
    max_h, max_w = max(h for h, _ in sizes), max(w for _, w in sizes)
    if size_divisibility > 1:
        max_h = -(-max_h // size_divisibility) * size_divisibility
        max_w = -(-max_w // size_divisibility) * size_divisibility
    return max_h, max_w


def host_tensor(values, device) -> Tensor:
    """Host ints (a list, or a list of pairs) as an int64 tensor on `device`, copied without making the
    host wait for the device: on CUDA from pinned memory with non_blocking (a copy from pageable memory,
    or a blocking one, synchronises with the stream; the caching host allocator keeps the pinned block
    until the copy has run)."""
    t = torch.tensor(values, dtype=torch.int64)
    if torch.device(device).type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def sizes_tensor(sizes: Sequence[Tuple[int, int]], device) -> Tensor:
    """Host (h, w) pairs as an int64 [N, 2] tensor on `device`."""
    return host_tensor([list(s) for s in sizes], device).reshape(-1, 2)


def pad_images(images: Sequence[Tensor], size_divisibility: int, pad_value: float = 0.0) -> ImageBatch:
    """Stack CHW images of different sizes, padding bottom/right to a multiple of `size_divisibility`."""
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    max_h, max_w = padded_shape(sizes, size_divisibility)
    tensor = images[0].new_full((len(images), images[0].shape[0], max_h, max_w), pad_value)
    for i, im in enumerate(images):  # a copy per image; no per-pixel work in Python
        tensor[i, :, : im.shape[-2], : im.shape[-1]].copy_(im)
    return ImageBatch(tensor, sizes_tensor(sizes, tensor.device), sizes)


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
        counts = [int(t["boxes"].shape[0]) for t in targets]
        # at least one (invalid) slot, so that indexing by a matched index works when no image has boxes
        g = max(counts + [1])
        boxes = torch.zeros((n * g, 4), dtype=torch.float32, device=device)
        labels = torch.zeros((n * g,), dtype=torch.int64, device=device)
        valid = torch.zeros((n * g,), dtype=torch.bool, device=device)
        if sum(counts):  # one copy per tensor for the whole batch, placed by host-computed slots
            slots = host_tensor([i * g + j for i, c in enumerate(counts) for j in range(c)], device)
            boxes.index_copy_(0, slots, torch.cat([t["boxes"] for t in targets]).to(device, torch.float32))
            labels.index_copy_(0, slots, torch.cat([t["labels"] for t in targets]).to(device))
            valid.index_fill_(0, slots, True)
        masks = [t["masks"] for t in targets] if all("masks" in t for t in targets) else None
        return cls(boxes.view(n, g, 4), labels.view(n, g), valid.view(n, g), masks)


def top_k_per_image(boxes: Tensor, image_idx: Tensor, num_images: int, k: int,
                    extra: Sequence[Tensor] = (), valid: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
    """Keep the first `k` rows of each image from rows already sorted by score (e.g. NMS output),
    and lay them out as [N, k, ...] with a validity mask [N, k]. Rows with `valid` False are skipped.

    Returns (boxes [N, k, 4], valid [N, k], *extra padded the same way). A stable sort by image keeps
    each image's score order; the width is k whatever the counts, so nothing is read to the host.
    """
    order = torch.argsort(image_idx, stable=True)
    img = image_idx[order]
    ok = torch.ones_like(img, dtype=torch.bool) if valid is None else valid[order]
    ok_count = ok.to(torch.int64)
    per_image = torch.zeros(num_images, dtype=torch.int64, device=img.device).index_add_(0, img, ok_count)
    before = torch.cumsum(per_image, 0) - per_image  # valid rows of the images before each image
    rank = torch.cumsum(ok_count, 0) - ok_count - before[img]  # rank among the image's valid rows
    keep = ok & (rank < k)
    # rows not kept all land in one spare row after the N x k slots, which is then cut off
    slot = torch.where(keep, img * k + rank, num_images * k)

    def place(values: Tensor) -> Tensor:  # values in sorted order
        out = values.new_zeros((num_images * k + 1,) + values.shape[1:])
        out[slot] = values
        return out[:-1].view((num_images, k) + values.shape[1:])

    return (place(boxes[order]), place(keep)) + tuple(place(e[order]) for e in extra)
