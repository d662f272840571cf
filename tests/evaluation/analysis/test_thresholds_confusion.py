"""Per-class thresholds of best F1, and the one-to-one confusion matrix."""
import numpy as np
import pytest

from resdet.config import load_config
from resdet.evaluation.analysis.confusion import deploy_matching
from resdet.evaluation.analysis.inputs import build_match_inputs
from resdet.evaluation.analysis.matching import coco_matching
from resdet.evaluation.analysis.thresholds import _clean, deploy_line, score_thresholds
from resdet.evaluation.coco import load_eval_ground_truth

from .conftest import make_ground_truth, noisy_results, perfect_results


def _inputs(gt, results, iou_type="bbox"):
    coco_gt = load_eval_ground_truth(gt, (iou_type,))[iou_type]
    inp = build_match_inputs(coco_gt, results, iou_type)
    return inp, coco_matching(inp).row("all", 0.5)


def _one_image(cats=2):
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "height": 100, "width": 400}],
          "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(cats)], "annotations": []}
    for i in range(4):  # four objects of class 1 in a row
        gt["annotations"].append({"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [10.0 + 90 * i, 10, 60, 60],
                                  "area": 3600.0, "iscrowd": 0})
    return gt


def test_best_f1_threshold_of_a_known_ranking():
    gt = _one_image()
    box = lambda i: [10.0 + 90 * i, 10, 60, 60]
    far = [10.0, 80, 15, 15]
    # scores 0.9 TP, 0.8 TP, 0.7 FP, 0.6347 TP, 0.6211 FP, 0.2 FP: F1 = .4, .667, .571, .75, .667, .6
    dets = [(0.9, box(0)), (0.8, box(1)), (0.7, far), (0.6347, box(2)), (0.6211, far), (0.2, far)]
    res = [{"image_id": 1, "category_id": 1, "bbox": b, "score": s} for s, b in dets]
    inp, (det_gt, det_ign) = _inputs(gt, res)
    thr = score_thresholds(inp, det_gt, det_ign)
    # the shortest decimal that keeps the same detections: in (0.6211, 0.6347]
    assert thr.best[0] == 0.63
    assert (thr.precision[0], thr.recall[0], thr.f1[0]) == pytest.approx((0.75, 0.75, 0.75))
    assert np.isnan(thr.best[1])  # class 2 has neither objects nor detections: the overall best
    assert thr.deploy[1] == thr.overall_best == 0.63
    # the curve, on the grid: at 0.65 the three highest count (2 TP of 3), at 0.5 five (3 TP)
    g = list(np.round(thr.grid, 4))
    assert thr.curves[0, :, g.index(0.65)] == pytest.approx([2 / 3, 0.5, 4 / 7])
    assert thr.curves[0, :, g.index(0.5)] == pytest.approx([3 / 5, 0.75, 6 / 9])
    line = deploy_line(thr.deploy)
    assert line == 'TEST.SCORE_THRESH_PER_CLASS "[0.63, 0.63]"'
    key, value = line.split(" ", 1)
    cfg = load_config(None, ["MODEL.ROI_HEADS.NUM_CLASSES", "2", key, value.strip('"')])
    assert list(cfg.TEST.SCORE_THRESH_PER_CLASS) == [0.63, 0.63]


def test_clean_thresholds():
    assert _clean(0.6347, 0.6211) == 0.63
    assert _clean(0.62, 0.1) == 0.6
    assert _clean(0.5, 0.4999999) == 0.5
    assert _clean(0.123456789, 0.1234567) == 0.123456789  # no short decimal between: the score itself
    assert _clean(0.123456789, 0.12345) == 0.123456
    assert _clean(0.06, 0.05) == 0.06


def test_confusion_counts_each_detection_and_object_once():
    gt = _one_image()
    b = lambda i, dx=0.0: [10.0 + 90 * i + dx, 10, 60, 60]
    res = [
        {"image_id": 1, "category_id": 1, "bbox": b(0), "score": 0.9},       # object 0: true positive
        {"image_id": 1, "category_id": 2, "bbox": b(0, 3), "score": 0.8},    # ... and another class on it: background
        {"image_id": 1, "category_id": 2, "bbox": b(1), "score": 0.7},       # object 1: taken for class 2
        {"image_id": 1, "category_id": 2, "bbox": b(1, 4), "score": 0.6},    # ... a second class-2 box: background
        {"image_id": 1, "category_id": 1, "bbox": b(2), "score": 0.3},       # object 2: below the threshold
    ]                                                                        # object 3: missed
    inp, (det_gt, det_ign) = _inputs(gt, res)
    dep = deploy_matching(inp, det_gt, det_ign, np.array([0.5, 0.5]))
    # rows: objects c0, c1, background; columns: detections c0, c1, background
    assert dep.matrix.tolist() == [[1, 1, 2], [0, 0, 0], [0, 2, 0]]
    assert dep.matrix[:2].sum(axis=1).tolist() == [4, 0]          # every object once
    assert dep.matrix[:, :2].sum(axis=0).tolist() == [1, 3]        # every kept detection once
    assert (dep.image_tp.tolist(), dep.image_fp.tolist(), dep.image_fn.tolist()) == ([1], [3], [3])
    # MMDetection's confusion_matrix.py would count detection 1 on object 0 too (a second time for that object)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_confusion_rows_and_columns_add_up(iou_type):
    gt = make_ground_truth(num_images=20, seed=2, crowd_every=9)
    res = noisy_results(gt, seed=3, wrong_class=0.4)
    inp, (det_gt, det_ign) = _inputs(gt, res, iou_type)
    thr = score_thresholds(inp, det_gt, det_ign)
    dep = deploy_matching(inp, det_gt, det_ign, thr.deploy)
    K = inp.num_categories
    objects = np.bincount(inp.gt_cat[~inp.gt_crowd], minlength=K)
    kept = np.bincount(inp.det_cat[dep.kept], minlength=K)
    assert dep.matrix[:K].sum(axis=1).tolist() == objects.tolist()
    assert dep.matrix[:, :K].sum(axis=0).tolist() == kept.tolist()
    # the diagonal is COCOeval's true positives among the kept detections
    assert np.trace(dep.matrix[:K, :K]) == int((dep.kept & (det_gt >= 0)).sum())
    assert dep.matrix[:K, :K].sum() - np.trace(dep.matrix[:K, :K]) > 0  # confusions exist in this data
    assert dep.matrix[:K, K].sum() == dep.image_fn.sum() - (dep.matrix[:K, :K].sum() - np.trace(dep.matrix[:K, :K]))


def test_perfect_results_give_a_diagonal_and_f1_of_one():
    gt = make_ground_truth(num_images=8, seed=4)
    inp, (det_gt, det_ign) = _inputs(gt, perfect_results(gt))
    thr = score_thresholds(inp, det_gt, det_ign)
    assert thr.f1 == pytest.approx(1.0)
    dep = deploy_matching(inp, det_gt, det_ign, thr.deploy)
    K = inp.num_categories
    assert (dep.matrix[:K, :K] == np.diag(np.diag(dep.matrix[:K, :K]))).all() and dep.matrix[K].sum() == 0
    assert dep.matrix[:, K].sum() == 0
