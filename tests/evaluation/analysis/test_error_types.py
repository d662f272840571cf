"""TIDE's error types on constructed cases whose answers are known, and against tidecv itself."""
import contextlib
import copy
import io
import json

import numpy as np
import pytest

from resdet.evaluation.analysis.error_types import ERROR_TYPES, error_types
from resdet.evaluation.analysis.inputs import build_match_inputs
from resdet.evaluation.analysis.matching import coco_matching
from resdet.evaluation.coco import load_eval_ground_truth

from .conftest import _rle, make_ground_truth, noisy_results, perfect_results

IOU_TYPES = ["bbox", "segm"]


def _analyse(gt, results, iou_type, **kw):
    coco_gt = load_eval_ground_truth(gt, (iou_type,))[iou_type]
    inp = build_match_inputs(coco_gt, results, iou_type)
    det_gt, det_ign = coco_matching(inp).row("all", kw.pop("fg", 0.5))
    return inp, error_types(inp, det_gt, det_ign, **kw)


def _with_box(gt, r, box):
    """Result `r` moved to `box` (its mask: the diamond of the box, as the ground truth's)."""
    im = next(i for i in gt["images"] if i["id"] == r["image_id"])
    r = dict(r, bbox=[float(v) for v in box])
    r["segmentation"] = _rle(r["bbox"], im)
    return r


def _main(ea):
    o = ea.overall()
    return {t: o[t] for t in ERROR_TYPES}


def _only(main, moved):
    """The types other than `moved` are 0; `moved` is positive."""
    for t, v in main.items():
        if t == moved:
            assert v > 1.0, (t, main)
        else:
            assert abs(v) < 1e-9, (t, main)


@pytest.fixture(scope="module")
def gt():
    return make_ground_truth(num_images=16, seed=11)


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_perfect_results_have_no_errors(gt, iou_type):
    _, ea = _analyse(gt, perfect_results(gt), iou_type)
    o = ea.overall()
    assert o["AP"] == pytest.approx(100.0)
    assert all(abs(o[t]) < 1e-9 for t in ea.dap)
    assert all(c.sum() == 0 for c in ea.counts.values()) and (ea.det_type == -1).all()


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_shifted_boxes_move_only_loc(gt, iou_type):
    # every detection moved right by 40% of its width: IoU about 0.43 (boxes) / 0.22 (diamond masks)
    res = [_with_box(gt, r, [r["bbox"][0] + 0.4 * r["bbox"][2]] + r["bbox"][1:]) for r in perfect_results(gt)]
    _, ea = _analyse(gt, res, iou_type)
    assert ea.overall()["AP"] == pytest.approx(0.0)
    _only(_main(ea), "Loc")
    assert ea.overall()["Loc"] == pytest.approx(100.0)
    assert ea.counts["Loc"].sum() == len(res)


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_relabelled_detections_move_only_cls(gt, iou_type):
    cats = sorted(c["id"] for c in gt["categories"])
    res = perfect_results(gt)
    rng = np.random.default_rng(0)
    for r in res[::2]:  # half of them, each to another class
        r["category_id"] = int(rng.choice([c for c in cats if c != r["category_id"]]))
    _, ea = _analyse(gt, res, iou_type)
    _only(_main(ea), "Cls")
    assert ea.overall()["AP"] + ea.overall()["Cls"] == pytest.approx(100.0)


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_duplicates_move_only_dupe(gt, iou_type):
    res = perfect_results(gt)
    dupes = [dict(copy.deepcopy(r), score=r["score"] * 0.5) for r in res[::3]]  # second, lower-scoring copies
    _, ea = _analyse(gt, res + dupes, iou_type)
    _only(_main(ea), "Dupe")
    assert ea.overall()["AP"] + ea.overall()["Dupe"] == pytest.approx(100.0)
    assert ea.counts["Dupe"].sum() == len(dupes)


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_dropped_detections_move_only_miss(gt, iou_type):
    res = perfect_results(gt)
    kept = res[1::3] + res[2::3]
    _, ea = _analyse(gt, kept, iou_type)
    _only(_main(ea), "Miss")
    o = ea.overall()
    assert o["AP"] + o["Miss"] == pytest.approx(100.0) and o["FalseNeg"] == pytest.approx(o["Miss"])
    assert ea.counts["Miss"].sum() == len(res) - len(kept)


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_detections_far_from_objects_move_only_bkg(iou_type):
    # objects only in the left three columns of cells; detections in the empty right column
    gt = make_ground_truth(num_images=10, seed=5)
    gt["annotations"] = [a for a in gt["annotations"] if a["bbox"][0] + a["bbox"][2] < 118]
    res = perfect_results(gt)
    rng = np.random.default_rng(1)
    cats = sorted(c["id"] for c in gt["categories"])
    for im in gt["images"]:
        det = {"image_id": im["id"], "category_id": int(rng.choice(cats)), "score": float(rng.uniform(0.3, 1.0))}
        res.append(_with_box(gt, det, [124.0, 10.0 + 30 * rng.random(), 30.0, 30.0]))
    _, ea = _analyse(gt, res, iou_type)
    _only(_main(ea), "Bkg")
    assert ea.overall()["FalsePos"] == pytest.approx(ea.overall()["Bkg"])
    assert ea.counts["Bkg"].sum() == len(gt["images"])


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_wrong_class_and_off_is_both(gt, iou_type):
    cats = sorted(c["id"] for c in gt["categories"])
    res = perfect_results(gt)
    for r in res[::2]:
        r.update(_with_box(gt, r, [r["bbox"][0] + 0.4 * r["bbox"][2]] + r["bbox"][1:]))
        r["category_id"] = cats[(cats.index(r["category_id"]) + 1) % len(cats)]
    _, ea = _analyse(gt, res, iou_type)
    main = _main(ea)
    assert main["Both"] > 1.0
    # the objects those detections missed are found by no one: Miss; nothing else
    assert all(abs(main[t]) < 1e-9 for t in ("Cls", "Loc", "Dupe", "Bkg")), main


