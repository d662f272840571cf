"""Precision, recall and F1 of each class against the score threshold, and the threshold to deploy with.

A detection counts at the threshold s when its score is at least s; it is a true positive when the
standard matching (IoU >= 0.5 by default, area "all", COCOeval's rule) gave it an object. F1 is
2 TP / (detections + objects). Each class's best threshold is the one with the highest F1 (the highest
such threshold on a tie: fewer detections for the same F1), written as the shortest decimal that keeps
the same detections; classes without objects or detections get the threshold that is best over all
classes together. `deploy_line` is the config line that makes the predictor, tools/demo.py and exported
models use them (TEST.SCORE_THRESH_PER_CLASS, in label order: categories sorted by id).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from .inputs import MatchInputs

__all__ = ["ThresholdAnalysis", "score_thresholds", "deploy_line", "CONFIG_KEY"]

CONFIG_KEY = "TEST.SCORE_THRESH_PER_CLASS"


@dataclass
class ThresholdAnalysis:
    best: np.ndarray        # [K] best-F1 threshold, NaN where undefined (no objects or no detections)
    precision: np.ndarray   # [K] at best
    recall: np.ndarray
    f1: np.ndarray
    overall_best: float     # one threshold for all classes (micro F1), NaN if undefined
    overall_precision: float
    overall_recall: float
    overall_f1: float
    deploy: np.ndarray      # [K] best, or overall_best where undefined
    grid: np.ndarray        # [S] thresholds the curves are sampled at
    curves: np.ndarray      # [K + 1, 3, S] precision, recall, F1 per class and (last row) all together


def _clean(best: float, below: float) -> float:
    """The shortest decimal in (below, best]: the same detections pass it as pass `best`."""
    for d in range(1, 7):
        c = np.floor(best * 10 ** d) / 10 ** d
        if c > below:
            return float(round(c, d))
    return float(best)


def _curve(scores: np.ndarray, tp: np.ndarray, npos: int, grid: np.ndarray):
    """Best F1 point (threshold, P, R, F1; NaN if undefined) and the [3, S] curve on `grid` for detections
    sorted by score, highest first."""
    n = len(scores)
    curve = np.full((3, len(grid)), np.nan)
    if npos == 0 or n == 0:
        if npos > 0:  # no detections: recall 0, F1 0
            curve[1:] = 0.0
        return (np.nan,) * 4, curve
    tps = np.cumsum(tp)
    count = np.arange(1, n + 1)
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    f1 = np.where(last_of_tie, 2 * tps / (count + npos), -1.0)
    i = int(np.argmax(f1))
    # the threshold may go down to the next lower score; below the lowest, by at most 0.01 (a threshold
    # of 0 for "every detection" reads like a mistake)
    below = scores[i + 1] if i + 1 < n else scores[i] - 0.01
    best = (_clean(float(scores[i]), float(below)), tps[i] / count[i], tps[i] / npos, f1[i])
    # at each grid threshold g: the detections scoring >= g
    ascending = scores[::-1]
    m = n - np.searchsorted(ascending, grid, side="left")
    t = np.where(m > 0, tps[np.maximum(m - 1, 0)], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve[0] = np.where(m > 0, t / m, np.nan)
    curve[1] = t / npos
    curve[2] = 2 * t / (m + npos)
    return best, curve


def score_thresholds(inp: MatchInputs, det_gt: np.ndarray, det_ignored: np.ndarray, num_points: int = 101
                     ) -> ThresholdAnalysis:
    """From one row (area "all", the IoU of choice) of the standard matching."""
    K = inp.num_categories
    keep = ~det_ignored
    tp = (det_gt >= 0) & keep
    npos = inp.npos(inp.gt_crowd)
    lo = min(0.0, float(inp.det_score.min())) if len(inp.det_score) else 0.0
    hi = max(1.0, float(inp.det_score.max())) if len(inp.det_score) else 1.0
    grid = np.linspace(lo, hi, num_points)
    idx = np.flatnonzero(keep)
    order = idx[np.lexsort((idx, -inp.det_score[idx], inp.det_cat[idx]))]
    cats = inp.det_cat[order]
    bounds = np.searchsorted(cats, np.arange(K + 1))
    best = np.full((4, K), np.nan)
    curves = np.full((K + 1, 3, num_points), np.nan)
    for k in range(K):
        sel = order[bounds[k]:bounds[k + 1]]
        b, curves[k] = _curve(inp.det_score[sel], tp[sel], int(npos[k]), grid)
        best[:, k] = b
    pooled = idx[np.lexsort((idx, -inp.det_score[idx]))]
    ob, curves[K] = _curve(inp.det_score[pooled], tp[pooled], int(npos.sum()), grid)
    deploy = np.where(np.isnan(best[0]), ob[0], best[0])
    return ThresholdAnalysis(best[0], best[1], best[2], best[3], *[float(v) for v in ob], deploy, grid, curves)


def deploy_line(thresholds: np.ndarray, fallback: Optional[float] = 0.5) -> str:
    """`TEST.SCORE_THRESH_PER_CLASS "[...]"` for the command line (NaN -> `fallback`)."""
    values: List[str] = []
    for t in thresholds:
        t = fallback if (t is None or np.isnan(t)) else float(t)
        values.append(np.format_float_positional(t, trim="-"))  # shortest repr: the exact value
    return f'{CONFIG_KEY} "[{", ".join(values)}]"'
