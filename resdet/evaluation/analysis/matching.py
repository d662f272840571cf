"""COCOeval's matching and precision curves, for all images, categories, IoU thresholds and area ranges
at once.

pycocotools matches detections to ground truth one (image, category, area range) at a time in Python
loops, and COCO's analyze curves (Hoiem et al.) need that matching again with other ground-truth sets:
done that way (MMDetection's coco_error_analysis.py) it takes many times one evaluation. Here the
greedy rule is applied to every group at once, one detection rank per step: step r lets the r-th
highest-scoring detection of every group pick its ground truth, for every (area range, IoU threshold)
row together, on the sparse pair list of resdet/evaluation/analysis/inputs.py. No numba or C
extension is needed: a step is a few numpy operations over the pairs of that rank.

The rule is COCOeval.evaluateImg's, exactly (tests/evaluation/analysis/test_matching.py compares the
precision arrays with pycocotools'): a detection takes, among the ground truth it overlaps by at least
the threshold and that no higher-scoring detection of its group took (crowd regions can be taken any
number of times), the one with the highest IoU, preferring ground truth that is not ignored; ties go to
the later one in file order. A detection matched to ignored ground truth is ignored; so is an
unmatched detection outside the area range.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from .inputs import AREA_RANGES, MatchInputs

__all__ = ["COCO_IOU_THRESHOLDS", "RECALL_THRESHOLDS", "greedy_match", "Matching", "coco_matching",
           "precision_curves", "average_precision"]

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


def greedy_match(pair_det: np.ndarray, pair_slot: np.ndarray, pair_iou: np.ndarray, pair_ignored: np.ndarray,
                 pair_crowd: np.ndarray, det_round: np.ndarray, thresholds: Sequence[float], num_dets: int,
                 num_slots: int) -> np.ndarray:
    """COCO's greedy matching over candidate pairs; returns [A, T, num_dets]: the index of the pair each
    detection was matched by (-1: unmatched) per row a of `pair_ignored` and threshold t.

    pair_det/pair_iou: the candidate pairs, sorted by (detection, ground-truth file order);
    pair_slot: what a match uses up (a ground truth within the detection's group: no two detections of
    a group share one; different groups never share a slot); pair_ignored [A, P]: whether the ground truth
    is ignored for that detection, per row (area range); pair_crowd: may be taken again (crowd regions);
    det_round: the detection's rank in its group by score (0 first).
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    A, T = pair_ignored.shape[0], len(thresholds)
    matched = np.full((A, T, num_dets), -1, dtype=np.int32)  # int32: [4, 11, 500k] of COCO val is 88 MB
    if len(pair_det) == 0:
        return matched
    # pairs by (round, detection, file order): each round is one contiguous block
    pr = det_round[pair_det]
    order = np.argsort(pr, kind="stable")
    p_det, p_slot, p_iou = pair_det[order], pair_slot[order], pair_iou[order]
    p_ign, p_crowd, pr = pair_ignored[:, order], pair_crowd[order], pr[order]
    bounds = np.searchsorted(pr, np.arange(pr[-1] + 2))
    taken = np.zeros((A, T, num_slots), dtype=bool)
    # the key a detection maximises: ground truth that is not ignored first (+2), then IoU
    base = np.where(p_ign, 0.0, 2.0)
    thr = thresholds[None, :, None]
    for r in range(len(bounds) - 1):
        s, e = bounds[r], bounds[r + 1]
        if s == e:
            continue
        det, slot, iou, crowd = p_det[s:e], p_slot[s:e], p_iou[s:e], p_crowd[s:e]
        n = e - s
        ok = (iou[None, None, :] >= thr) & (~taken[:, :, slot] | crowd[None, None, :])
        key = np.where(ok, base[:, None, s:e] + iou[None, None, :], -1.0)
        starts = np.flatnonzero(np.r_[True, det[1:] != det[:-1]])
        seg_max = np.maximum.reduceat(key, starts, axis=2)
        lengths = np.diff(np.r_[starts, n])
        is_best = (key == np.repeat(seg_max, lengths, axis=2)) & (key >= 0)
        # the last of equal keys (COCOeval keeps the later ground truth on a tie)
        pos = np.where(is_best, np.arange(n)[None, None, :], -1)
        best = np.maximum.reduceat(pos, starts, axis=2)          # [A, T, segments]
        a, t, seg = np.nonzero(best >= 0)
        chosen = best[a, t, seg]
        matched[a, t, det[starts[seg]]] = order[s + chosen]
        not_crowd = ~crowd[chosen]
        taken[a[not_crowd], t[not_crowd], slot[chosen[not_crowd]]] = True
    return matched