def _tidecv_numbers(gt, results, iou_type, tmp_path):
    tidecv = pytest.importorskip("tidecv", reason="tidecv is not installed (pip install --no-deps tidecv appdirs "
                                                  "seaborn: it asks for opencv-python, which resdet never installs)")
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    tide = tidecv.TIDE()
    with contextlib.redirect_stdout(io.StringIO()):
        tide.evaluate(tidecv.datasets.COCO(str(tmp_path / "gt.json")),
                      tidecv.datasets.COCOResult(str(tmp_path / "res.json")),
                      mode=tidecv.TIDE.BOX if iou_type == "bbox" else tidecv.TIDE.MASK)
        main, special = tide.get_main_errors()["res"], tide.get_special_errors()["res"]
    run = tide.runs["res"]
    return {"AP": run.ap, **main, **special}


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_same_numbers_as_tidecv(iou_type, tmp_path):
    # every class has objects, no crowd regions, at most 100 detections per image, distinct scores: the
    # cases where tidecv's rules and COCOeval's agree (error_types.py lists the others)
    gt = make_ground_truth(num_images=40, seed=3)
    results = noisy_results(gt, seed=4, per_object=3, background=150, wrong_class=0.3)
    ref = _tidecv_numbers(gt, results, iou_type, tmp_path)
    tide_grid = np.array([x / 100 for x in range(101)])  # tidecv's recall points (pycocotools': linspace)
    _, ea = _analyse(gt, results, iou_type, recall_thresholds=tide_grid)
    ours = ea.overall()
    assert set(ref) == set(ours)
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], abs=1e-6), (k, ours, ref)
    assert all(ref[t] > 0.1 for t in ERROR_TYPES), ref  # every type occurs
    # on COCOeval's own recall points the numbers move only where a recall lands exactly on a point
    _, ea = _analyse(gt, results, iou_type)
    for k, v in ea.overall().items():
        assert v == pytest.approx(ref[k], abs=0.2), k
