"""What the model does at its deploy thresholds: a one-to-one confusion matrix and each image's errors.

Only detections scoring at least their class's threshold count (the thresholds of thresholds.py, or one
number for all). Every detection and every object is counted exactly once:
1. same class: COCOeval's greedy matching at the IoU threshold (these are its true positives: greedy in
   score order, the kept detections of a class are the top of its ranking, so their matches do not
   change when the others are dropped);
2. another class: the detections left, highest score first, each take the free object of another
   class they overlap most (IoU >= the threshold), each object once;
3. what is left: a detection is a false positive on background, an object a miss.
Rows are the objects' classes and a background row, columns the detections' classes and a background
column, so a row sums to that class's objects and a column to that class's kept detections (MMDetection's
confusion_matrix.py lets one detection count against several objects and one object be matched by
several detections, so its rows and columns do not add up). Detections on crowd regions are left out
(counted in `ignored_on_crowd`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .inputs import MatchInputs
from .matching import greedy_match

__all__ = ["DeployResult", "deploy_matching"]


@dataclass
class DeployResult:
    iou: float
    score_thresholds: np.ndarray  # [K]
    kept: np.ndarray              # [D] bool: scores at least its class's threshold, not on a crowd region
    det_tp: np.ndarray            # [D] bool (kept true positives)
    det_gt: np.ndarray            # [D] the object: the true positive's, or the other class's it was taken for; -1
    gt_found: np.ndarray          # [G] bool: a kept detection of its class took it
    gt_confused: np.ndarray       # [G] detection of another class that took it, -1
    matrix: np.ndarray            # [K + 1, K + 1] rows objects (last: background), columns detections
    ignored_on_crowd: int
    image_tp: np.ndarray          # [I]
    image_fp: np.ndarray
    image_fn: np.ndarray


def deploy_matching(inp: MatchInputs, det_gt: np.ndarray, det_ignored: np.ndarray,
                    score_thresholds: np.ndarray, iou: float = 0.5) -> DeployResult:
    """`det_gt`, `det_ignored`: the standard matching's row at (area "all", `iou`)."""
    K, D, G, I = inp.num_categories, len(inp.det_score), len(inp.gt_cat), len(inp.image_ids)
    thr = np.asarray(score_thresholds, np.float64)
    above = inp.det_score >= thr[inp.det_cat]
    ignored_on_crowd = int((above & det_ignored).sum())
    kept = above & ~det_ignored
    det_tp = kept & (det_gt >= 0)
    gt_found = np.zeros(G, bool)
    gt_found[det_gt[det_tp]] = True
    fp = kept & ~det_tp

    # step 2: left-over detections against free objects of other classes
    free = ~gt_found & ~inp.gt_crowd
    cand = fp[inp.pair_det] & free[inp.pair_gt] & (inp.det_cat[inp.pair_det] != inp.gt_cat[inp.pair_gt]) \
        & (inp.pair_iou >= iou)
    pd, pg, piou = inp.pair_det[cand], inp.pair_gt[cand], inp.pair_iou[cand]
    # rank among the image's left-over detections (detections are sorted by image, then score)
    fp_idx = np.flatnonzero(fp)
    rank = np.zeros(D, np.int64)
    if len(fp_idx):
        img = inp.det_image[fp_idx]
        starts = np.flatnonzero(np.r_[True, img[1:] != img[:-1]])
        rank[fp_idx] = np.arange(len(fp_idx)) - np.repeat(starts, np.diff(np.r_[starts, len(fp_idx)]))
    m = greedy_match(pd, pg, piou, np.zeros((1, len(pd)), bool), np.zeros(len(pd), bool), rank, [iou], D, G)[0, 0]
    confused = m >= 0
    out_gt = np.where(det_tp, det_gt, -1)
    out_gt[confused] = pg[m[confused]]
    gt_confused = np.full(G, -1, np.int64)
    gt_confused[out_gt[confused]] = np.flatnonzero(confused)

    matrix = np.zeros((K + 1, K + 1), np.int64)
    matched = kept & (out_gt >= 0)
    np.add.at(matrix, (inp.gt_cat[out_gt[matched]], inp.det_cat[matched]), 1)
    np.add.at(matrix, (np.full(int((kept & ~matched).sum()), K), inp.det_cat[kept & ~matched]), 1)
    missed = ~inp.gt_crowd & ~gt_found & (gt_confused < 0)
    np.add.at(matrix, (inp.gt_cat[missed], np.full(int(missed.sum()), K)), 1)

    image_tp = np.bincount(inp.det_image[det_tp], minlength=I)
    image_fp = np.bincount(inp.det_image[fp], minlength=I)
    image_fn = np.bincount(inp.gt_image[~inp.gt_crowd & ~gt_found], minlength=I)
    return DeployResult(iou, thr, kept, det_tp, out_gt, gt_found, gt_confused, matrix, ignored_on_crowd,
                        image_tp, image_fp, image_fn)
