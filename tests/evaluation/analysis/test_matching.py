"""The vectorised COCO matching gives pycocotools' own precision arrays, bit for bit."""
import contextlib
import copy
import io

import numpy as np
import pytest

from resdet.evaluation.analysis.inputs import build_match_inputs
from resdet.evaluation.analysis.matching import coco_matching, standard_precision, summary_from_precision
from resdet.evaluation.coco import load_eval_ground_truth

from .conftest import make_ground_truth, noisy_results


def _cocoeval(coco_gt, results, iou_type, iou_thrs=None):
    from pycocotools.cocoeval import COCOeval

    dets = copy.deepcopy(results)
    if iou_type == "segm":
        for d in dets:
            d.pop("bbox", None)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), iou_type)
        if iou_thrs is not None:
            ev.params.iouThrs = np.array(iou_thrs)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_precision_equals_pycocotools(iou_type):
    # crowd regions, ties in score, wrong classes, duplicates, objects of every size range
    gt = make_ground_truth(num_images=25, crowd_every=6, seed=1, size=(480, 640), max_box=155)
    results = noisy_results(gt, seed=2, score_decimals=1)
    coco_gt = load_eval_ground_truth(gt, (iou_type,))[iou_type]
    inp = build_match_inputs(coco_gt, results, iou_type)
    matching = coco_matching(inp)
    prec = standard_precision(inp, matching)          # [A, T, R, K]; thresholds 0.5..0.95 then 0.1
    ev = _cocoeval(coco_gt, results, iou_type)
    ref = ev.eval["precision"][..., -1]                # [T, R, K, A] at maxDets 100
    assert ref.shape[2] == 4 and (ref > 0).any()
    np.testing.assert_array_equal(prec[:, :10].transpose(1, 2, 3, 0), ref)
    summary = summary_from_precision(prec, matching)
    for i, name in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        assert ev.stats[i] > 0 and summary[name] == pytest.approx(ev.stats[i] * 100, abs=1e-9), name
    loc = _cocoeval(coco_gt, results, iou_type, iou_thrs=[0.1]).eval["precision"][..., -1]
    np.testing.assert_array_equal(prec[:, 10:].transpose(1, 2, 3, 0), loc)


def test_max_dets_per_image_and_category():
    gt = make_ground_truth(num_images=3, seed=4)
    results = noisy_results(gt, seed=5, per_object=60)   # far more than 100 per (image, category)
    coco_gt = load_eval_ground_truth(gt, ("bbox",))["bbox"]
    inp = build_match_inputs(coco_gt, results, "bbox")
    assert inp.truncated > 0
    assert np.bincount(inp.det_image * 100 + inp.det_cat).max() == 100
    prec = standard_precision(inp, coco_matching(inp))
    ref = _cocoeval(coco_gt, results, "bbox").eval["precision"][..., -1]
    np.testing.assert_array_equal(prec[:, :10].transpose(1, 2, 3, 0), ref)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_detections_that_touch_no_ground_truth(iou_type):
    # every detection lies in an empty corner of its image (no IoU pair at all): AP 0 as pycocotools says,
    # not an IndexError (an untrained model's detections did this)
    gt = make_ground_truth(num_images=3, seed=6, size=(480, 640), max_box=60)
    for a in gt["annotations"]:  # the objects in the top-left quarter, the detections in the bottom-right
        x, y, w, h = a["bbox"]
        a["bbox"] = [x % 200, y % 150, w, h]
        a["segmentation"] = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + w, a["bbox"][1], a["bbox"][0] + w,
                              a["bbox"][1] + h, a["bbox"][0], a["bbox"][1] + h]]
        a["area"] = float(w * h)
    import pycocotools.mask as mask_util

    corner = np.zeros((480, 640), np.uint8, order="F")
    corner[452:468, 602:618] = 1
    rle = mask_util.encode(corner)
    rle["counts"] = rle["counts"].decode("ascii")
    results = noisy_results(gt, seed=7, background=0, wrong_class=0.0)
    for r in results:
        r["bbox"] = [600.0, 450.0, 20.0, 20.0]
        if "segmentation" in r:
            r["segmentation"] = dict(rle)
    coco_gt = load_eval_ground_truth(gt, (iou_type,))[iou_type]
    inp = build_match_inputs(coco_gt, results, iou_type)
    assert len(inp.pair_det) == 0 and len(inp.det_score) > 0
    matching = coco_matching(inp)
    assert (matching.det_gt == -1).all()
    prec = standard_precision(inp, matching)
    ref = _cocoeval(coco_gt, results, iou_type).eval["precision"][..., -1]
    np.testing.assert_array_equal(prec[:, :10].transpose(1, 2, 3, 0), ref)
