"""Error types as TIDE defines them (Bolya et al., "TIDE: A General Toolbox for Identifying Object
Detection Errors", ECCV 2020), with the AP each would add if it were fixed (dAP).

tidecv, the authors' package, is unmaintained since 2020 (it needs opencv-python, and loops over every
detection in Python); these are its definitions on resdet's vectorised COCO matching, so the AP being
explained is COCOeval's own AP at the foreground IoU (AP50 by default), crowd regions included. Every
detection that is neither a true positive nor ignored (on a crowd region) is one error, tested in this
order (IoU of boxes or masks; `fg` = 0.5 and `bg` = 0.1 by default):

- Loc:  its best IoU with ground truth of its own class is in [bg, fg]: found, but badly localised;
- Cls:  IoU >= fg with ground truth of another class: localised, but the class is wrong;
- Dupe: IoU >= fg with ground truth of its class that a higher-scoring detection already took;
- Bkg:  IoU <= bg with every ground truth: a detection on background;
- Both: the rest: IoU in (bg, fg) with another class's object only (wrong class and badly localised).
- Miss: ground truth that no detection took and that no Cls or Loc error points at.

Fixing oracles (dAP = AP with that error type fixed - AP, the other types left as they are):
Cls and Loc errors become true positives (Cls with the object's class) if their object is still free,
one per object (the highest-scoring), the others are removed; Both, Dupe and Bkg errors are removed;
Miss removes the missed objects from the ground truth. The two special types: FalsePos removes every
false positive (perfect precision), FalseNeg every unmatched object (perfect recall).

Differences from tidecv, all in cases it does not handle as COCOeval does: categories without ground
truth are left out of the mean (COCOeval's rule; tidecv counts them as AP 0); detections on crowd regions
are ignored, not errors; a category whose every object a fix removes scores 100 if none of its
detections is left, 0 otherwise (tidecv drops it from the mean), so that the overall dAP is the mean of
the per-category dAPs. tests/evaluation/analysis/test_error_types.py compares with tidecv where it installs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from .inputs import MatchInputs
from .matching import RECALL_THRESHOLDS, average_precision, precision_curves

__all__ = ["ERROR_TYPES", "SPECIAL_TYPES", "DET_ERROR_TYPES", "ErrorAnalysis", "error_types"]

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SPECIAL_TYPES = ("FalsePos", "FalseNeg")
DET_ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg")  # det_type codes 0..4; -1: true positive or ignored
DESCRIPTIONS = {
    "Cls": "right place (IoU >= {fg}), wrong class",
    "Loc": "right class, box or mask off (IoU {bg}-{fg} with its object)",
    "Both": "wrong class and off (IoU {bg}-{fg} with another class's object only)",
    "Dupe": "a second detection of an object already found",
    "Bkg": "a detection on background (IoU <= {bg} with every object)",
    "Miss": "an object no detection found or came near",
    "FalsePos": "all false positives together (perfect precision)",
    "FalseNeg": "all missed objects together (perfect recall)",
}


@dataclass
class ErrorAnalysis:
    fg: float
    bg: float
    ap: np.ndarray                 # [K] AP (0-1) at fg per category, NaN without ground truth
    dap: Dict[str, np.ndarray]     # type -> [K] dAP (0-1)
    counts: Dict[str, np.ndarray]  # type -> [K] errors per category (the detection's class; Miss: the object's)
    det_type: np.ndarray           # [D] index into DET_ERROR_TYPES, -1 for true positives and ignored detections
    det_target: np.ndarray         # [D] the ground truth a Cls/Loc error points at, else -1
    det_tp: np.ndarray             # [D] bool
    gt_used: np.ndarray            # [G] bool: taken by a true positive
    gt_missed: np.ndarray          # [G] bool: a Miss error

    def overall(self) -> Dict[str, float]:
        """AP and each dAP as COCO means over categories with ground truth, in percent."""
        valid = ~np.isnan(self.ap)
        out = {"AP": float(np.mean(self.ap[valid]) * 100) if valid.any() else float("nan")}
        for t, v in self.dap.items():
            out[t] = float(np.mean(v[valid]) * 100) if valid.any() else float("nan")
        return out


def _first_max(num_dets: int, det: np.ndarray, gt: np.ndarray, iou: np.ndarray):
    """Per detection: the highest IoU among its pairs (0 without any) and the first ground truth (file
    order) reaching it (-1 without any). The pairs are sorted by (detection, ground truth)."""
    best = np.zeros(num_dets)
    np.maximum.at(best, det, iou)
    arg = np.full(num_dets, np.iinfo(np.int64).max, dtype=np.int64)
    hit = iou == best[det]
    np.minimum.at(arg, det[hit], gt[hit])
    arg[arg == np.iinfo(np.int64).max] = -1
    return best, arg


def _fixed_ap(cat, score, tp, removed, npos, num_categories, baseline_valid, tie, recall_thresholds):
    """Per-category AP (0-1) of each row; categories of the baseline whose every object was removed
    score 1 if no detection of theirs is left, else 0."""
    prec = precision_curves(cat, score, tp, removed, npos, num_categories, tie_order=tie,
                            recall_thresholds=recall_thresholds)
    ap = average_precision(prec)
    rows = ap.reshape(-1, num_categories)
    npos = np.asarray(npos).reshape(-1, num_categories)
    left = np.stack([np.bincount(cat[~r], minlength=num_categories) for r in removed.reshape(len(rows), -1)])
    vacuous = baseline_valid[None, :] & (npos == 0)
    rows[vacuous] = np.where(left[vacuous] > 0, 0.0, 1.0)
    return rows.reshape(ap.shape)


def error_types(inp: MatchInputs, det_gt: np.ndarray, det_ignored: np.ndarray, fg: float = 0.5,
                bg: float = 0.1, recall_thresholds: np.ndarray = RECALL_THRESHOLDS) -> ErrorAnalysis:
    """TIDE's error types for the standard matching at IoU `fg`, area "all" (det_gt, det_ignored: one
    row of resdet.evaluation.analysis.matching.coco_matching). `recall_thresholds`: COCOeval's 101
    (tidecv's x / 100 to compare with it)."""
    D, G, K = len(inp.det_score), len(inp.gt_cat), inp.num_categories
    tp = (det_gt >= 0) & ~det_ignored
    fp = (det_gt < 0) & ~det_ignored
    gt_used = np.zeros(G, bool)
    gt_used[det_gt[tp]] = True

    # the false positives' overlaps with objects (crowd regions are no objects)
    keep = fp[inp.pair_det] & ~inp.gt_crowd[inp.pair_gt]
    pd, pg, piou = inp.pair_det[keep], inp.pair_gt[keep], inp.pair_iou[keep]
    same = inp.det_cat[pd] == inp.gt_cat[pg]
    m_cls, arg_cls = _first_max(D, pd[same], pg[same], piou[same])
    m_oth, arg_oth = _first_max(D, pd[~same], pg[~same], piou[~same])
    used = same & gt_used[pg]
    m_used, _ = _first_max(D, pd[used], pg[used], piou[used])
    m_all = np.maximum(m_cls, m_oth)

    loc = fp & (m_cls >= bg) & (m_cls <= fg)
    cls = fp & ~loc & (m_oth >= fg)
    dupe = fp & ~loc & ~cls & (m_used >= fg)
    bkg = fp & ~loc & ~cls & ~dupe & (m_all <= bg)
    both = fp & ~loc & ~cls & ~dupe & ~bkg
    det_type = np.full(D, -1, np.int64)
    for code, mask in enumerate((cls, loc, both, dupe, bkg)):
        det_type[mask] = code
    det_target = np.full(D, -1, np.int64)
    det_target[loc] = arg_cls[loc]
    det_target[cls] = arg_oth[cls]

    # one fix per free object: its highest-scoring Cls or Loc error (the first on a tie)
    cand = np.flatnonzero((cls | loc) & (det_target >= 0))
    cand = cand[~gt_used[det_target[cand]]]
    order = cand[np.lexsort((cand, -inp.det_score[cand], det_target[cand]))]
    first = np.r_[True, det_target[order][1:] != det_target[order][:-1]] if len(order) else np.zeros(0, bool)
    winner = np.zeros(D, bool)
    winner[order[first]] = True
    usable = np.zeros(G, bool)
    usable[det_target[cand]] = True
    unmatched = ~inp.gt_crowd & ~gt_used
    missed = unmatched & ~usable

    # AP of the baseline and of each fix (rows sharing the detections' classes), then Cls (classes change)
    npos = inp.npos(inp.gt_crowd)
    miss_npos = npos - np.bincount(inp.gt_cat[missed], minlength=K)
    fn_npos = npos - np.bincount(inp.gt_cat[unmatched], minlength=K)
    tie = np.arange(D)
    rows_tp = [tp, tp | (loc & winner), tp, tp, tp, tp, tp, tp]
    rows_removed = [det_ignored, det_ignored | (loc & ~winner), det_ignored | both, det_ignored | dupe,
                    det_ignored | bkg, det_ignored, det_ignored | fp, det_ignored]
    rows_npos = [npos, npos, npos, npos, npos, miss_npos, npos, fn_npos]
    base_valid = npos > 0
    aps = _fixed_ap(inp.det_cat, inp.det_score, np.stack(rows_tp), np.stack(rows_removed), np.stack(rows_npos),
                    K, base_valid, tie, recall_thresholds)
    cls_cat = inp.det_cat.copy()
    cls_fixed = cls & winner
    cls_cat[cls_fixed] = inp.gt_cat[det_target[cls_fixed]]
    ap_cls = _fixed_ap(cls_cat, inp.det_score, (tp | cls_fixed)[None], (det_ignored | (cls & ~winner))[None],
                       npos[None], K, base_valid, tie, recall_thresholds)[0]
    base = np.where(base_valid, aps[0], np.nan)
    fixed = {"Cls": ap_cls, "Loc": aps[1], "Both": aps[2], "Dupe": aps[3], "Bkg": aps[4], "Miss": aps[5],
             "FalsePos": aps[6], "FalseNeg": aps[7]}
    dap = {t: np.where(base_valid, fixed[t] - aps[0], np.nan) for t in ERROR_TYPES + SPECIAL_TYPES}
    counts = {t: np.bincount(inp.det_cat[m], minlength=K) for t, m in
              (("Cls", cls), ("Loc", loc), ("Both", both), ("Dupe", dupe), ("Bkg", bkg))}
    counts["Miss"] = np.bincount(inp.gt_cat[missed], minlength=K)
    counts = {t: counts[t] for t in ERROR_TYPES}
    return ErrorAnalysis(fg, bg, base, dap, counts, det_type, det_target, tp, gt_used, missed)
