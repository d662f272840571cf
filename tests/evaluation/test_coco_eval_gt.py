"""Evaluation sees the ground truth training accepted (resdet/data/coco_eval_gt.py), and what COCOeval
would do without a word is said: each case builds the bad file, shows what raw pycocotools does with
it, and checks resdet's message and numbers."""
import contextlib
import copy
import io
import json
import logging

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resdet.data.coco_validation import CocoFormatError
from resdet.evaluation.coco import COCOEvaluator, evaluate_coco_results, evaluate_results_file

SQUARES = [(1, 10, 10), (1, 50, 10), (2, 10, 50), (2, 50, 50), (1, 60, 70)]  # (image, x, y), 20 px squares


def _gt():
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100} for i in (1, 2)]
    anns = []
    for k, (img, x, y) in enumerate(SQUARES):
        anns.append({"id": k + 1, "image_id": img, "category_id": 1 + k % 2, "bbox": [x, y, 20, 20], "area": 400.0,
                     "iscrowd": 0, "segmentation": [[x, y, x + 20, y, x + 20, y + 20, x, y + 20]]})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def _perfect(gt, ann_ids=None):
    """Results equal to the ground truth boxes, with masks of the boxes (the GT masks are the boxes)."""
    out = []
    for a in gt["annotations"]:
        if ann_ids is not None and a["id"] not in ann_ids:
            continue
        x, y, w, h = a["bbox"]
        m = np.zeros((100, 100), np.uint8)
        m[int(y):int(y + h), int(x):int(x + w)] = 1
        rle = mask_util.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x, y, w, h],
                    "score": 0.9, "segmentation": rle})
    return out


def _raw_pycocotools(gt, results, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats


def _write(tmp_path, gt, results):
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    return str(tmp_path / "gt.json"), str(tmp_path / "res.json")


@pytest.mark.parametrize("damage, pycocotools_error, warning", [
    # a 2-point polygon first in its list: pycocotools reads it as a box
    (lambda d: d["annotations"][0]["segmentation"].insert(0, [10, 10, 30, 30]), "Argument 'bb' has incorrect type",
     "dropped the polygons with fewer than 3 points of 1 annotations (their other polygons stay), e.g. ids [1]"),
    (lambda d: d["annotations"][1]["segmentation"].insert(0, [50, 10]), "input type is not supported",
     "dropped the polygons with fewer than 3 points of 1 annotations (their other polygons stay), e.g. ids [2]"),
    (lambda d: d["annotations"][2].pop("iscrowd"), "'iscrowd'",
     "1 annotations have no 'iscrowd' (COCOeval needs it); read as 0, as training does, e.g. ids [3]"),
])
def test_ground_truth_pycocotools_fails_on_is_repaired_as_training_repairs_it(tmp_path, caplog, damage,
                                                                               pycocotools_error, warning):
    gt = _gt()
    damage(gt)
    results = _perfect(gt)
    with pytest.raises(Exception, match=pycocotools_error):
        for t in ("bbox", "segm"):
            _raw_pycocotools(gt, results, t)
    gt_path, res_path = _write(tmp_path, gt, results)
    with caplog.at_level(logging.WARNING):
        metrics = evaluate_results_file(gt_path, res_path)
    assert metrics["bbox"]["AP"] == pytest.approx(100.0) and metrics["segm"]["AP"] == pytest.approx(100.0)
    assert warning in caplog.text


def test_instances_without_a_mask_are_an_error_or_ignore_regions_for_segm(tmp_path, caplog):
    gt = _gt()
    gt["annotations"][0].pop("segmentation")
    gt["annotations"][1]["segmentation"] = None
    gt["annotations"][2]["segmentation"] = []
    results = _perfect(gt)
    with pytest.raises(Exception):  # KeyError / TypeError / IndexError, no word on which annotation
        _raw_pycocotools(gt, results, "segm")
    gt_path, res_path = _write(tmp_path, gt, results)
    with pytest.raises(CocoFormatError, match=r"3 non-crowd annotations have no segmentation \(missing, null or "
                                              r"\[\]\), e.g. ids \[1, 2, 3\].*DATASETS.INSTANCES_WITHOUT_MASK"):
        evaluate_results_file(gt_path, res_path)
    # bbox needs no mask: the instances count as they are
    assert evaluate_results_file(gt_path, res_path, ["bbox"])["bbox"]["AP"] == pytest.approx(100.0)
    # "ignore": ignore regions for segm. Detections on them count neither way, so perfect detections of
    # the rest score 1 with or without detections on the mask-less ones; a miss elsewhere still counts
    for kept in (None, {4, 5}):
        _, res_path = _write(tmp_path, gt, _perfect(gt, kept))
        with caplog.at_level(logging.WARNING):
            m = evaluate_results_file(gt_path, res_path, instances_without_mask="ignore")
        assert m["segm"]["AP"] == pytest.approx(100.0) and m["segm"]["AR100"] == pytest.approx(100.0)
    # bbox still counts the 3 instances missed there: recall 1/3 for a (ids 1, 3, 5), 1/2 for b (2, 4)
    assert m["bbox"]["AR100"] == pytest.approx(100 * (1 / 3 + 1 / 2) / 2)
    assert "3 annotations have no segmentation (DATASETS.INSTANCES_WITHOUT_MASK ignore); segm evaluation treats " \
           "each as an ignore region the shape of its box" in caplog.text and "e.g. ids [1, 2, 3]" in caplog.text
    _, res_path = _write(tmp_path, gt, _perfect(gt, {1, 2, 3, 4}))
    m = evaluate_results_file(gt_path, res_path, instances_without_mask="ignore")
    assert m["segm"]["AR100"] == pytest.approx(50.0)  # scorable masks: 5 (a, missed) and 4 (b, found)


def test_annotation_id_zero_is_renumbered_not_scored_as_unmatched(tmp_path, caplog):
    gt = _gt()
    for a in gt["annotations"]:
        a["id"] -= 1  # ids 0..4
    results = _perfect(gt)
    assert _raw_pycocotools(gt, results, "bbox")[0] < 0.9  # pycocotools: perfect detections below AP 1
    gt_path, res_path = _write(tmp_path, gt, results)
    with caplog.at_level(logging.WARNING):
        metrics = evaluate_results_file(gt_path, res_path)
    assert metrics["bbox"]["AP"] == pytest.approx(100.0) and metrics["segm"]["AP"] == pytest.approx(100.0)
    assert "1 annotations have an id <= 0, which COCOeval reads as 'unmatched'" in caplog.text
    assert "renumbered for evaluation: 0 -> 5" in caplog.text


def test_a_type_the_results_cannot_give_is_said_or_an_error(tmp_path, caplog):
    gt = _gt()
    boxes_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in _perfect(gt)]
    gt_path, res_path = _write(tmp_path, gt, boxes_only)
    with caplog.at_level(logging.WARNING):
        metrics = evaluate_results_file(gt_path, res_path)  # bbox and segm as far as the results carry them
    assert sorted(metrics) == ["bbox"]
    assert "none of its 5 results has a 'segmentation': segm is not evaluated, only bbox" in caplog.text
    with pytest.raises(CocoFormatError, match="segm evaluation was asked for, but none of its 5 results has a "
                                              "'segmentation'"):
        evaluate_results_file(gt_path, res_path, ["segm"])
    # every result is checked, not only the first: one without a mask among masks is named
    for missing in (0, 3):
        mixed = _perfect(gt)
        mixed[missing].pop("segmentation")
        _, res_path = _write(tmp_path, gt, mixed)
        with pytest.raises(CocoFormatError, match=rf"result #{missing} \(image \d\): an RLE segmentation must be"):
            evaluate_results_file(gt_path, res_path)


