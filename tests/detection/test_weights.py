"""Detector weights with the wrong class count are named by their config key, not a tensor-size list."""
import pytest
import torch

from resdet.config import load_config
from resdet.detection.rcnn import build_detection_model
from resdet.detection.weights import checkpoint_num_classes, load_detection_weights
from resdet.engine.checkpoint import CheckpointError

TINY = ["MODEL.BACKBONE.NAME", "resnet18", "MODEL.BACKBONE.NORM", "GN", "MODEL.BACKBONE.GN_GROUPS", "8",
        "MODEL.BACKBONE.FREEZE_AT", "0", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
        "MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "MODEL.MASK_ON", "True"]


def _model(k):
    return build_detection_model(load_config(None, TINY + ["MODEL.ROI_HEADS.NUM_CLASSES", str(k)]))


def test_class_count_mismatch_names_the_key(tmp_path):
    path = str(tmp_path / "three.pth")
    torch.save({"model": _model(3).state_dict(), "iteration": 10}, path)
    assert checkpoint_num_classes(torch.load(path, weights_only=True)) == 3
    with pytest.raises(CheckpointError, match=r"has 3 classes, MODEL.ROI_HEADS.NUM_CLASSES is 80: set "
                                              r"MODEL.ROI_HEADS.NUM_CLASSES 3"):
        load_detection_weights(_model(80), path)
    model = _model(3)
    load_detection_weights(model, path)  # the right count loads, strictly
    assert torch.equal(model.roi_heads.box_predictor.cls_score.weight,
                       torch.load(path, weights_only=True)["model"]["roi_heads.box_predictor.cls_score.weight"])


def test_cascade_class_count_mismatch_names_the_key(tmp_path):
    cascade = ["MODEL.ROI_HEADS.NAME", "CascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True"]
    path = str(tmp_path / "cascade.pth")
    torch.save({"model": build_detection_model(load_config(None, TINY + cascade + ["MODEL.ROI_HEADS.NUM_CLASSES", "3"]))
                .state_dict()}, path)
    assert checkpoint_num_classes(torch.load(path, weights_only=True)) == 3
    with pytest.raises(CheckpointError, match=r"has 3 classes, MODEL.ROI_HEADS.NUM_CLASSES is 5"):
        load_detection_weights(build_detection_model(load_config(None, TINY + cascade + [
            "MODEL.ROI_HEADS.NUM_CLASSES", "5"])), path)
