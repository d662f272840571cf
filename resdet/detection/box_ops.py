"""Box arithmetic shared by the RPN and the RoI heads: the delta coder, IoU matching and balanced
sampling, each written for a whole batch at once.

torchvision.ops gives pairwise `box_iou` and NMS (grouped NMS: nms.py); what it lacks is an IoU of *aligned* box sets
(each proposal against the ground truth of its own image, as a padded [N, G] block), a matcher over
such blocks, and a sampler that draws for all images in one call. Those are written here.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import Tensor

# grouped NMS lives in nms.py; imported here too, where the RPN and the box head have long found it
from .nms import force_packed_nms, grouped_nms

__all__ = ["BoxCoder", "aligned_iou", "match_boxes", "sample_slots", "sample_balanced", "clip_boxes", "box_sizes_ok",
           "grouped_nms", "force_packed_nms", "BELOW_LOW", "BETWEEN"]

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
    # masked_fill rather than labels[mask] = v: the same values, and no mask indexing
    labels = torch.where(best_iou < low, 0, torch.where(best_iou < high, -1, 1))
    if allow_low_quality:
        best_per_gt = iou.max(dim=2, keepdim=True).values  # [N, G, 1]
        is_best = (iou == best_per_gt) & gt_valid[:, :, None] & (best_per_gt > 0)
        labels = labels.masked_fill(is_best.any(dim=1), 1)
    labels = labels.masked_fill(~gt_valid.any(dim=1, keepdim=True), 0)
    return matched, labels


def sample_slots(labels: Tensor, per_image: int, positive_fraction: float,
                 generator: torch.Generator = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Draw up to `per_image` samples per row of labels [N, M] (1 fg, 0 bg, -1 ignore/padding), at most
    `positive_fraction` of them foreground, filling the rest with background, as fixed-size slots.

    One random key per element and a top-k per row replaces torchvision's per-image randperm loop; the
    draw depends only on the torch RNG (or `generator`), so a seed reproduces it. Nothing is read to the
    host: the output has `per_image` slots per row whatever the counts are.
    Returns (index [N, S] into M, is_positive [N, S], valid [N, S]) with S = per_image: row i's first
    num_pos slots are its positives, the next num_neg its negatives (each in random order), the rest
    invalid (their index is a repeat and must not be used).
    """
    n, m = labels.shape
    pos = labels == 1
    neg = labels == 0
    cap = int(per_image * positive_fraction)
    num_pos = pos.sum(dim=1).clamp(max=cap)
    num_neg = torch.minimum(neg.sum(dim=1), per_image - num_pos)
    keys = torch.rand(labels.shape, device=labels.device, generator=generator)
    slot = torch.arange(per_image, device=labels.device)[None, :]
    if m == 0:
        empty = torch.zeros((n, per_image), dtype=torch.int64, device=labels.device)
        return empty, empty.bool(), empty.bool()
    pos_order = _smallest_keys(pos, keys, max(min(cap, m), 1))  # [N, kp]
    neg_order = _smallest_keys(neg, keys, min(per_image, m))  # [N, kn]
    is_pos = slot < num_pos[:, None]
    valid = slot < (num_pos + num_neg)[:, None]
    from_pos = pos_order.gather(1, slot.clamp(max=pos_order.shape[1] - 1).expand(n, -1))
    from_neg = neg_order.gather(1, (slot - num_pos[:, None]).clamp(0, neg_order.shape[1] - 1))
    return torch.where(is_pos, from_pos, from_neg), is_pos, valid


def sample_balanced(labels: Tensor, per_image: int, positive_fraction: float,
                    generator: torch.Generator = None) -> Tuple[Tensor, Tensor]:
    """`sample_slots` as boolean masks (positive [N, M], negative [N, M]); the same draw."""
    idx, is_pos, valid = sample_slots(labels, per_image, positive_fraction, generator)
    pos = torch.zeros(labels.shape, dtype=torch.int32, device=labels.device)
    neg = torch.zeros_like(pos)
    pos.scatter_add_(1, idx, (is_pos & valid).to(torch.int32))  # add: invalid slots repeat an index
    neg.scatter_add_(1, idx, (~is_pos & valid).to(torch.int32))
    return pos > 0, neg > 0


def _smallest_keys(candidates: Tensor, keys: Tensor, k: int) -> Tensor:
    """For each row, the indices of the k smallest keys among the candidates, smallest first
    (non-candidates sort last; a row's first count(candidates) entries are its draw)."""
    return torch.topk(keys.masked_fill(~candidates, 2.0), k, dim=1, largest=False).indices


def clip_boxes(boxes: Tensor, heights: Tensor, widths: Tensor) -> Tensor:
    """Clip boxes [..., 4] to images of the given (broadcastable) heights and widths."""
    x = torch.minimum(boxes[..., 0::2].clamp(min=0), widths[..., None])
    y = torch.minimum(boxes[..., 1::2].clamp(min=0), heights[..., None])
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def box_sizes_ok(boxes: Tensor, min_size: float) -> Tensor:
    """True where both sides are at least `min_size` (torchvision's remove_small_boxes, as a mask)."""
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)