@dataclass
class Matching:
    """The standard matching: [A, T, D] per area range (AREA_RANGES order) and IoU threshold."""
    thresholds: np.ndarray
    areas: Sequence[str]
    det_gt: np.ndarray        # matched ground truth index, -1 if none
    det_ignored: np.ndarray   # bool: matched to ignored ground truth, or unmatched outside the area
    npos: np.ndarray          # [A, K] ground truth not ignored

    def row(self, area: str = "all", threshold: float = 0.5):
        a = list(self.areas).index(area)
        t = int(np.argmin(np.abs(self.thresholds - threshold)))
        if abs(self.thresholds[t] - threshold) > 1e-9:
            raise KeyError(f"IoU threshold {threshold} was not matched (have {list(self.thresholds)})")
        return self.det_gt[a, t], self.det_ignored[a, t]


def match_with_ground_truth(inp: MatchInputs, pair_mask: np.ndarray, other_category_ignored: bool,
                            thresholds: Sequence[float], areas: Sequence[str]):
    """Greedy matching of the detections with the pairs in `pair_mask`; pairs with ground truth of another
    category count as ignored ground truth (the analyze curves' Sim and Oth) when `other_category_ignored`.
    Returns (det_gt, det_ignored), each [A, T, D]."""
    pd, pg, piou = inp.pair_det[pair_mask], inp.pair_gt[pair_mask], inp.pair_iou[pair_mask]
    same = inp.det_cat[pd] == inp.gt_cat[pg]
    if not other_category_ignored and not same.all():
        raise ValueError("pairs with ground truth of another category need other_category_ignored")
    K = inp.num_categories
    # a ground truth is used up per (ground truth, detection category): each category's analysis is its own
    slot_key = pg * K + inp.det_cat[pd]
    uniq, slot = np.unique(slot_key, return_inverse=True)
    ign = np.stack([inp.gt_ignored(a)[pg] | ~same for a in areas])
    matched = greedy_match(pd, slot.reshape(-1), piou, ign, inp.gt_crowd[pg], inp.det_rank, thresholds,
                           len(inp.det_score), len(uniq))
    has = matched >= 0
    safe = np.where(has, matched, 0)
    if len(pg) == 0:  # no detection overlaps any ground truth: nothing matched, but `safe` still indexes pair 0
        pg, ign = np.zeros(1, pg.dtype), np.zeros((len(areas), 1), bool)
    det_gt = np.where(has, pg.astype(np.int32)[safe], np.int32(-1))
    a_idx = np.arange(len(areas))[:, None, None]
    det_ignored = has & ign[a_idx, safe]          # matched to ignored ground truth
    del safe, matched
    outside = np.stack([inp.det_outside(a) for a in areas])[:, None, :]
    det_ignored |= ~has & outside                 # or unmatched outside the area range
    return det_gt, det_ignored


def coco_matching(inp: MatchInputs, thresholds: Sequence[float] = tuple(COCO_IOU_THRESHOLDS) + (0.1,),
                  areas: Sequence[str] = tuple(AREA_RANGES)) -> Matching:
    """COCOeval's matching (same category only) at `thresholds` for `areas`."""
    same = inp.det_cat[inp.pair_det] == inp.gt_cat[inp.pair_gt]
    det_gt, det_ignored = match_with_ground_truth(inp, same, False, thresholds, areas)
    npos = np.stack([inp.npos(inp.gt_ignored(a)) for a in areas])
    return Matching(np.asarray(thresholds, np.float64), tuple(areas), det_gt, det_ignored, npos)


