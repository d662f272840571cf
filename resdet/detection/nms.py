"""NMS within groups (image x level in the RPN, image x class in the box head): one answer on every branch
and every device, and a number of host synchronisations that does not grow with the batch.

The arithmetic is torchvision's NMS kernels', in float32 (`suppression_matrix` spells it out):
    area = (x2 - x1) * (y2 - y1);  w = max(0, min(x2) - max(x1));  h = likewise;  inter = w * h
    iou = inter / (area_i + area_j - inter)    (i the higher-scored box)
    j is suppressed when iou > float32(threshold)
The threshold is float32 because torchvision's CUDA kernel compares against a float while its CPU kernel
compares against the double it was given: for a threshold float32 cannot hold exactly and rounds up (0.3,
0.6: float32(0.3) = 0.30000001), an IoU equal to float32(t) (a 10 px box and a 3 px box sharing three
sides: IoU 0.3 exactly) is suppressed on the CPU and kept on the GPU. Both branches below pass
float32(t), so both kernels decide alike, and our own kernel compares in float32 as well.

Two branches, equal to torchvision's `nms` run on each group alone (tests/detection/test_nms.py, with
near-threshold adversarial pairs at large coordinates):
- per group (default on the CPU): one torchvision `nms` call per group. On the CPU NMS costs about
  (boxes x kept boxes) per call, so packing groups only adds cross-group work; and a call costs tens of
  microseconds there, no synchronisation (measured against the other options: DESIGN.md, "NMS").
- batched (default on CUDA; `force_packed_nms()` forces it on a CPU, for tests and counts): every group in
  one computation, with no torchvision call. Groups are padded to a few bucket widths K (powers of two,
  sizes planned on the host) and sorted by score; the suppression matrix S[g, i, j] (i before j, IoU over
  the threshold, torchvision's arithmetic op by op) is built for all groups at once, and greedy NMS is
  solved as the fixed point of  keep[j] = valid[j] and not any_i(keep[i] and S[i, j]),  iterated from
  keep = valid. After t iterations every box whose chain of suppressors is shorter than t is final, the
  fixed point is unique (it can be solved box by box in score order), and it is greedy NMS itself
  ("Cluster-NMS", Zheng et al. 2020, shows the same). One host read per call: after a round of
  iterations, (did the last iteration change anything, how many kept) in one transfer; a round that
  still changed something is followed by a longer one (rare: chains of suppressors in detection outputs
  are short). The older packed branch (torchvision's call over groups shifted apart in float64) decided
  near-threshold pairs in float64, unlike the per-group float32 kernels, and made one call (one sync) per
  20,000 boxes: 4 per RPN step at batch 8 with the default top-k, against 1 at batch 1.
"""
from __future__ import annotations

import contextlib
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from resdet.utils.counting import declared_sync

from .structures import host_tensor

__all__ = ["grouped_nms", "force_packed_nms", "nms_threshold", "suppression_matrix", "NMS_ROUND_ITERATIONS"]

# iterations of the fixed point before the first check (later rounds double): chains of suppressors longer
# than this are rare in detectors' outputs (RPN boxes of a trained model on photographs: see
# tests/detection/test_nms.py), and each iteration is one batched matrix-vector product
NMS_ROUND_ITERATIONS = 16
# pieces with more suppression-matrix elements than this are iterated on S packed as bits
_DENSE_ELEMENTS = 1 << 24
_MIN_WIDTH = 16

# None: batched on CUDA only (see grouped_nms); force_packed_nms() sets it for a block
_PACKED_NMS: Optional[bool] = None


@contextlib.contextmanager
def force_packed_nms(packed: Optional[bool] = True):
    """Within the block, grouped_nms runs the batched branch (True), calls NMS per group (False) or decides
    by device (None), whatever the device. For tests and counts of the GPU branch on a CPU."""
    global _PACKED_NMS
    previous, _PACKED_NMS = _PACKED_NMS, packed
    try:
        yield
    finally:
        _PACKED_NMS = previous


def nms_threshold(iou_threshold: float) -> float:
    """The threshold both of torchvision's kernels apply alike: float32(t), as a Python float (exact)."""
    return float(np.float32(iou_threshold))


