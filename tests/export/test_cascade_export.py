"""Cascade Mask R-CNN exported to ONNX (run by onnxruntime) and to an ExportedProgram (run where resdet cannot
be imported) gives the eager model's detections, as Faster / Mask R-CNN do (test_detection_export.py): same
count and labels, boxes within 1e-4 relative, mask probabilities within 1e-4, scores within 1e-5 from the
ExportedProgram and 5e-5 from onnxruntime (measured 1.7e-5: a score is the mean of three stages, each
pooling the previous stage's regressed boxes through GroupNorm heads, so onnxruntime's float differences
from torch's pass through three box heads instead of one; detections whose scores lie within 1e-4 of each
other are compared in label/box order, since their order is that noise).

Small and cheap: ResNet-18, a 32-channel FPN with GroupNorm, 4conv1fc box heads with GroupNorm (the new
baselines' head shape), photographs at 96-192 px, 100 proposals; one dynamic-shape export per format.
"""
import os
import subprocess
import sys

import pytest
import torch

from resdet.config import load_config
from resdet.detection.rcnn import build_detection_model
from resdet.export.runtime import ExportedDetector
from resdet.runs.export import export_from_config

from .helpers import (BATCHES, CLASS_NAMES, EXPORT_SIZE, ROOT, assert_detections_equal, batch_images, eager_outputs,
                      onnx_or_skip, padded, photo)

K = len(CLASS_NAMES)
OVERRIDES = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.WEIGHTS", "", "MODEL.BACKBONE.NAME", "resnet18",
             "MODEL.BACKBONE.NORM", "GN", "MODEL.BACKBONE.GN_GROUPS", 8, "MODEL.BACKBONE.FREEZE_AT", 0,
             "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.FPN.NORM", "GN",
             "MODEL.ROI_BOX_HEAD.NUM_CONV", 4, "MODEL.ROI_BOX_HEAD.CONV_DIM", 32, "MODEL.ROI_BOX_HEAD.NUM_FC", 1,
             "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_BOX_HEAD.NORM", "GN",
             "MODEL.ROI_MASK_HEAD.CONV_DIM", 32, "MODEL.ROI_MASK_HEAD.NUM_CONV", 2, "MODEL.ROI_MASK_HEAD.NORM", "GN",
             "MODEL.RPN.PRE_NMS_TOPK_TEST", 100, "MODEL.RPN.POST_NMS_TOPK_TEST", 100,
             "INPUT.MIN_SIZE_TEST", 160, "INPUT.MAX_SIZE_TEST", 192]


def _peaked_cascade(cfg, images, seed=0):
    """Random weights whose stages' class logits have a spread of about 3 on these images' proposals (scores
    between ~0.05 and ~0.9, ranked without ties) and whose box deltas move boxes by a few percent."""
    torch.manual_seed(seed)
    model = build_detection_model(cfg).eval()
    heads = model.roi_heads
    feats = {}
    hooks = [h.register_forward_hook(lambda m, a, out, k=k: feats.update({k: out}))  # returns None
             for k, h in enumerate(heads.box_heads)]
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for k, pred in enumerate(heads.box_predictors):
            model(images)  # stage k's features depend on the earlier stages' new weights
            norm = float(feats[k].norm(dim=1).median())
            pred.cls_score.weight.copy_(torch.randn(pred.cls_score.weight.shape, generator=g) * (3.0 / norm))
            w = pred.bbox_pred.weight
            scale = torch.tensor(heads.box_coders[k].weights)[:, None] * (0.05 / norm)
            w.copy_(torch.randn(w.shape, generator=g) * scale)
    for h in hooks:
        h.remove()
    return model


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export_cascade")
    cfg = load_config(os.path.join(ROOT, "configs", "coco_r50_cascade.yaml"), OVERRIDES)
    assert cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads" and cfg.MODEL.MASK_ON
    model = _peaked_cascade(cfg, [photo("astronaut", 128, 160)])
    weights = str(tmp / "weights.pth")
    torch.save(model.state_dict(), weights)
    batches = [batch_images(model, spec) for spec in BATCHES]
    eager = [eager_outputs(model, images) for images in batches]
    # the set-up must mean something: ranked detections on the photos, none on the flat image
    assert all(len(o["scores"]) > 5 for o in (eager[0][0], eager[0][1], eager[1][0]))
    assert len(eager[0][2]["scores"]) == 0
    assert len(torch.unique(eager[0][0]["scores"])) == len(eager[0][0]["scores"])
    files = {}

    def exported(fmt):
        if fmt not in files:
            path = str(tmp / ("model.onnx" if fmt == "onnx" else "model.pt2"))
            files[fmt] = export_from_config(cfg, fmt, path, weights=weights, dynamic=True, size=EXPORT_SIZE,
                                            class_names=CLASS_NAMES)
        return files[fmt]

    return dict(tmp=tmp, batches=batches, eager=eager, exported=exported)


def test_onnxruntime_gives_the_eager_cascade_detections(cascade):
    onnx_or_skip()
    meta = cascade["exported"]("onnx")
    assert meta["architecture"] == "Cascade Mask R-CNN"
    runner = ExportedDetector(meta["path"])
    for images, eager in zip(cascade["batches"], cascade["eager"]):
        assert_detections_equal(runner.run(*padded(images)), eager, "onnx cascade", score_atol=5e-5)


def test_exported_program_gives_the_eager_cascade_detections_without_resdet(cascade):
    meta = cascade["exported"]("exported-program")
    tmp = cascade["tmp"]
    inputs, outputs = tmp / "pt2_inputs.pt", tmp / "pt2_outputs.pt"
    torch.save([padded(images) for images in cascade["batches"]], inputs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "run_pt2_without_resdet.py"),
                           meta["path"], str(inputs), str(outputs)], cwd=str(tmp), env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = torch.load(outputs)
    assert result["modules"] == [] and result["metadata"]["architecture"] == "Cascade Mask R-CNN"
    names = result["metadata"]["outputs"]
    for outs, eager in zip(result["outputs"], cascade["eager"]):
        assert_detections_equal(dict(zip(names, outs)), eager, "exported program cascade")
