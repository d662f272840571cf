"""resdet/runs/train_det.py: checks made before a detection run starts."""
import logging
import os

from resdet.config import load_config
from resdet.runs.train_det import _warn_frozen_random_backbone

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
R50 = os.path.join(CONFIGS, "coco_r50.yaml")


def test_frozen_bn_without_weights_warns(caplog):
    cfg = load_config(R50, ["MODEL.BACKBONE.WEIGHTS", ""])  # the COCO configs name a file; "" is no weights
    with caplog.at_level(logging.WARNING, logger="resdet.train_det"):
        _warn_frozen_random_backbone(cfg, resume=False)
    assert "MODEL.BACKBONE.WEIGHTS" in caplog.text and "FREEZE_AT 2" in caplog.text


def test_no_warning_with_weights_gn_or_resume(caplog):
    with caplog.at_level(logging.WARNING, logger="resdet.train_det"):
        _warn_frozen_random_backbone(load_config(R50, ["MODEL.BACKBONE.WEIGHTS", "r50.pth"]), False)
        _warn_frozen_random_backbone(load_config(R50), resume=True)
        _warn_frozen_random_backbone(load_config(os.path.join(CONFIGS, "quickstart_shapes.yaml")), resume=False)
    assert caplog.text == ""