def suppression_matrix(boxes: Tensor, valid: Tensor, iou_threshold: float, bits: bool = False) -> Tensor:
    """S [G, K, K] bool for boxes [G, K, 4] sorted by decreasing score within each row: S[g, i, j] is True
    when i < j, both are valid and box i suppresses box j, decided with torchvision's float32 arithmetic
    (its CPU kernel's operations in its order; the threshold compared in float32).
    bits=True (K a multiple of 64): S packed along i, int64 [G, K / 64, K] whose word [g, w, j] holds
    S[g, 64 w + b, j] in bit b: 8x less memory than bools, never built whole.

    Built in blocks of rows, each against the columns from its first row on (the upper triangle), with
    in-place operations (each rounds as the out-of-place one): on a CPU the temporaries then stay in
    cache (a whole [16, 2048, 2048] block at once took 15x longer than blocks of 2^20 elements, measured).
    """
    b = boxes.float()
    g, k = b.shape[:2]
    x1, y1, x2, y2 = (c.contiguous() for c in b.unbind(-1))
    area = (x2 - x1) * (y2 - y1)
    thr = nms_threshold(iou_threshold)
    if bits and k % 64:
        raise ValueError(f"suppression_matrix(bits=True) needs a width that is a multiple of 64; got {k}")
    out = torch.zeros((g, k // 64, k) if bits else (g, k, k), dtype=torch.int64 if bits else torch.bool,
                      device=b.device)
    # CUDA: few large blocks (few kernels); CPU: blocks that stay in cache. force_packed_nms() runs the GPU
    # branch as the GPU runs it, blocks included, so that its counts are the GPU's
    budget = (1 << 25) if (b.is_cuda or _PACKED_NMS) else (1 << 20)
    rows = max(1, min(k, budget // max(g * k, 1)))
    if bits:
        rows = max(64, rows // 64 * 64)
        powers = torch.ones(64, dtype=torch.int64, device=b.device).bitwise_left_shift_(
            torch.arange(64, device=b.device))  # bit 63 is the sign bit: sums of distinct bits stay exact
        col = torch.arange(k, device=b.device)
    for r0 in range(0, k, rows):
        r1 = min(k, r0 + rows)
        i, j = slice(r0, r1), slice(r0, k)
        # the kernels' std::max(0, v) maps NaN to 0 where clamp keeps NaN: either way the pair is not
        # suppressed (0 / area and NaN both fail `> thr`), so the decisions agree
        w = torch.minimum(x2[:, i, None], x2[:, None, j]).sub_(torch.maximum(x1[:, i, None], x1[:, None, j])).clamp_(min=0)
        h = torch.minimum(y2[:, i, None], y2[:, None, j]).sub_(torch.maximum(y1[:, i, None], y1[:, None, j])).clamp_(min=0)
        inter = w.mul_(h)
        union = (area[:, i, None] + area[:, None, j]).sub_(inter)
        if not bits:
            out[:, i, j] = inter.div_(union) > thr
            continue
        block = inter.div_(union) > thr
        block &= (col[r0:r1, None] < col[None, r0:]) & valid[:, i, None] & valid[:, None, j]
        words = block.view(g, (r1 - r0) // 64, 64, k - r0).to(torch.int64).mul_(powers[:, None]).sum(2)
        out[:, r0 // 64:r1 // 64, r0:] = words
    if bits:
        return out
    upper = torch.ones((k, k), dtype=torch.bool, device=b.device).triu_(1)
    return out.logical_and_(upper).logical_and_(valid[:, :, None]).logical_and_(valid[:, None, :])


def grouped_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float,
                max_boxes_per_call: int = 0, packed: Optional[bool] = None,
                group_sizes: Optional[Sequence[int]] = None) -> Tensor:
    """NMS within each group, returning kept indices sorted by decreasing score (ties: by index).

    Equal to torchvision's `nms` run on each group alone with the threshold float32(iou_threshold) (what
    its CUDA kernel applies; see the module docstring), on both branches and devices.
    `packed=None` takes force_packed_nms()'s setting, else batches on CUDA; True: the batched branch,
    False: one torchvision call per group.
    `group_sizes`: host counts of boxes already sorted by group (group 0's boxes first, ...); lets the
    work be planned without reading the device. Otherwise the sorted group ids are read once.
    `max_boxes_per_call`: the batched branch's largest suppression matrix, in boxes (its square is the
    element budget; default 16384, i.e. 2^28 elements: 256 MB as bools, 512 MB in half precision for the
    iterations on CUDA); smaller values cut the groups into more pieces.
    Host synchronisations on CUDA: per group one (torchvision's call); batched one (plus one per longer
    round, rare), plus one to read the group sizes when `group_sizes` is not given.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if packed is None:
        packed = _PACKED_NMS if _PACKED_NMS is not None else boxes.is_cuda
    n = boxes.shape[0]
    if group_sizes is None:
        by_group = torch.argsort(groups, stable=True)
        group_sizes = _run_lengths(groups[by_group])  # the one host read
        b, s = boxes[by_group], scores[by_group]
    else:
        group_sizes = [int(c) for c in group_sizes]
        if sum(group_sizes) != n:
            raise ValueError(f"grouped_nms: group_sizes add up to {sum(group_sizes)} but there are {n} boxes")
        by_group, b, s = None, boxes, scores
    if packed:
        limit = max_boxes_per_call or 16384
        # a group larger than the matrix budget alone goes to torchvision (its square would not fit)
        big = {g for g, c in enumerate(group_sizes) if c > limit}
        keep = _batched_keep(b, s, [0 if g in big else c for g, c in enumerate(group_sizes)], group_sizes,
                             iou_threshold, limit * limit) if len(big) < sum(1 for c in group_sizes if c) else None
        if big:
            alone = _per_group_keep(b, s, group_sizes, iou_threshold, only=big)
            keep = alone if keep is None else torch.cat((keep, alone))
    else:
        keep = _per_group_keep(b, s, group_sizes, iou_threshold)
    if by_group is not None:
        keep = by_group[keep]
    # kept indices in increasing index order, then by decreasing score (stable: ties stay in index order)
    keep = keep.sort().values
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]


def _per_group_keep(boxes: Tensor, scores: Tensor, sizes: List[int], iou_threshold: float,
                    only: Optional[set] = None) -> Tensor:
    """torchvision's nms on each group (or each group in `only`) of boxes sorted by group."""
    from torchvision.ops import nms

    thr, out, lo = nms_threshold(iou_threshold), [], 0
    boxes = boxes.float()
    for g, c in enumerate(sizes):
        if c and (only is None or g in only):
            with declared_sync(boxes.device, "NMS call"):  # on CUDA the call reads its kept count: a sync
                out.append(lo + nms(boxes[lo:lo + c], scores[lo:lo + c], thr))
        lo += c
    return torch.cat(out)


def _plan(sizes: List[int], max_elements: int) -> List[Tuple[int, List[int]]]:
    """Pieces of (width K, group ids): each group padded to a width of few distinct values (its size
    rounded up to a quarter of its power of two: at most 1.25x its size), and narrower widths padded
    further to a wider one while that at most doubles the matrices' elements (fewer pieces: fewer kernels
    per iteration); at most max_elements (groups x K x K) per piece (one group at least)."""
    by_width = {}
    for g, c in enumerate(sizes):
        if c:
            by_width.setdefault(_width(c), []).append(g)
    merged: List[Tuple[int, List[int]]] = []
    exact = 0  # elements of the current merged width's groups at their own widths
    for k in sorted(by_width, reverse=True):
        ids = by_width[k]
        if merged and (len(merged[-1][1]) + len(ids)) * merged[-1][0] ** 2 <= 2 * (exact + len(ids) * k * k):
            merged[-1][1].extend(ids)
            exact += len(ids) * k * k
        else:
            merged.append((k, list(ids)))
            exact = len(ids) * k * k
    pieces = []
    for k, ids in merged:
        ids.sort()
        per_piece = max(1, max_elements // (k * k))
        pieces += [(k, ids[i:i + per_piece]) for i in range(0, len(ids), per_piece)]
    return pieces


def _width(count: int) -> int:
    """count rounded up to a multiple of a quarter of the power of two below it (at least _MIN_WIDTH)."""
    if count <= _MIN_WIDTH:
        return _MIN_WIDTH
    step = max(1, (1 << (count.bit_length() - 1)) // 4)
    return -(-count // step) * step


def _batched_keep(boxes: Tensor, scores: Tensor, sizes: List[int], all_sizes: List[int], iou_threshold: float,
                  max_elements: int) -> Tensor:
    """Indices (any order) of the boxes greedy NMS keeps in each group, all groups at once (see the
    module docstring); boxes sorted by group with `all_sizes` boxes each, of which the groups with a
    nonzero entry in `sizes` are done here."""
    device, n = boxes.device, boxes.shape[0]
    starts = np.concatenate(([0], np.cumsum(all_sizes)[:-1])).tolist()
    # 0/1 matrices multiply exactly in half precision on the GPU (sums of non-negative terms stay > 0)
    mm_dtype = torch.float16 if device.type == "cuda" else torch.float32
    pieces = []
    for k, ids in _plan(sizes, max_elements):
        # small pieces: a dense 0/1 matrix and one bmm per iteration (fewest kernels); large ones: S as
        # bits (an iteration reads 1/16 of the half-precision bytes, and memory stays small)
        bits = len(ids) * k * k > _DENSE_ELEMENTS
        if bits:
            k = -(-k // 64) * 64
        start = host_tensor([starts[g] for g in ids], device)
        size = host_tensor([sizes[g] for g in ids], device)
        pos = torch.arange(k, device=device)
        valid = pos[None, :] < size[:, None]                                     # [G, K]
        idx = torch.where(valid, start[:, None] + pos[None, :], n)               # n: the padding slot
        sc = torch.cat((scores.float(), scores.new_full((1,), -math.inf, dtype=torch.float32)))[idx]
        order = torch.argsort(sc, dim=1, descending=True, stable=True)           # ties: by index, as nms
        idx, valid = idx.gather(1, order), valid.gather(1, order)
        padded = torch.cat((boxes.float(), boxes.new_zeros((1, 4), dtype=torch.float32)))[idx]
        if bits:
            pieces.append((idx, valid, suppression_matrix(padded, valid, iou_threshold, bits=True)))
        else:
            matrix = suppression_matrix(padded, valid, iou_threshold).to(mm_dtype)
            pieces.append((idx, valid[:, None, :].to(mm_dtype), matrix))
    powers = torch.ones(64, dtype=torch.int64, device=device).bitwise_left_shift_(torch.arange(64, device=device))

    def step(keep: Tensor, valid: Tensor, matrix: Tensor) -> Tensor:
        if matrix.dtype != torch.int64:
            # keep [G, 1, K] as 0/1: kept where valid and no kept box suppresses it (three kernels)
            return torch.bmm(keep, matrix).eq_(0).mul_(valid)
        # keep [G, K] bool; its bits packed into words like the matrix's rows, ANDed with every column
        words = keep.view(keep.shape[0], -1, 64).to(torch.int64).mul_(powers).sum(-1)
        return (matrix & words[:, :, None]).ne_(0).any(1).logical_not_().logical_and_(valid)

    def iterate(keeps: List[Tensor]) -> List[Tensor]:
        return [step(keep, valid, matrix) for keep, (_, valid, matrix) in zip(keeps, pieces)]

    keeps = [valid for _, valid, _ in pieces]
    rounds = NMS_ROUND_ITERATIONS
    while True:
        for _ in range(rounds - 1):
            keeps = iterate(keeps)
        last, keeps = keeps, iterate(keeps)
        changed = torch.stack([(a != b).any() for a, b in zip(keeps, last)]).any()
        kept = torch.stack([keep.sum(dtype=torch.int64) for keep in keeps]).sum()  # (a half sum would round)
        with declared_sync(device, "NMS: converged, boxes kept"):
            changed, kept = torch.stack((changed.to(torch.int64), kept)).tolist()
        if not changed:
            break
        rounds *= 2
    # back to input indices: a mask over the n boxes (+ the padding slot), compacted without a read
    mask = torch.zeros(n + 1, dtype=torch.int32, device=device)
    for keep, (idx, _, _) in zip(keeps, pieces):
        mask.index_add_(0, idx.reshape(-1), keep.reshape(-1).to(torch.int32))
    return torch.argsort((mask[:n] == 0).to(torch.uint8), stable=True)[:kept]


def _run_lengths(sorted_values: Tensor) -> List[int]:
    """Lengths of the runs of equal values in a sorted 1-D tensor, read to the host in one transfer."""
    with declared_sync(sorted_values.device, "NMS: group sizes"):
        values = sorted_values.cpu().numpy()
    cuts = np.flatnonzero(values[1:] != values[:-1]) + 1
    return np.diff(np.concatenate(([0], cuts, [len(values)]))).tolist()
