import contextlib
import copy
import io
import json
import os

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resdet.data.coco import load_coco_json
from resdet.data.coco_validation import CocoFormatError
from resdet.data.shapes import generate_shapes_dataset
from resdet.data.transforms import annotations_to_masks
from resdet.evaluation.coco import SUMMARY_NAMES, COCOEvaluator, evaluate_results_file

from tests.data.coco_fixtures import coco_dict, write_case


def _gt_as_outputs(record):
    anns = [a for a in record["annotations"] if not a["iscrowd"]]
    masks = torch.from_numpy(annotations_to_masks(anns, record["height"], record["width"])).float()[:, None]
    return {"boxes": torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.linspace(1.0, 0.5, len(anns)),
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "masks": masks}


@pytest.mark.parametrize("which", ["shapes", "handmade"])
def test_ground_truth_as_detections_scores_one(tmp_path, which):
    if which == "shapes":
        json_path, image_dir = generate_shapes_dataset(str(tmp_path), "val", 8, seed=1, size_range=(64, 128))
    else:  # crowd regions, RLE and polygons, non-contiguous ids (the degenerate GT box is unmatchable:
        data = coco_dict()  # leave it out of the ground truth for this check)
        data["annotations"] = [a for a in data["annotations"] if a["id"] not in (13, 21)]
        json_path, image_dir, _ = write_case(tmp_path, data)
    dicts, meta = load_coco_json(json_path, image_dir, filter_empty=False)
    ev = COCOEvaluator(json_path, ("bbox", "segm"), meta.contiguous_to_dataset_id, output_dir=str(tmp_path / "out"))
    for r in dicts:
        ev.process([{"image_id": torch.tensor(r["image_id"])}], [_gt_as_outputs(r)])
    metrics = ev.evaluate()
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == pytest.approx(100.0)
        assert metrics[iou_type]["AP50"] == pytest.approx(100.0)
        assert metrics[iou_type]["AR100"] == pytest.approx(100.0)
        assert all(v == pytest.approx(100.0) for v in metrics[iou_type]["per_category"].values() if v is not None)
    saved = json.load(open(tmp_path / "out" / "coco_eval.json"))
    assert saved["segm"]["AP"] == pytest.approx(100.0)
    results = json.load(open(tmp_path / "out" / "coco_instances_results.json"))
    assert {r["category_id"] for r in results} <= {c["id"] for c in json.load(open(json_path))["categories"]}


def _crowd_case():
    """One 100x100 image: GT box A (cat), a crowd region (cat), GT box B (dog)."""
    h = w = 100
    crowd = np.zeros((h, w), np.uint8)
    crowd[60:95, 5:45] = 1
    crowd_rle = mask_util.encode(np.asfortranarray(crowd))
    crowd_rle["counts"] = crowd_rle["counts"].decode("ascii")
    gt = {
        "images": [{"id": 7, "file_name": "x.jpg", "height": h, "width": w}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 8, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 30, 30], "area": 900.0, "iscrowd": 0,
             "segmentation": [[10, 10, 40, 10, 40, 40, 10, 40]]},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [5, 60, 40, 35], "area": 1400.0, "iscrowd": 1,
             "segmentation": crowd_rle},
            {"id": 3, "image_id": 7, "category_id": 8, "bbox": [55, 10, 40, 40], "area": 1600.0, "iscrowd": 0,
             "segmentation": [[55, 10, 95, 10, 95, 50, 55, 50]]},
        ],
    }
    # detections as the model gives them: xyxy, contiguous labels (cat=1, dog=2), masks as probabilities
    boxes = torch.tensor([
        [60.0, 60.0, 90.0, 90.0],   # cat, score .95: false positive on background
        [10.0, 65.0, 40.0, 90.0],   # cat, score .92: inside the crowd region -> ignored, not a FP
        [10.0, 10.0, 40.0, 34.0],   # cat, score .90: matches A with IoU 0.8
        [55.0, 10.0, 95.0, 50.0],   # dog, score .80: matches B exactly
    ])
    scores = torch.tensor([0.95, 0.92, 0.90, 0.80])
    labels = torch.tensor([1, 1, 1, 2])
    masks = torch.zeros(4, 1, h, w)
    for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        masks[i, 0, y0:y1, x0:x1] = 0.9
    return gt, {"boxes": boxes, "scores": scores, "labels": labels, "masks": masks}