def test_no_ground_truth_is_explained_and_saved_as_null(tmp_path, caplog, capsys):
    gt = _gt()
    results = _perfect(gt)
    gt["annotations"] = []
    gt_path, res_path = _write(tmp_path, gt, results)
    with caplog.at_level(logging.WARNING):
        metrics = evaluate_results_file(gt_path, res_path, output_dir=str(tmp_path / "out"))
    assert np.isnan(metrics["bbox"]["AP"]) and np.isnan(metrics["segm"]["AR100"])
    assert "bbox: the 2 evaluated images have no (non-crowd) ground-truth instance, so AP and AR are undefined: " \
           "pycocotools prints -1, resdet saves null" in caplog.text
    assert json.load(open(tmp_path / "out" / "coco_eval.json"))["bbox"]["AP"] is None
    # with ground truth, but none in an area range or of a category, the printed -1 / nan are explained
    gt = _gt()
    gt["categories"].append({"id": 3, "name": "unused"})
    gt_path, res_path = _write(tmp_path, gt, _perfect(gt))
    capsys.readouterr()
    evaluate_results_file(gt_path, res_path, ["bbox"])
    out = capsys.readouterr().out
    assert "(bbox: -1.000 above = no ground-truth instance in that area range" in out
    assert "(nan: no ground-truth instance of that category among the evaluated images)" in out


def test_no_detections_score_zero_the_same_way_in_training_and_eval_py(tmp_path, caplog):
    gt = _gt()
    gt_path, res_path = _write(tmp_path, gt, [])
    with caplog.at_level(logging.WARNING):
        from_file = evaluate_results_file(gt_path, res_path)  # tools/eval.py --results
    ev = COCOEvaluator(gt_path, ("bbox", "segm"))  # periodic evaluation in training
    ev.process([{"image_id": 1}, {"image_id": 2}], [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                                                    "labels": torch.zeros(0, dtype=torch.int64),
                                                    "masks": torch.zeros(0, 1, 100, 100)}] * 2)
    from_model = ev.evaluate()
    for metrics in (from_file, from_model):
        for t in ("bbox", "segm"):
            assert metrics[t]["AP"] == 0.0 and metrics[t]["AR100"] == 0.0
            assert np.isnan(metrics[t]["APl"])  # no large ground truth: undefined, not 0
            assert metrics[t]["per_category"] == {"a": 0.0, "b": 0.0}
    assert "no detections on the 2 evaluated images: every AP and AR is 0 where there is ground truth" in caplog.text


