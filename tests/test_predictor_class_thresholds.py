"""TEST.SCORE_THRESH_PER_CLASS: what the predictor shows and counts, the config check, exported metadata."""
import os

import numpy as np
import pytest
import torch

from resdet.config import ConfigError, load_config
from resdet.detection.rcnn import build_detection_model
from resdet.predictor import DetectionPredictor, class_score_thresholds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quickstart_shapes.yaml")


def _predictor(thresholds=None):
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu"])
    return DetectionPredictor(build_detection_model(cfg), ["circle", "square", "triangle"], 64, 96,
                              score_threshold=0.5, class_score_thresholds=thresholds)


def _instances():
    return {"boxes": torch.tensor([[1.0, 1, 20, 20], [5, 5, 30, 30], [2, 2, 9, 9], [3, 3, 40, 40]]),
            "scores": torch.tensor([0.3, 0.6, 0.8, 0.45]), "labels": torch.tensor([1, 1, 2, 3])}


def test_keep_uses_each_classes_threshold():
    assert _predictor().keep(_instances()).tolist() == [False, True, True, False]          # 0.5 for all
    per_class = _predictor([0.25, 0.9, 0.4])
    assert per_class.keep(_instances()).tolist() == [True, True, False, True]
    # what draw() shows is what keep() says: a picture with only the kept boxes equals the full call's
    image = np.full((48, 48, 3), 128, np.uint8)
    inst = _instances()
    drawn = per_class.draw(image, inst)
    kept = {k: v[per_class.keep(inst)] for k, v in inst.items()}
    everything = _predictor()
    everything.score_threshold = 0.0
    assert torch.equal(drawn, everything.draw(image, kept))
    assert not torch.equal(drawn, _predictor().draw(image, inst))  # the single 0.5 threshold draws other boxes


def test_config_key_is_checked():
    cfg = load_config(CONFIG, ["TEST.SCORE_THRESH_PER_CLASS", "[0.3, 0.6, 0.9]"])
    assert class_score_thresholds(cfg) == [0.3, 0.6, 0.9]
    assert class_score_thresholds(load_config(CONFIG)) is None  # empty: TEST.VIS_SCORE_THRESHOLD
    with pytest.raises(ConfigError, match="one number per class .*NUM_CLASSES = 3"):
        class_score_thresholds(load_config(CONFIG, ["TEST.SCORE_THRESH_PER_CLASS", "[0.3, 0.6]"]))
    with pytest.raises(ValueError, match="has 2 values but the model has 3 classes"):
        _predictor([0.3, 0.6])


def test_from_config_and_exported_metadata_carry_them(tmp_path):
    from resdet.export.exporter import build_metadata, detector_spec
    from resdet.runs.export import build_model

    overrides = ["MODEL.DEVICE", "cpu", "TEST.SCORE_THRESH_PER_CLASS", "[0.3, 0.6, 0.9]",
                 "DATASETS.SHAPES.ROOT", str(tmp_path / "shapes"), "DATASETS.SHAPES.NUM_VAL", "1"]
    cfg = load_config(CONFIG, overrides)
    weights = str(tmp_path / "w.pth")
    torch.save(build_detection_model(cfg).state_dict(), weights)
    predictor = DetectionPredictor.from_config(cfg, weights=weights, class_names=["a", "b", "c"])
    assert predictor.class_score_thresholds == [0.3, 0.6, 0.9]
    model = build_model(cfg)
    meta = build_metadata(detector_spec(model, batch=1, size=(64, 64), dynamic=False), "onnx", cfg=cfg)
    assert meta["score_thresholds_per_class"] == [0.3, 0.6, 0.9]
    plain = build_metadata(detector_spec(model, batch=1, size=(64, 64), dynamic=False), "onnx",
                           cfg=load_config(CONFIG, ["MODEL.DEVICE", "cpu"]))
    assert plain["score_thresholds_per_class"] is None