def precision_curves(det_cat: np.ndarray, det_score: np.ndarray, tp: np.ndarray, ignored: np.ndarray,
                     npos: np.ndarray, num_categories: int, tie_order: Optional[np.ndarray] = None,
                     recall_thresholds: np.ndarray = RECALL_THRESHOLDS) -> np.ndarray:
    """COCOeval.accumulate's interpolated precision at the 101 recall thresholds: [..., R, K] for
    tp/ignored of shape [..., D] (rows: e.g. area ranges and IoU thresholds) and npos [..., K]; -1 where a
    category has no ground truth. Detections are ranked by score, ties by `tie_order` (default: their
    order, which is COCOeval's: image, then rank in the image). `recall_thresholds`: COCOeval's
    np.linspace(0, 1, 101) (tidecv samples at x / 100, which differ from it in the last bit)."""
    lead = tp.shape[:-1]
    rows = int(np.prod(lead)) if lead else 1
    tp = tp.reshape(rows, -1)
    ignored = ignored.reshape(rows, -1)
    npos = np.asarray(npos).reshape(rows, num_categories)
    n = len(det_score)
    tie = np.arange(n) if tie_order is None else tie_order
    order = np.lexsort((tie, -det_score, det_cat))
    cats = det_cat[order]
    bounds = np.searchsorted(cats, np.arange(num_categories + 1))
    R = len(recall_thresholds)
    out = np.full((rows, R, num_categories), -1.0)
    tps_all = (tp & ~ignored)[:, order]
    fps_all = (~tp & ~ignored)[:, order]
    eps = np.spacing(1)
    for k in range(num_categories):
        s, e = bounds[k], bounds[k + 1]
        has_gt = npos[:, k] > 0
        if not has_gt.any():
            continue
        out[has_gt, :, k] = 0.0
        if s == e:
            continue
        tp_sum = np.cumsum(tps_all[:, s:e], axis=1, dtype=np.float64)
        fp_sum = np.cumsum(fps_all[:, s:e], axis=1, dtype=np.float64)
        pr = tp_sum / (fp_sum + tp_sum + eps)
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]   # COCOeval's envelope, right to left
        for row in np.flatnonzero(has_gt):
            rc = tp_sum[row] / npos[row, k]
            inds = np.searchsorted(rc, recall_thresholds, side="left")
            valid = inds < (e - s)
            out[row, valid, k] = pr[row, inds[valid]]
    return out.reshape(lead + (R, num_categories))


def average_precision(precision: np.ndarray) -> np.ndarray:
    """Per category (last axis), the mean over recall thresholds (axis -2); NaN where undefined (-1)."""
    valid = precision[..., 0, :] > -1
    ap = np.where(valid, precision.mean(axis=-2), np.nan)
    return ap


def mean_ap(per_category: np.ndarray) -> float:
    """COCO's mean over categories that have ground truth (NaN if none), in percent."""
    v = per_category[~np.isnan(per_category)]
    return float(v.mean() * 100) if v.size else float("nan")


def standard_precision(inp: MatchInputs, matching: Matching) -> np.ndarray:
    """[A, T, R, K] for the matching's rows, as COCOeval's eval['precision'] (maxDets 100), transposed."""
    tp = matching.det_gt >= 0
    return precision_curves(inp.det_cat, inp.det_score, tp, matching.det_ignored, matching.npos[:, None, :]
                            .repeat(len(matching.thresholds), axis=1), inp.num_categories)


def summary_from_precision(precision: np.ndarray, matching: Matching) -> Dict[str, float]:
    """COCOeval's six AP numbers (percent) from [A, T, R, K]."""
    th = list(np.round(matching.thresholds, 4))
    coco = [th.index(round(float(t), 4)) for t in COCO_IOU_THRESHOLDS]
    areas = list(matching.areas)

    def mean(p):
        v = p[p > -1]
        return float(v.mean() * 100) if v.size else float("nan")

    a_all = areas.index("all")
    out = {"AP": mean(precision[a_all, coco]), "AP50": mean(precision[a_all, th.index(0.5)]),
           "AP75": mean(precision[a_all, th.index(0.75)])}
    for name, key in (("small", "APs"), ("medium", "APm"), ("large", "APl")):
        out[key] = mean(precision[areas.index(name), coco]) if name in areas else float("nan")
    return out