def test_more_detections_than_max_dets_are_counted_once(caplog):
    gt = _gt()
    many = [{"image_id": 1, "category_id": 1, "bbox": [float(i % 80), 5.0, 10.0, 10.0], "score": 0.5}
            for i in range(130)]
    results = _perfect(gt) + many
    with caplog.at_level(logging.WARNING):
        evaluate_coco_results(gt, [{k: v for k, v in r.items() if k != "segmentation"} for r in results], ("bbox",))
    lines = [r.getMessage() for r in caplog.records if "maxDets" in r.getMessage()]
    assert len(lines) == 1
    assert "1 images have more than 100 detections (up to 133; 33 detections in all beyond the limit)" in lines[0]


def test_an_object_training_leaves_out_for_its_zero_area_box_is_left_out_of_evaluation_too(tmp_path, caplog, capsys):
    """Training drops a non-crowd object whose box has no area inside the image (data/coco.py); evaluation
    kept it, so perfect detections scored box AP 0.92 (issue 21). Now both leave it out, and say so."""
    gt = _gt()
    results = _perfect(gt)
    gt["annotations"].append({"id": 6, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10], "area": 0.0,
                              "iscrowd": 0, "segmentation": [[5, 5, 5, 5, 5, 15]]})
    gt["annotations"].append({"id": 7, "image_id": 2, "category_id": 2, "bbox": [100, 40, 5, 8], "area": 0.0,
                              "iscrowd": 0, "segmentation": [[100, 40, 100.5, 40, 100.5, 48]]})  # on the border
    assert _raw_pycocotools(gt, results, "bbox")[0] < 0.95
    gt_path, res_path = _write(tmp_path, gt, results)
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        metrics = evaluate_results_file(gt_path, res_path)
    assert metrics["bbox"]["AP"] == pytest.approx(100.0) and metrics["segm"]["AP"] == pytest.approx(100.0)
    out = capsys.readouterr().out
    for iou_type in ("bbox", "segm"):
        assert (f"({iou_type}: 2 ground-truth objects left out: their box has no area inside the image, and training "
                "leaves them out too (no detection can match them), e.g. ids [6, 7])") in out
    assert "2 ground-truth objects left out" in caplog.text
    # the training loader leaves out the same two
    from resdet.data.coco import load_coco_json

    for img in gt["images"]:
        from PIL import Image

        Image.new("RGB", (100, 100)).save(tmp_path / img["file_name"])
    dicts, meta = load_coco_json(gt_path, str(tmp_path), check_images="none")
    assert meta.stats["degenerate_boxes"] == 2
    assert sorted(a["id"] for d in dicts for a in d["annotations"]) == [1, 2, 3, 4, 5]


def test_an_unreadable_test_image_is_named_as_evaluation_data_where_skipping_never_applies(tmp_path):
    """issue 21: with DATALOADER.SKIP_BAD_IMAGES the start-up check named the file but not that it belongs
    to the evaluation data, which is never skipped."""
    from resdet.config import load_config
    from resdet.data.coco import ImageFileError
    from resdet.evaluation.inference import check_evaluation_datasets
    from tests.data.coco_fixtures import write_case

    json_path, image_dir, _ = write_case(tmp_path)
    bad = tmp_path / "images" / "a.jpg"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    cfg = load_config(None, ["DATASETS.CUSTOM_NAMES", "['case_val']", "DATASETS.CUSTOM_JSONS", f"['{json_path}']",
                             "DATASETS.CUSTOM_IMAGE_DIRS", f"['{image_dir}']", "DATASETS.TEST", "('case_val',)",
                             "DATASETS.CHECK_IMAGES", "decode", "DATALOADER.SKIP_BAD_IMAGES", "True",
                             "DATASETS.INSTANCES_WITHOUT_MASK", "ignore"])
    with pytest.raises(ImageFileError) as e:
        check_evaluation_datasets(cfg)
    msg = str(e.value)
    assert msg.startswith("Evaluation dataset 'case_val': ") and str(bad) in msg, msg
    assert "DATALOADER.SKIP_BAD_IMAGES is for training images only: evaluation never skips an image" in msg


def test_a_box_that_disagrees_with_its_mask_is_worded_for_evaluation(tmp_path, caplog):
    gt = _gt()
    gt["annotations"][0]["bbox"] = [10, 10, 40, 20]  # its mask is the 20 px square at (10, 10)
    gt_path, res_path = _write(tmp_path, gt, _perfect(gt))
    with caplog.at_level(logging.WARNING):
        evaluate_results_file(gt_path, res_path)
    assert ("1 annotations have a bbox (x, y, w, h) that disagrees with the bounding box of their mask by more than "
            "2 px + 10% of the box (bbox evaluation scores detections against the box and segm evaluation against "
            "the mask, so the two scores measure different regions of these objects)") in caplog.text
    assert "teach the wrong mask" not in caplog.text