def _pycocotools_by_hand(gt, output, iou_type):
    # results written out by hand, independent of resdet's conversion code
    id_of_label = {1: 3, 2: 8}
    dets = []
    for b, s, l, m in zip(output["boxes"].tolist(), output["scores"].tolist(), output["labels"].tolist(), output["masks"]):
        d = {"image_id": 7, "category_id": id_of_label[l], "score": s}
        if iou_type == "bbox":
            d["bbox"] = [b[0], b[1], b[2] - b[0], b[3] - b[1]]
        else:
            rle = mask_util.encode(np.asfortranarray((m[0] > 0.5).numpy().astype(np.uint8)))
            d["segmentation"] = rle
        dets.append(d)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes(dets), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats


def test_agrees_with_pycocotools_by_hand_on_a_crowd_case(tmp_path):
    gt, output = _crowd_case()
    ev = COCOEvaluator(gt, ("bbox", "segm"), {1: 3, 2: 8}, output_dir=str(tmp_path))
    ev.process([{"image_id": torch.tensor(7)}], [output])
    metrics = ev.evaluate()
    for iou_type in ("bbox", "segm"):
        ref = _pycocotools_by_hand(gt, output, iou_type)
        # pycocotools says -1 where a range has no ground truth; resdet says NaN (null in JSON)
        ours = [-1.0 if np.isnan(metrics[iou_type][n]) else metrics[iou_type][n] / 100 for n in SUMMARY_NAMES]
        np.testing.assert_allclose(ours, ref, atol=1e-9)
    # and the numbers are the ones worked out on paper: cat has one FP above its TP (the crowd
    # detection is ignored), so precision is 1/2 at full recall for IoU <= 0.8 and the TP is lost above;
    # dog is perfect. cat AP = 0.5 * 7/10 = 0.35, dog AP = 1, mean 0.675.
    assert metrics["bbox"]["per_category"]["cat"] == pytest.approx(35.0)
    assert metrics["bbox"]["per_category"]["dog"] == pytest.approx(100.0)
    assert metrics["bbox"]["AP"] == pytest.approx(67.5)
    assert metrics["bbox"]["AP50"] == pytest.approx(75.0)


def test_evaluates_an_existing_results_file(tmp_path, capsys):
    gt, output = _crowd_case()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    ev = COCOEvaluator(str(gt_path), ("bbox", "segm"), {1: 3, 2: 8}, output_dir=str(tmp_path / "run"))
    ev.process([{"image_id": 7}], [output])
    first = ev.evaluate()
    again = evaluate_results_file(str(gt_path), str(tmp_path / "run" / "coco_instances_results.json"),
                                  output_dir=str(tmp_path / "again"))
    assert again["bbox"]["AP"] == pytest.approx(first["bbox"]["AP"])
    assert again["segm"]["AP"] == pytest.approx(first["segm"]["AP"])
    out = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in out  # pycocotools' own
    assert os.path.isfile(tmp_path / "again" / "coco_eval.json")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r[0].update(image_id=99), r"result #0 has image_id 99, which the ground truth does not have"),
        (lambda r: r[1].update(category_id=4), r"result #1 \(image 7\) has category_id 4"),
        (lambda r: r[2].update(score=float("nan")), r"result #2 \(image 7\) has score nan"),
        (lambda r: r[0]["segmentation"].update(size=[50, 50]), r"result #0 .*RLE size \[50, 50\] does not match"),
        (lambda r: r[3].update(bbox=[0, 0, -1, 5]), r"result #3 .*negative width"),
        (lambda r: r[2].pop("segmentation"), r"result #2 \(image 7\): an RLE segmentation must be a dict"),
    ],
)
def test_bad_results_files_are_errors_naming_the_entry(tmp_path, mutate, message):
    gt, output = _crowd_case()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    ev = COCOEvaluator(str(gt_path), ("bbox", "segm"), {1: 3, 2: 8}, output_dir=str(tmp_path))
    ev.process([{"image_id": 7}], [output])
    ev.evaluate()
    results = json.load(open(tmp_path / "coco_instances_results.json"))
    mutate(results)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(results))
    with pytest.raises(CocoFormatError, match=message):
        evaluate_results_file(str(gt_path), str(bad))


def test_labels_without_a_category_are_an_error():
    gt, output = _crowd_case()
    ev = COCOEvaluator(gt, ("bbox",), {1: 3})
    with pytest.raises(ValueError, match=r"labels \[2\] have no dataset category id"):
        ev.process([{"image_id": 7}], [output])
