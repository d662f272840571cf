"""Ground truth and detections of one IoU type as flat arrays, and every overlap between them.

Every analysis (error types, the COCO analyze curves, the confusion matrix, thresholds, the image
ranking) reads the same `MatchInputs`: ground truth and detections as numpy arrays in a fixed order,
and the sparse list of (detection, ground truth, IoU) pairs of one image with IoU >= `MIN_IOU`, across
categories. The IoUs come from pycocotools' `mask.iou` (boxes, RLE masks, crowd regions as COCOeval
scores them: intersection over the detection's area), one call per image over all its detections and
ground truth, so nothing is computed twice for the analyses that need other categories' objects.

Orders, as COCOeval's (resdet/evaluation/analysis/matching.py relies on them):
- images and categories by sorted id;
- ground truth by image, then the order of the annotation file;
- detections by image, then score (highest first), then the order of the results file; only the
  `max_dets` highest-scoring of each (image, category) are kept, as COCOeval keeps them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

__all__ = ["MIN_IOU", "AREA_RANGES", "MatchInputs", "build_match_inputs"]

# The smallest IoU any analysis asks about: the COCO analyze curves' Loc (0.1) and TIDE's background
# threshold (at most 0.1 is background). Pairs below it are not stored.
MIN_IOU = 0.1
# COCOeval's area ranges (areaRng / areaRngLbl).
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
               "large": (96.0 ** 2, 1e10)}


@dataclass
class MatchInputs:
    iou_type: str
    image_ids: np.ndarray          # [I] sorted dataset image ids
    cat_ids: np.ndarray            # [K] sorted dataset category ids (label k + 1 in resdet)
    cat_names: List[str]
    supercategories: Optional[List[str]]  # None when some category has none
    file_names: List[str]          # per image
    image_sizes: np.ndarray        # [I, 2] height, width
    # ground truth [G]
    gt_image: np.ndarray
    gt_cat: np.ndarray             # category index 0..K-1
    gt_area: np.ndarray            # the annotation's 'area' (COCOeval's area ranges read it)
    gt_crowd: np.ndarray           # bool
    gt_box: np.ndarray             # [G, 4] xywh
    gt_ann_id: np.ndarray
    # detections [D]
    det_image: np.ndarray
    det_cat: np.ndarray
    det_score: np.ndarray          # float64
    det_area: np.ndarray           # box area (bbox) or mask area (segm), as COCOeval's loadRes sets it
    det_box: np.ndarray            # [D, 4] xywh
    det_result_index: np.ndarray   # index into the results list
    det_rank: np.ndarray           # rank in its (image, category) by score, 0 = highest
    # overlaps of one image with IoU >= MIN_IOU (crowd ground truth: intersection over detection area),
    # sorted by (detection, ground truth)
    pair_det: np.ndarray
    pair_gt: np.ndarray
    pair_iou: np.ndarray
    gt_rles: Optional[list] = field(default=None, repr=False)   # segm: per ground truth (drawing)
    det_rles: Optional[list] = field(default=None, repr=False)  # segm: per detection (drawing)
    truncated: int = 0             # detections beyond max_dets per (image, category), not kept

    @property
    def num_categories(self) -> int:
        return len(self.cat_ids)

    def npos(self, gt_ignored: np.ndarray) -> np.ndarray:
        """[K] ground truth that is not ignored, per category."""
        return np.bincount(self.gt_cat[~gt_ignored], minlength=self.num_categories)

    def gt_ignored(self, area: str) -> np.ndarray:
        """COCOeval's ignore flag of each ground truth in an area range: crowd, or area outside it."""
        lo, hi = AREA_RANGES[area]
        return self.gt_crowd | (self.gt_area < lo) | (self.gt_area > hi)

    def det_outside(self, area: str) -> np.ndarray:
        lo, hi = AREA_RANGES[area]
        return (self.det_area < lo) | (self.det_area > hi)


