"""COCO's analyze curves (Hoiem, Chodpathumwan and Dai, "Diagnosing Error in Object Detectors", ECCV
2012, as cocodataset.org/#detection-eval describes its analyze() function): precision-recall curves
after removing one kind of error after another, overall and per category, per area range.

- C75, C50: PR at IoU 0.75 and 0.50 (their areas are AP75 and AP50);
- Loc: at IoU 0.10: localisation errors no longer count (duplicates still do); the rest are at 0.10 too;
- Sim: detections that match an object of another class of the same supercategory count as neither
  false nor true positives (that object is given the detection's class and the ignore flag);
- Oth: the same for objects of any other class;
- BG: every remaining false positive (background) removed: precision 1 up to Oth's highest recall;
- FN: every remaining error removed: precision 1 everywhere (the misses are what is left).

The bands between successive curves are what each error costs. pycocotools' Python API has no
analyze(); MMDetection's port runs COCOeval again per category with relabelled ground truth (slow, and
pycocotools overwrites the ignore flag it sets, so its Sim and Oth count the relabelled objects as
positives). Here they are two more runs of the vectorised matcher with the other classes' objects as
ignored candidates (tests/evaluation/analysis/test_pr_bands.py checks them against COCOeval with the
ignore flag kept). Without supercategories in the ground truth, Sim is not computed (None).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from .inputs import MatchInputs
from .matching import Matching, match_with_ground_truth, precision_curves

__all__ = ["BANDS", "PRBands", "pr_bands"]

BANDS = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
DESCRIPTIONS = {
    "C75": "PR at IoU .75 (area: AP75)",
    "C50": "PR at IoU .50 (area: AP50)",
    "Loc": "PR at IoU .10: localisation errors ignored (not duplicates)",
    "Sim": "also no supercategory confusions",
    "Oth": "also no confusions with any other class",
    "BG": "also no false positives on background",
    "FN": "also no missed objects (precision 1)",
}


@dataclass
class PRBands:
    areas: Sequence[str]
    precision: Dict[str, Optional[np.ndarray]]   # band -> [A, R, K] (-1: no ground truth), None if not computed

    def mean_curve(self, band: str, a: int, k: Optional[int] = None) -> Optional[np.ndarray]:
        """[R] the curve of one category, or the mean over the categories with ground truth; None if undefined."""
        p = self.precision[band]
        if p is None:
            return None
        if k is not None:
            return None if p[a, 0, k] < 0 else p[a, :, k]
        valid = p[a, 0, :] > -1
        return p[a][:, valid].mean(axis=1) if valid.any() else None

    def ap(self, band: str, a: int, k: Optional[int] = None) -> float:
        c = self.mean_curve(band, a, k)
        return float("nan") if c is None else float(c.mean() * 100)


def pr_bands(inp: MatchInputs, matching: Matching, precision: np.ndarray) -> PRBands:
    """`precision` is the standard matching's [A, T, R, K] (matching.standard_precision); the matching
    must hold IoU thresholds 0.75, 0.5 and 0.1."""
    areas = list(matching.areas)
    th = [round(float(t), 4) for t in matching.thresholds]
    out: Dict[str, Optional[np.ndarray]] = {
        "C75": precision[:, th.index(0.75)], "C50": precision[:, th.index(0.5)], "Loc": precision[:, th.index(0.1)]}
    same = inp.det_cat[inp.pair_det] == inp.gt_cat[inp.pair_gt]
    npos = matching.npos
    if inp.supercategories is None:
        out["Sim"] = None
    else:
        sup = np.unique(np.asarray(inp.supercategories), return_inverse=True)[1].reshape(-1)
        same_super = sup[inp.det_cat[inp.pair_det]] == sup[inp.gt_cat[inp.pair_gt]]
        det_gt, ign = match_with_ground_truth(inp, same | same_super, True, [0.1], areas)
        out["Sim"] = precision_curves(inp.det_cat, inp.det_score, det_gt[:, 0] >= 0, ign[:, 0], npos,
                                      inp.num_categories)
    det_gt, ign = match_with_ground_truth(inp, np.ones(len(inp.pair_det), bool), True, [0.1], areas)
    oth = precision_curves(inp.det_cat, inp.det_score, det_gt[:, 0] >= 0, ign[:, 0], npos, inp.num_categories)
    out["Oth"] = oth
    out["BG"] = np.where(oth > -1, (oth > 0).astype(np.float64), -1.0)
    out["FN"] = np.where(oth > -1, 1.0, -1.0)
    return PRBands(tuple(areas), out)
