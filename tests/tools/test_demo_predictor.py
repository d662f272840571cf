import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from resdet.config import load_config
from resdet.data.shapes import generate_shapes_dataset
from resdet.detection.rcnn import build_detection_model
from resdet.predictor import DetectionPredictor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "quickstart_shapes.yaml")


def _overrides(tmp_path):
    return ["MODEL.DEVICE", "cpu", "DATASETS.SHAPES.ROOT", str(tmp_path / "shapes"), "DATASETS.SHAPES.NUM_VAL", "2",
            "DATASETS.SHAPES.MIN_SIDE", "64", "DATASETS.SHAPES.MAX_SIDE", "80",
            "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
            # an untrained model scores every class about equally: keep everything so there is output
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def test_predictor_and_demo_tool(tmp_path):
    cfg = load_config(CONFIG, _overrides(tmp_path))
    torch.manual_seed(0)
    weights = str(tmp_path / "weights.pth")
    torch.save(build_detection_model(cfg).state_dict(), weights)
    _, image_dir = generate_shapes_dataset(str(tmp_path / "shapes"), "val", 2, 0, (64, 80))
    path = os.path.join(image_dir, "000001.jpg")
    pixels = np.asarray(Image.open(path).convert("RGB"))

    predictor = DetectionPredictor.from_config(cfg, weights=weights)
    assert predictor.class_names == ["circle", "square", "triangle"]
    from_path, from_array = predictor(path), predictor(pixels)
    n = len(from_path["boxes"])
    assert n > 0 and torch.equal(from_path["boxes"], from_array["boxes"])
    h, w = pixels.shape[:2]
    assert from_path["masks"].shape == (n, 1, h, w)  # pasted in the original image's frame
    assert float(from_path["boxes"][:, 2].max()) <= w and float(from_path["boxes"][:, 3].max()) <= h
    assert set(from_path["class_names"]) <= {"circle", "square", "triangle"}
    assert predictor.draw(path, from_path).shape == (3, h, w)

    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=ROOT, NO_ALBUMENTATIONS_UPDATE="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--config", CONFIG,
                           "--weights", weights, "--input", image_dir, "--output", str(out), "--score", "0.0",
                           *_overrides(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["000001.png", "000002.png"]
    drawn = np.asarray(Image.open(out / "000001.png"))
    assert drawn.shape == pixels.shape and not np.array_equal(drawn, pixels)
    assert "Wrote 2 pictures" in proc.stdout


def test_predictor_rejects_a_bad_image(tmp_path):
    cfg = load_config(CONFIG, _overrides(tmp_path))
    predictor = DetectionPredictor(build_detection_model(cfg), ["a"], 64, 96)
    import pytest

    with pytest.raises(ValueError, match="HxWx3 RGB uint8"):
        predictor(np.zeros((10, 10), np.uint8))