def _index_of(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(sorted_ids, ids)
    return idx


def _rank_in_groups(*keys: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal keys (the arrays are sorted by these keys)."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, np.int64)
    new = np.zeros(n, bool)
    new[0] = True
    for k in keys:
        new[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(new)
    return np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))


def build_match_inputs(coco_gt, results: Sequence[dict], iou_type: str, max_dets: int = 100,
                       keep_masks: bool = True) -> MatchInputs:
    """The arrays of one IoU type from a pycocotools COCO ground truth (as resdet/evaluation/coco.py
    prepares it: validated and repaired) and a validated results list."""
    from pycocotools import mask as mask_util

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    data = coco_gt.dataset
    image_ids = np.array(sorted(coco_gt.imgs), dtype=np.int64)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_ids = np.array([c["id"] for c in cats], dtype=np.int64)
    supers = [c.get("supercategory") for c in cats]
    supercategories = supers if all(isinstance(s, str) and s for s in supers) else None
    imgs = [coco_gt.imgs[int(i)] for i in image_ids]
    sizes = np.array([[im["height"], im["width"]] for im in imgs], dtype=np.int64).reshape(-1, 2)

    # ground truth, by image then file order (only images and categories of the ground truth)
    anns = data["annotations"]
    g_img = _index_of(image_ids, np.array([a["image_id"] for a in anns], dtype=np.int64))
    order = np.argsort(g_img, kind="stable")
    anns = [anns[i] for i in order]
    gt_image = g_img[order]
    gt_cat = _index_of(cat_ids, np.array([a["category_id"] for a in anns], dtype=np.int64))
    gt_area = np.array([a["area"] for a in anns], dtype=np.float64)
    gt_crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    gt_box = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    gt_ann_id = np.array([a["id"] for a in anns], dtype=np.int64)

    # detections: by image, score (highest first), file order; max_dets per (image, category)
    n = len(results)
    r_img = _index_of(image_ids, np.array([r["image_id"] for r in results], dtype=np.int64))
    r_cat = _index_of(cat_ids, np.array([r["category_id"] for r in results], dtype=np.int64))
    r_score = np.array([r["score"] for r in results], dtype=np.float64)
    order = np.lexsort((np.arange(n), -r_score, r_img))
    # rank within (image, category): sort by (image, category, -score, file order)
    by_group = np.lexsort((np.arange(n), -r_score, r_cat, r_img))
    rank = np.empty(n, np.int64)
    rank[by_group] = _rank_in_groups(r_img[by_group], r_cat[by_group])
    keep = order[rank[order] < max_dets]
    truncated = n - len(keep)
    det_result_index = keep
    det_image, det_cat, det_score, det_rank = r_img[keep], r_cat[keep], r_score[keep], rank[keep]

    gt_rles = det_rles = None
    if iou_type == "bbox":
        det_box = np.array([results[i]["bbox"] for i in keep], dtype=np.float64).reshape(-1, 4)
        det_area = det_box[:, 2] * det_box[:, 3]
        gt_geom, det_geom = gt_box, det_box
    else:
        # pycocotools' own conversion (polygons and uncompressed RLE -> compressed RLE), as COCOeval's
        # _prepare does it
        gt_geom = [coco_gt.annToRLE(a) for a in anns]
        det_geom = [results[i]["segmentation"] for i in keep]
        det_area = _mask_areas(det_geom)
        det_box = (mask_util.toBbox(det_geom).astype(np.float64).reshape(-1, 4) if len(keep)
                   else np.zeros((0, 4)))
        if keep_masks:
            gt_rles, det_rles = gt_geom, det_geom

    pair_det, pair_gt, pair_iou = _overlaps(gt_image, det_image, gt_geom, det_geom, gt_crowd, len(image_ids),
                                            iou_type)
    return MatchInputs(
        iou_type=iou_type, image_ids=image_ids, cat_ids=cat_ids, cat_names=[c["name"] for c in cats],
        supercategories=supercategories, file_names=[im.get("file_name", "") for im in imgs], image_sizes=sizes,
        gt_image=gt_image, gt_cat=gt_cat, gt_area=gt_area, gt_crowd=gt_crowd, gt_box=gt_box, gt_ann_id=gt_ann_id,
        det_image=det_image, det_cat=det_cat, det_score=det_score, det_area=det_area, det_box=det_box,
        det_result_index=det_result_index, det_rank=det_rank, pair_det=pair_det, pair_gt=pair_gt,
        pair_iou=pair_iou, gt_rles=gt_rles, det_rles=det_rles, truncated=truncated)


def _mask_areas(rles: list) -> np.ndarray:
    """pycocotools' mask.area of each RLE, in chunks of 255: with numpy 2 its area() of a list builds a uint8
    array of the list's length first, an OverflowError from 256 on (one call per mask would be slow)."""
    from pycocotools import mask as mask_util

    parts = [np.asarray(mask_util.area(rles[i:i + 255]), dtype=np.float64).reshape(-1)
             for i in range(0, len(rles), 255)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _bounds(sorted_image: np.ndarray, num_images: int) -> np.ndarray:
    return np.searchsorted(sorted_image, np.arange(num_images + 1))


def _overlaps(gt_image, det_image, gt_geom, det_geom, gt_crowd, num_images: int, iou_type: str):
    """(detection, ground truth, IoU) of each image's pairs with IoU >= MIN_IOU, all categories."""
    from pycocotools import mask as mask_util

    from tqdm import tqdm

    gb, db = _bounds(gt_image, num_images), _bounds(det_image, num_images)
    crowd = gt_crowd.astype(np.uint8)
    dets, gts, ious = [], [], []
    todo = np.flatnonzero((np.diff(gb) > 0) & (np.diff(db) > 0))
    # a bar with an ETA where it takes a while (masks of thousands of images), none for a few images
    for i in tqdm(todo, desc=f"{iou_type} overlaps", unit="img", mininterval=2.0, disable=len(todo) < 500,
                  leave=False):
        g0, g1, d0, d1 = gb[i], gb[i + 1], db[i], db[i + 1]
        iou = mask_util.iou(det_geom[d0:d1], gt_geom[g0:g1], crowd[g0:g1])
        d, g = np.nonzero(iou >= MIN_IOU)
        if len(d):
            dets.append(d + d0)
            gts.append(g + g0)
            ious.append(iou[d, g])
    if not dets:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(dets), np.concatenate(gts), np.concatenate(ious)
