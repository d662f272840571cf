"""tools/convert_weights.py: torchvision detection and ResNet checkpoints into resdet, with COCO labels."""
import json
import subprocess
import sys

import pytest
import torch
import torchvision

from resdet.backbones import build_backbone
from resdet.config import load_config
from resdet.detection import build_detection_model
from tools.convert_weights import (convert_resnet_backbone, convert_torchvision_detection,
                                   torchvision_coco_class_indices)

# COCO 2017's 80 category ids (1..90 with 10 gaps), as in instances_*.json
COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
            32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
            58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87,
            88, 89, 90]


def test_coco_label_mapping():
    idx = torchvision_coco_class_indices(list(reversed(COCO_IDS)))
    assert len(idx) == 81 and idx[0] == 0
    assert idx[1:] == COCO_IDS  # contiguous label k <- torchvision row sorted_ids[k - 1]
    assert idx[12] == 13 and idx[80] == 90  # label 12 is "stop sign" (id 13): the first gap
    with pytest.raises(ValueError, match="1..90"):
        torchvision_coco_class_indices([0, 5])


@pytest.fixture(scope="module")
def tv_maskrcnn_state(tmp_path_factory):
    torch.manual_seed(0)
    sd = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "tv_maskrcnn.pth"
    torch.save(sd, path)
    return sd, path


def test_cli_converts_with_category_ids(tv_maskrcnn_state, tmp_path):
    sd, path = tv_maskrcnn_state
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps({"categories": [{"id": i, "name": str(i)} for i in (90, 3, 1)]}))
    out = tmp_path / "ours.pth"
    r = subprocess.run([sys.executable, "tools/convert_weights.py", str(path), str(out), "--coco-annotations", str(ann)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "3 classes" in r.stdout
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["meta"]["category_ids"] == [1, 3, 90] and ckpt["meta"]["num_classes"] == 3
    w = ckpt["model"]
    rows = torch.tensor([0, 1, 3, 90])
    assert torch.equal(w["roi_heads.box_predictor.cls_score.weight"], sd["roi_heads.box_predictor.cls_score.weight"][rows])
    box_rows = (rows[:, None] * 4 + torch.arange(4)).reshape(-1)
    assert torch.equal(w["roi_heads.box_predictor.bbox_pred.bias"], sd["roi_heads.box_predictor.bbox_pred.bias"][box_rows])
    assert torch.equal(w["roi_heads.mask_head.predictor.weight"], sd["roi_heads.mask_predictor.mask_fcn_logits.weight"][rows])
    cfg = load_config("configs/torchvision/maskrcnn_resnet50_fpn.yaml", ["MODEL.ROI_HEADS.NUM_CLASSES", 3])
    model = build_detection_model(cfg)
    model.load_state_dict(w, strict=True)  # every tensor has a home, and every parameter is covered


def test_full_coco_conversion_loads_into_the_preset(tv_maskrcnn_state):
    sd, _ = tv_maskrcnn_state
    model = build_detection_model(load_config("configs/torchvision/maskrcnn_resnet50_fpn.yaml"))
    model.load_state_dict(convert_torchvision_detection(sd), strict=True)  # 90 classes, labels = COCO ids
    with pytest.raises(KeyError, match="no rule for torchvision key 'roi_heads.keypoint_head.0.weight'"):
        convert_torchvision_detection({"roi_heads.keypoint_head.0.weight": torch.zeros(1)})


def test_resnet_classifier_as_backbone():
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None).eval()
    ours = build_backbone("resnet50", variant="v1.5", norm="FrozenBN", out_features=("res5",)).eval()
    converted = convert_resnet_backbone(tv.state_dict(), prefix="")
    assert not any(k.startswith("fc.") for k in converted)
    ours.load_state_dict(converted, strict=True)
    x = torch.rand(1, 3, 64, 64)
    body = torchvision.models._utils.IntermediateLayerGetter(tv, {"layer4": "out"})
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["res5"], body(x)["out"], rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError, match="'head.weight' is not a torchvision/timm ResNet parameter"):
        convert_resnet_backbone({"head.weight": torch.zeros(1)})


def test_cli_reports_a_missing_file(tmp_path):
    r = subprocess.run([sys.executable, "tools/convert_weights.py", str(tmp_path / "nope.pth"), str(tmp_path / "o.pth")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "checkpoint not found" in r.stderr
