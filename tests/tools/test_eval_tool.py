import json
import os
import subprocess
import sys

import torch

from resdet.evaluation.coco import COCOEvaluator

from tests.evaluation.test_coco_evaluator import _crowd_case

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT, NO_ALBUMENTATIONS_UPDATE="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eval.py"), *args], capture_output=True,
                          text=True, env=env, timeout=300, **kw)


def test_eval_tool_scores_a_results_file(tmp_path):
    gt, output = _crowd_case()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    ev = COCOEvaluator(str(gt_path), ("bbox", "segm"), {1: 3, 2: 8}, output_dir=str(tmp_path / "run"))
    ev.process([{"image_id": torch.tensor(7)}], [output])
    ev.evaluate()
    results = tmp_path / "run" / "coco_instances_results.json"
    proc = _run(["--gt", str(gt_path), "--results", str(results), "--output-dir", str(tmp_path / "out")])
    assert proc.returncode == 0, proc.stderr
    assert " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.675" in proc.stdout
    assert "cat      |  35.000" in proc.stdout
    saved = json.load(open(tmp_path / "out" / "coco_eval.json"))
    assert abs(saved["bbox"]["AP"] - 67.5) < 1e-6 and abs(saved["segm"]["per_category"]["dog"] - 100.0) < 1e-6


def test_eval_tool_names_a_bad_result(tmp_path):
    gt, _ = _crowd_case()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5},
                               {"image_id": 8, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5}]))
    proc = _run(["--gt", str(gt_path), "--results", str(bad), "--iou-types", "bbox"])
    assert proc.returncode != 0
    assert "result #1 has image_id 8, which the ground truth does not have" in proc.stderr
    proc = _run(["--results", str(bad)])
    assert proc.returncode == 2 and "--results needs --gt" in proc.stderr


def test_flags_may_follow_the_overrides():
    from resdet.runs.evaluate import parse_args

    args = parse_args(["--config", "c.yaml", "MODEL.DEVICE", "cpu", "--output-dir", "out",
                            "TEST.DETECTIONS_PER_IMAGE", "-1", "--backend", "faster_coco_eval"])
    assert args.opts == ["MODEL.DEVICE", "cpu", "TEST.DETECTIONS_PER_IMAGE", "-1"]
    assert (args.config, args.output_dir, args.backend) == ("c.yaml", "out", "faster_coco_eval")


def test_eval_tool_exits_non_zero_when_an_asked_type_cannot_be_evaluated(tmp_path):
    gt, _ = _crowd_case()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    boxes_only = tmp_path / "boxes.json"
    boxes_only.write_text(json.dumps([{"image_id": 7, "category_id": 3, "bbox": [10, 10, 30, 30], "score": 0.9}]))
    proc = _run(["--gt", str(gt_path), "--results", str(boxes_only), "--iou-types", "segm",
                 "--output-dir", str(tmp_path / "out")])
    assert proc.returncode != 0
    assert "segm evaluation was asked for, but none of its 1 results has a 'segmentation'" in proc.stderr
    assert not (tmp_path / "out" / "coco_eval.json").exists()  # no `{}` left behind as if it had worked


def test_no_arguments_print_the_two_common_forms():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eval.py")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == ""
    assert "python tools/eval.py --weights output/coco_r101/model_final.pth" in r.stdout
    assert "python tools/eval.py --gt instances_val2017.json --results coco_instances_results.json" in r.stdout
