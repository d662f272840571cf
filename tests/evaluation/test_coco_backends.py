"""faster-coco-eval as a COCOeval backend gives pycocotools' numbers (resdet/evaluation/coco.py)."""
import numpy as np
import pytest
import torch

from resdet.data.coco import load_coco_json
from resdet.data.shapes import generate_shapes_dataset
from resdet.data.transforms import annotations_to_masks
from resdet.evaluation.coco import SUMMARY_NAMES, COCOEvaluator, evaluate_coco_results, instances_to_coco_results

from tests.evaluation.test_coco_evaluator import _crowd_case

pytest.importorskip("faster_coco_eval")  # in the [dev] extra, so CI runs this


def _noisy_outputs(record, rng):
    """Imperfect detections: jittered boxes and masks, random scores, wrong labels and false positives."""
    h, w = record["height"], record["width"]
    anns = record["annotations"]
    masks = torch.from_numpy(annotations_to_masks(anns, h, w)).float()
    boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
    boxes = boxes + torch.from_numpy(rng.normal(0, 3, boxes.shape)).float()
    masks = torch.roll(masks, shifts=(int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), dims=(1, 2))
    labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
    flip = torch.from_numpy(rng.random(len(anns)) < 0.2)
    labels = torch.where(flip, labels % 3 + 1, labels)
    n_fp = int(rng.integers(0, 3))
    fp_xy = torch.from_numpy(rng.uniform(0, min(h, w) / 2, (n_fp, 2))).float()
    fp_boxes = torch.cat([fp_xy, fp_xy + 20], 1)
    fp_masks = torch.zeros(n_fp, h, w)
    for i, (x0, y0, x1, y1) in enumerate(fp_boxes.long().tolist()):
        fp_masks[i, y0:y1, x0:x1] = 1
    return {"boxes": torch.cat([boxes, fp_boxes]).clamp(min=0),
            "scores": torch.from_numpy(rng.uniform(0.05, 1, len(anns) + n_fp)).float(),
            "labels": torch.cat([labels, torch.from_numpy(rng.integers(1, 4, n_fp))]),
            "masks": torch.cat([masks, fp_masks])[:, None] * 0.9}


def _evaluate(json_path, dicts, meta, outputs, backend):
    ev = COCOEvaluator(json_path, ("bbox", "segm"), meta.contiguous_to_dataset_id, backend=backend)
    for r, o in zip(dicts, outputs):
        ev.process([{"image_id": torch.tensor(r["image_id"])}], [o])
    return ev.evaluate()


def _same(a, b):
    for iou_type in ("bbox", "segm"):
        for n in SUMMARY_NAMES:
            x, y = a[iou_type][n], b[iou_type][n]
            assert (np.isnan(x) and np.isnan(y)) or x == pytest.approx(y, abs=1e-7), (iou_type, n, x, y)
        assert a[iou_type]["per_category"] == pytest.approx(b[iou_type]["per_category"], abs=1e-7)


def test_faster_coco_eval_equals_pycocotools_on_imperfect_detections(tmp_path, capsys):
    json_path, image_dir = generate_shapes_dataset(str(tmp_path), "val", 12, seed=3, size_range=(64, 128))
    dicts, meta = load_coco_json(json_path, image_dir, filter_empty=False)
    rng = np.random.default_rng(0)
    outputs = [_noisy_outputs(r, rng) for r in dicts]
    ref = _evaluate(json_path, dicts, meta, outputs, "pycocotools")
    fast = _evaluate(json_path, dicts, meta, outputs, "faster_coco_eval")
    assert 10.0 < ref["bbox"]["AP"] < 90.0 and 10.0 < ref["segm"]["AP"] < 90.0  # neither trivial nor perfect
    _same(ref, fast)
    out = capsys.readouterr().out
    assert "Evaluating segm with faster_coco_eval COCOeval" in out
    # the summary in pycocotools' own layout, whichever backend ran
    assert out.count("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]") == 4


def test_faster_coco_eval_equals_pycocotools_with_crowd_regions():
    gt, output = _crowd_case()
    results = instances_to_coco_results(output, 7, {1: 3, 2: 8})
    ref = evaluate_coco_results(gt, results, ("bbox", "segm"))
    fast = evaluate_coco_results(gt, results, ("bbox", "segm"), backend="faster_coco_eval")
    _same(ref, fast)
    assert fast["bbox"]["AP"] == pytest.approx(67.5)  # worked out on paper in test_coco_evaluator.py


def test_unknown_backend_is_an_error():
    gt, _ = _crowd_case()
    with pytest.raises(ValueError, match="TEST.COCO_EVAL_BACKEND must be one of"):
        COCOEvaluator(gt, ("bbox",), {1: 3, 2: 8}, backend="detectron2")


def test_faster_coco_eval_gets_the_same_repaired_ground_truth_and_empty_results():
    from tests.evaluation.test_coco_eval_gt import _gt, _perfect

    gt = _gt()
    for a in gt["annotations"]:
        a["id"] -= 1  # id 0: both backends read it as "unmatched"; the repaired copy scores perfect detections 1
    gt["annotations"][4].pop("segmentation")
    for results in (_perfect(gt), []):
        ref = evaluate_coco_results(gt, results, ("bbox", "segm"), instances_without_mask="ignore")
        fast = evaluate_coco_results(gt, results, ("bbox", "segm"), backend="faster_coco_eval",
                                     instances_without_mask="ignore")
        _same(ref, fast)
        assert fast["bbox"]["AP"] == pytest.approx(100.0 if results else 0.0)
