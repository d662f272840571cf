"""Multi-scale RoIAlign: each box is pooled from the pyramid level that suits its size."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn
from .roi_align import ROI_ALIGN_KERNELS, roi_align

__all__ = ["ROIPooler", "assign_levels"]


def assign_levels(boxes: Tensor, min_level: int, max_level: int, canonical_box_size: float = 224,
                  canonical_level: int = 4) -> Tensor:
    """Level index (0 = min_level) of each box [R, 4] by the FPN paper's Eq. 1:
    floor(canonical_level + log2(sqrt(area) / canonical_box_size)), clamped to the pyramid.
    The 1e-6 nudge is torchvision's LevelMapper's, so boxes on a boundary go to the same level."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lvl = torch.floor(canonical_level + torch.log2(torch.sqrt(area) / canonical_box_size)
                      + torch.tensor(1e-6, dtype=area.dtype))
    return (lvl.clamp(min=min_level, max=max_level).to(torch.int64) - min_level)


def _float(x: Tensor) -> Tensor:
    """Pool in float32 with float32 box coordinates: half-precision coordinates are off by up to a pixel
    at 1333 px (torchvision's autocast rule for roi_align casts to float32 too)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class ROIPooler(nn.Module):
    """RoIAlign over P2..P5 for boxes given as a flat list with their image index.

    `aligned=False` is the original RoIAlign (and torchvision's MultiScaleRoIAlign); `aligned=True`
    shifts by half a pixel (Detectron2's "ROIAlignV2"), which is more exact.
    One roi_align call per level (4 calls), never a call per image. `kernel` "resdet" pools CPU tensors
    with detection/roi_align.py's sparse-product kernel (torchvision's result, a backward on every core),
    "torchvision" always with torchvision's; other devices always use torchvision's.
    """

    def __init__(self, *, output_size: int, strides: Sequence[int], sampling_ratio: int = 2,
                 aligned: bool = False, canonical_box_size: float = 224, canonical_level: int = 4,
                 kernel: str = "resdet"):
        super().__init__()
        if kernel not in ROI_ALIGN_KERNELS:
            raise ValueError(f"ROIPooler kernel must be one of {ROI_ALIGN_KERNELS}; got {kernel!r}")
        self.kernel = kernel
        levels = [math.log2(s) for s in strides]
        if any(lv != int(lv) for lv in levels) or levels != list(range(int(levels[0]), int(levels[0]) + len(levels))):
            raise ValueError(f"ROIPooler needs consecutive power-of-two strides (4, 8, 16, 32); got {list(strides)}")
        self.output_size = (int(output_size), int(output_size))
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = int(levels[0]), int(levels[-1])
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level

    @property
    def num_levels(self) -> int:
        return self.max_level - self.min_level + 1

    def levels(self, boxes: Tensor) -> Tensor:
        """The pyramid level index (0 = finest) each box [R, 4] is pooled from."""
        return assign_levels(boxes, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level)

    def count_levels(self, levels: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Boxes per level as a device tensor [L] (only where `mask`): the plan `forward` needs on the host.
        Callers read several such counts in one transfer, instead of one read per level and call."""
        hits = levels[:, None] == torch.arange(self.num_levels, device=levels.device)
        if mask is not None:
            hits = hits & mask[:, None]
        return hits.sum(0)

    def forward(self, features: List[Tensor], boxes: Tensor, batch_idx: Tensor, levels: Optional[Tensor] = None,
                level_counts: Optional[Sequence[int]] = None) -> Tensor:
        """Pooled features [R, C, S, S] of boxes [R, 4] of images batch_idx [R].

        The boxes are sorted by level once and each level's slice pooled by one roi_align; that needs
        the number of boxes per level on the host: pass `levels` and `level_counts` (host ints, from
        `count_levels`) or they are computed here (one host read)."""
        rois = torch.cat([batch_idx[:, None].to(boxes.dtype), boxes], dim=1)
        if len(features) == 1:
            return roi_align(_float(features[0]), rois.float(), self.output_size, self.scales[0], self.sampling_ratio,
                             self.aligned, self.kernel).to(features[0].dtype)
        if levels is None:
            levels = self.levels(boxes)
        if level_counts is None:
            level_counts = self.count_levels(levels).tolist()
        if len(level_counts) != len(features) or sum(level_counts) != boxes.shape[0]:
            raise ValueError(f"ROIPooler: level_counts {list(level_counts)} do not fit {boxes.shape[0]} boxes on "
                             f"{len(features)} levels")
        order = torch.argsort(levels)
        rois = rois[order].float()
        parts, start = [], 0
        for feat, scale, count in zip(features, self.scales, level_counts):
            if count:
                parts.append(roi_align(_float(feat), rois[start:start + count], self.output_size, scale,
                                       self.sampling_ratio, self.aligned, self.kernel))
            start += count
        if not parts:
            return features[0].new_zeros((0, features[0].shape[1]) + self.output_size)
        pooled = torch.cat(parts) if len(parts) > 1 else parts[0]
        # back to the boxes' order
        return pooled.new_empty(pooled.shape).index_copy_(0, order, pooled).to(features[0].dtype)
