"""The evaluation ground truth: checked with training's rules and repaired the same way, so that
pycocotools' COCOeval gets only what it can score.

Handed a raw COCO JSON, COCOeval fails after a whole training run with anonymous tracebacks, or scores
wrong without a word:
- a polygon of 2 points first in its list is read as a box (`TypeError: Argument 'bb' has incorrect
  type`), one of 1 point or none is `input type is not supported`;
- segmentation `[]` is `IndexError`, missing is `KeyError: 'segmentation'`, null a `TypeError` (segm only);
- a missing `iscrowd` is `KeyError: 'iscrowd'`;
- annotation id 0 (or below) is read as "unmatched", so perfect detections score AP 0.69-0.87.
`scorable_ground_truth` validates (resdet/data/coco_validation.py: the same checks and messages as
training's loader), then repairs what has one meaning (iscrowd missing = 0, polygons of < 3 points
dropped as training drops them, objects whose box has no area inside the image left out as training
leaves them out, ids <= 0 renumbered) with a warning that counts and names examples, and
raises CocoFormatError where a repair would make up numbers (a non-crowd instance with no mask, for
segm, unless DATASETS.INSTANCES_WITHOUT_MASK is "ignore"). The list is in datasets/README.md.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Sequence, Set, Tuple

from .coco import validation_warnings
from .coco_validation import CocoFormatError, examples, validate_coco_dict

__all__ = ["scorable_ground_truth", "EVAL_MASK_POLICIES", "LEFT_OUT_KEY"]

logger = logging.getLogger(__name__)

EVAL_MASK_POLICIES = ("error", "ignore")
# A key of the prepared ground-truth dict (pycocotools ignores it): one sentence per kind of object left
# out, with the count and why, for the evaluation's printed summary.
LEFT_OUT_KEY = "resdet_left_out"

# Messages already given in this process: periodic evaluation prepares the same ground truth again and
# again, and one warning per problem is enough.
_warned: Set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        logger.warning("%s", msg)


def _box_polygon(bbox: Sequence[float]) -> List[List[float]]:
    x, y, w, h = (float(v) for v in bbox)
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def scorable_ground_truth(data: Any, iou_types: Sequence[str] = ("bbox", "segm"),
                          instances_without_mask: str = "error", source: str = "<ground truth>",
                          copy_input: bool = True) -> Dict[str, dict]:
    """Per IoU type, a repaired copy of the COCO dict `data` that COCOeval scores correctly.

    `instances_without_mask` (segm only): "error" makes a non-crowd instance without a segmentation
    (missing, null or []) an error naming it; "ignore" makes it an ignore region (a crowd region the
    shape of its box), as training leaves it out. Instances whose polygons all have < 3 points (training
    leaves them out too) and crowd regions without a segmentation always become such regions for segm,
    with a warning. For bbox every instance is scored as it is. `copy_input` False repairs `data` in
    place (for a dict the caller has just read and owns: a deep copy of COCO-sized data takes seconds).
    """
    for t in iou_types:
        if t not in ("bbox", "segm"):
            raise ValueError(f"iou_types may hold 'bbox' and 'segm', got {t!r}")
    if instances_without_mask not in EVAL_MASK_POLICIES:
        raise ValueError(f"DATASETS.INSTANCES_WITHOUT_MASK must be one of {EVAL_MASK_POLICIES} for evaluation, "
                         f"got {instances_without_mask!r}")
    if copy_input:
        data = copy.deepcopy(data)
    report = validate_coco_dict(data, source=source)
    segm = "segm" in iou_types
    for msg in validation_warnings(report, source, for_masks=segm, for_evaluation=True):
        _warn_once(msg)

    if segm and instances_without_mask == "error" and report.without_mask:
        raise CocoFormatError(
            f"{source}: {len(report.without_mask)} non-crowd annotations have no segmentation (missing, null or "
            f"[]), e.g. ids {examples(report.without_mask)}, so segm evaluation cannot score them. Give them "
            "masks, evaluate bbox only, or set DATASETS.INSTANCES_WITHOUT_MASK ignore (ignore regions for segm, "
            "as they are left out of mask training)")

    renumbered = _renumber_nonpositive_ids(data["annotations"], report.nonpositive_ids)
    if renumbered:
        shown = ", ".join(f"{a} -> {b}" for a, b in renumbered[:5])
        _warn_once(f"{source}: {len(renumbered)} annotations have an id <= 0, which COCOeval reads as 'unmatched' "
                   f"(perfect detections would score below AP 1); renumbered for evaluation: {shown}")
    if report.missing_iscrowd:
        for ann in data["annotations"]:
            ann.setdefault("iscrowd", 0)
        _warn_once(f"{source}: {len(report.missing_iscrowd)} annotations have no 'iscrowd' (COCOeval needs it); "
                   f"read as 0, as training does, e.g. ids {examples(report.missing_iscrowd)}")
    for ann in data["annotations"]:  # what training drops, so that pycocotools never reads them as boxes
        if isinstance(ann.get("segmentation"), list):
            ann["segmentation"] = [p for p in ann["segmentation"] if len(p) >= 6]
    zero_area = _drop_zero_area_boxes(data)
    if zero_area:
        note = (f"{len(zero_area)} ground-truth objects left out: their box has no area inside the image, and "
                f"training leaves them out too (no detection can match them), e.g. ids {examples(zero_area)}")
        _warn_once(f"{source}: {note}")
        data[LEFT_OUT_KEY] = [note]

    out: Dict[str, dict] = {}
    if "bbox" in iou_types:
        out["bbox"] = data
    if segm:
        out["segm"] = _segm_ground_truth(data, report, source)
    return out


def _drop_zero_area_boxes(data: dict) -> List[int]:
    """Leave out the non-crowd annotations whose box, clipped to the image, has no area: training's rule
    (resdet/data/coco.py), so that evaluation scores what training learns from (kept, they would count as
    objects no detection can find: perfect detections scored box AP 0.92 instead of 1). Their ids."""
    sizes = {img["id"]: (img["width"], img["height"]) for img in data["images"]}
    kept, dropped = [], []
    for ann in data["annotations"]:
        W, H = sizes[ann["image_id"]]
        x, y, w, h = (float(v) for v in ann["bbox"])
        no_area = min(x + w, W) <= max(x, 0.0) or min(y + h, H) <= max(y, 0.0)
        if no_area and ann.get("iscrowd", 0) == 0:
            dropped.append(ann["id"])
        else:
            kept.append(ann)
    if dropped:
        data["annotations"] = kept
    return dropped


def _renumber_nonpositive_ids(anns: List[dict], ids: Sequence[int]) -> List[Tuple[int, int]]:
    if not ids:
        return []
    bad = set(ids)
    next_id = max(a["id"] for a in anns) + 1
    changes = []
    for ann in anns:
        if ann["id"] in bad:
            changes.append((ann["id"], next_id))
            ann["id"] = next_id
            next_id += 1
    return changes


def _segm_ground_truth(data: dict, report, source: str) -> dict:
    """`data` with every instance that has no usable mask made an ignore region shaped like its box (a
    shallow copy with new dicts for those annotations; `data` itself when there is none)."""
    maskless = set(report.without_mask) | set(report.short_polygon_only) | set(report.crowd_without_mask)
    if not maskless:
        return data
    anns = []
    for ann in data["annotations"]:
        if not ann.get("segmentation"):  # missing, null, [], or no polygon left of >= 3 points
            ann = dict(ann, iscrowd=1, segmentation=_box_polygon(ann["bbox"]))
        anns.append(ann)
    parts = [(report.without_mask, "have no segmentation (DATASETS.INSTANCES_WITHOUT_MASK ignore)"),
             (report.short_polygon_only, "have only polygons of fewer than 3 points (left out of training too)"),
             (report.crowd_without_mask, "are crowd regions without a segmentation")]
    for ids, why in parts:
        if ids:
            _warn_once(f"{source}: {len(ids)} annotations {why}; segm evaluation treats each as an ignore region "
                       f"the shape of its box (detections there count neither way; bbox evaluation scores "
                       f"them as usual), e.g. ids {examples(ids)}")
    return dict(data, annotations=anns)
