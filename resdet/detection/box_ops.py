"""Box arithmetic shared by the RPN and the RoI heads: the delta coder, IoU matching and balanced
sampling, each written for a whole batch at once.

torchvision.ops gives pairwise `box_iou` and NMS; what it lacks is an IoU of *aligned* box sets
(each proposal against the ground truth of its own image, as a padded [N, G] block), a matcher over
such blocks, and a sampler that draws for all images in one call. Those are written here.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["BoxCoder", "aligned_iou", "match_boxes", "sample_balanced", "clip_boxes", "box_sizes_ok", "grouped_nms",
           "BELOW_LOW", "BETWEEN"]

# The matcher's labels for anchors that match no ground truth (Detectron2 / torchvision convention).
BELOW_LOW = -1  # background
BETWEEN = -2  # ignored: IoU between the two thresholds

# exp() of a predicted log-scale is clamped here so that a wild delta cannot overflow (as Detectron2 and
# torchvision do): log(1000 / 16) lets a box grow at most 62.5x in one step.
_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """(dx, dy, dw, dh) deltas between reference boxes and targets, scaled by `weights`.

    The arithmetic follows torchvision's BoxCoder operation by operation, so decoded boxes agree with
    it to the last bit on the same inputs (the parity tests depend on it).
    """

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), scale_clamp: float = _SCALE_CLAMP):
        if len(weights) != 4:
            raise ValueError(f"BoxCoder weights must be 4 numbers (wx, wy, ww, wh); got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, targets: Tensor, refs: Tensor) -> Tensor:
        """Deltas that move `refs` [..., 4] onto `targets` [..., 4] (same shape)."""
        wx, wy, ww, wh = self.weights
        ref_w = refs[..., 2] - refs[..., 0]
        ref_h = refs[..., 3] - refs[..., 1]
        ref_x = refs[..., 0] + 0.5 * ref_w
        ref_y = refs[..., 1] + 0.5 * ref_h
        gt_w = targets[..., 2] - targets[..., 0]
        gt_h = targets[..., 3] - targets[..., 1]
        gt_x = targets[..., 0] + 0.5 * gt_w
        gt_y = targets[..., 1] + 0.5 * gt_h
        dx = wx * (gt_x - ref_x) / ref_w
        dy = wy * (gt_y - ref_y) / ref_h
        dw = ww * torch.log(gt_w / ref_w)
        dh = wh * torch.log(gt_h / ref_h)
        return torch.stack((dx, dy, dw, dh), dim=-1)

    def decode(self, deltas: Tensor, refs: Tensor) -> Tensor:
        """Boxes from deltas [R, 4*C] and reference boxes [R, 4]; returns [R, C, 4]."""
        refs = refs.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        widths = refs[:, 2] - refs[:, 0]
        heights = refs[:, 3] - refs[:, 1]
        ctr_x = refs[:, 0] + 0.5 * widths
        ctr_y = refs[:, 1] + 0.5 * heights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)
        pred_x = dx * widths[:, None] + ctr_x[:, None]
        pred_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * widths[:, None])
        half_h = 0.5 * (torch.exp(dh) * heights[:, None])
        return torch.stack((pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h), dim=2)


def aligned_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boxes that broadcast against each other ([..., 4] with [..., 4] -> [...]).

    torchvision's `box_iou` is all-pairs for one image; this one takes a padded batch, e.g. anchors
    [1, 1, A, 4] against ground truth [N, G, 1, 4], so matching runs for all images in one call.
    """
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a + area_b - inter)


def match_boxes(iou: Tensor, gt_valid: Tensor, high: float, low: float,
                allow_low_quality: bool) -> Tuple[Tensor, Tensor]:
    """Assign each prediction to its best ground truth, for a padded batch.

    iou [N, G, M] (ground truth x predictions), gt_valid [N, G] (False for padding).
    Returns (matched gt index [N, M], label [N, M]) with label 1 = foreground, 0 = background (IoU
    below `low`), -1 = ignored (between `low` and `high`). Images without ground truth get all
    background (their matched index is 0 and must not be read).
    With `allow_low_quality`, a prediction that is some ground truth's best match (ties included) is
    foreground even under `high` (the RPN rule of Faster R-CNN); unlike torchvision, a ground truth
    that overlaps nothing (best IoU 0) does not turn every prediction into its match.
    """
    iou = iou.masked_fill(~gt_valid[:, :, None], -1.0)
    if iou.shape[1] == 0:  # no ground truth in the whole batch
        n, _, m = iou.shape
        return (torch.zeros((n, m), dtype=torch.int64, device=iou.device),
                torch.zeros((n, m), dtype=torch.int64, device=iou.device))
    best_iou, matched = iou.max(dim=1)
    labels = torch.ones_like(matched)
    labels[best_iou < high] = -1
    labels[best_iou < low] = 0
    if allow_low_quality:
        best_per_gt = iou.max(dim=2, keepdim=True).values  # [N, G, 1]
        is_best = (iou == best_per_gt) & gt_valid[:, :, None] & (best_per_gt > 0)
        labels[is_best.any(dim=1)] = 1
    labels[~gt_valid.any(dim=1)] = 0
    return matched, labels


