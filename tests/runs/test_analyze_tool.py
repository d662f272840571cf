"""tools/analyze.py and tools/eval.py --analyze, from the command line."""
import json
import os
import subprocess
import sys

import torch

from resdet.config import load_config
from resdet.detection.rcnn import build_detection_model

from tests.evaluation.analysis.conftest import make_ground_truth, noisy_results, write_images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "quickstart_shapes.yaml")


def _run(tool, args):
    env = dict(os.environ, PYTHONPATH=ROOT, NO_ALBUMENTATIONS_UPDATE="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_analyze_a_results_file_and_name_a_missing_one(tmp_path, capsys):
    gt = make_ground_truth(num_images=4, seed=1)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(noisy_results(gt, seed=2, with_masks=False)))
    write_images(gt, str(tmp_path / "images"))
    from resdet.runs.analyze import main

    main(["--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "res.json"), "--images",
          str(tmp_path / "images"), "--gallery", "1", "--score", "0.5"])
    out = tmp_path / "analysis" / "res"      # beside the results file, named after it
    saved = json.load(open(out / "analysis.json"))
    assert saved["iou_types"] == ["bbox"] and saved["settings"]["score_threshold"] == 0.5
    assert saved["bbox"]["confusion"]["score_thresholds"] == [0.5] * 4
    assert (out / "index.html").is_file() and len(os.listdir(out / "gallery")) == 2
    from resdet.runs.cli import run_tool

    capsys.readouterr()
    assert run_tool(main, ["--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "nope.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Results file not found:") and "nope.json" in err and len(err.splitlines()) == 2
    assert not (tmp_path / "analysis" / "nope").exists()  # no folder made for it
    proc = _run("analyze.py", ["--results", str(tmp_path / "res.json")])  # the tool itself, as a user runs it
    assert proc.returncode == 2 and "--results needs --gt" in proc.stderr


def test_eval_with_analyze_on_a_model(tmp_path):
    # an untrained quick-start model on two small generated images: eval.py scores it, then explains it
    overrides = ["MODEL.DEVICE", "cpu", "DATASETS.SHAPES.ROOT", str(tmp_path / "shapes"), "DATASETS.SHAPES.NUM_VAL",
                 "2", "DATASETS.SHAPES.MIN_SIDE", "64", "DATASETS.SHAPES.MAX_SIDE", "80", "INPUT.MIN_SIZE_TEST", "64",
                 "INPUT.MAX_SIZE_TEST", "96", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    cfg = load_config(CONFIG, overrides)
    torch.manual_seed(0)
    weights = str(tmp_path / "weights.pth")
    torch.save(build_detection_model(cfg).state_dict(), weights)
    from resdet.runs.analyze import main

    main(["--config", CONFIG, "--weights", weights, "--gallery", "1", "--output-dir", str(tmp_path / "ev"), *overrides])
    saved = json.load(open(tmp_path / "ev" / "analysis" / "analysis.json"))
    coco = json.load(open(tmp_path / "ev" / "coco_eval.json"))
    assert saved["iou_types"] == ["bbox", "segm"]
    for t in ("bbox", "segm"):
        assert saved[t]["summary"]["AP"] == coco[t]["AP"] or abs(saved[t]["summary"]["AP"] - coco[t]["AP"]) < 1e-3
        assert 0 < saved[t]["summary"]["detections"] <= 200
    assert len(os.listdir(tmp_path / "ev" / "analysis" / "gallery")) == 4  # the dataset's own images, drawn