def sample_balanced(labels: Tensor, per_image: int, positive_fraction: float,
                    generator: torch.Generator = None) -> Tuple[Tensor, Tensor]:
    """Draw up to `per_image` samples per row of labels [N, M] (1 fg, 0 bg, -1 ignore/padding),
    at most `positive_fraction` of them foreground, filling the rest with background.

    One random key per element and a top-k per row replaces torchvision's per-image randperm loop;
    the draw depends only on the torch RNG (or `generator`), so a seed reproduces it.
    Returns boolean masks (positive [N, M], negative [N, M]).
    """
    pos = labels == 1
    neg = labels == 0
    num_pos = pos.sum(dim=1).clamp(max=int(per_image * positive_fraction))
    num_neg = torch.minimum(neg.sum(dim=1), per_image - num_pos)
    keys = torch.rand(labels.shape, device=labels.device, generator=generator)
    return _take_random(pos, keys, num_pos), _take_random(neg, keys, num_neg)


def _take_random(candidates: Tensor, keys: Tensor, counts: Tensor) -> Tensor:
    """For each row, the `counts[row]` candidates with the smallest random keys."""
    k = int(counts.max()) if counts.numel() else 0
    chosen = torch.zeros_like(candidates)
    if k == 0:
        return chosen
    keys = keys.masked_fill(~candidates, 2.0)  # non-candidates sort last
    order = torch.topk(keys, k, dim=1, largest=False).indices  # [N, k]
    take = torch.arange(k, device=keys.device)[None, :] < counts[:, None]
    chosen.scatter_(1, order, take)
    return chosen


def clip_boxes(boxes: Tensor, heights: Tensor, widths: Tensor) -> Tensor:
    """Clip boxes [..., 4] to images of the given (broadcastable) heights and widths."""
    x = torch.minimum(boxes[..., 0::2].clamp(min=0), widths[..., None])
    y = torch.minimum(boxes[..., 1::2].clamp(min=0), heights[..., None])
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def box_sizes_ok(boxes: Tensor, min_size: float) -> Tensor:
    """True where both sides are at least `min_size` (torchvision's remove_small_boxes, as a mask)."""
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


def grouped_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float,
                max_boxes_per_call: int = 0) -> Tensor:
    """NMS within each group (e.g. image x class), returning kept indices sorted by decreasing score.

    torchvision's batched_nms either offsets every group into its own region of one huge NMS (whose
    n x n overlap mask does not fit for a batch of 8 images x 90 classes x 1000 RoIs), or loops over the
    groups doing a full `idxs == g` scan each time (quadratic in the batch). Here the boxes are sorted by
    group once and consecutive groups are packed into calls of at most `max_boxes_per_call` boxes
    (default: 20000 on GPU, where one call is cheaper than many launches; one group per call on CPU,
    where NMS costs n^2 and packing groups only adds cross-group pairs), offset apart inside each call
    by a small offset (the group's rank within its call), so coordinates keep their float32 precision.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    from torchvision.ops import nms

    limit = max_boxes_per_call or (20000 if boxes.is_cuda else 1)
    by_group = torch.argsort(groups, stable=True)
    sorted_groups = groups[by_group]
    _, counts = torch.unique_consecutive(sorted_groups, return_counts=True)
    counts = counts.tolist()
    # local rank of each group inside its call, and where each call ends
    calls, rank, start, size, r = [], [], 0, 0, 0
    for c in counts:
        if size and size + c > limit:
            calls.append((start, start + size))
            start, size, r = start + size, 0, 0
        rank.append(r)
        size += c
        r += 1
    calls.append((start, start + size))
    local_rank = torch.repeat_interleave(torch.tensor(rank, device=boxes.device),
                                         torch.tensor(counts, device=boxes.device))
    b = boxes[by_group]
    span = (b.max() - torch.minimum(b.min(), b.new_zeros(())) + 1).to(b.dtype)
    shifted = b - torch.minimum(b.min(), b.new_zeros(())) + (local_rank.to(b.dtype) * span)[:, None]
    s = scores[by_group]
    kept = [by_group[lo + nms(shifted[lo:hi], s[lo:hi], iou_threshold)] for lo, hi in calls]
    kept = torch.cat(kept)
    return kept[torch.argsort(scores[kept], descending=True, stable=True)]
