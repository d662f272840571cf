"""Mask R-CNN exported to ONNX (run by onnxruntime) and Faster R-CNN exported to an ExportedProgram (run in a
process where resdet cannot be imported) give the eager model's detections: same count and labels,
boxes within 1e-4 relative, scores within 1e-5, 28x28 mask probabilities within 1e-4. The inputs are
photographs of three sizes padded into one batch (one of them a flat image with no detections) and a
single image of another padded shape, through one dynamic-shape export per model and format.

One format per architecture, so that each (head, format) pair is traced once across the export tests:
the standard box head and the mask head in ONNX (Mask R-CNN here), the standard box head and the no-mask
outputs in an ExportedProgram (Faster R-CNN here), the cascade's box heads with the mask head in both
formats (test_cascade_export.py). Each dynamic-shape export costs 20-40 CPU-seconds whatever the width.

Small and cheap: the COCO configs' FPN detectors on a ResNet-18 with a 32-channel FPN and narrow heads (the
export mechanics are the R50's: the same FPN, RPN, RoI heads and post-processing; the R50/101/152 configs
themselves are built and accepted by the exporter in test_deeper_backbones_are_accepted).
"""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from resdet.export.runtime import ExportedDetector, read_metadata
from resdet.runs.export import export_from_config

from .helpers import (BATCHES, CLASS_NAMES, EXPORT_SIZE, ROOT, assert_boxes_close, assert_detections_equal, batch_images, detector_config,
                      eager_outputs, onnx_or_skip, padded, peaked_detector, photo)

# Small, for a quick CPU test: the predictor resizes to these sizes (the file's metadata carries them),
# 100 proposals per image instead of 1000 (the box head's cost; the code path is the same), and a ResNet-18
# with a 32-channel FPN and narrow heads instead of the R50's 256 channels (the graph's ops are the same).
SMALL_TEST = ["INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "192",
              "MODEL.RPN.PRE_NMS_TOPK_TEST", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
              "MODEL.BACKBONE.NAME", "resnet18", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
              "MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "MODEL.ROI_MASK_HEAD.NUM_CONV", "2"]


def _setup(arch, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"export_{arch}")
    cfg = detector_config(arch, SMALL_TEST)
    model = peaked_detector(cfg, [photo("astronaut", 128, 160)])
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

    return SimpleNamespace(arch=arch, tmp=tmp, cfg=cfg, model=model, weights=weights, batches=batches, eager=eager,
                           exported=exported)


@pytest.fixture(scope="module")
def faster(tmp_path_factory):
    return _setup("faster", tmp_path_factory)


@pytest.fixture(scope="module")
def mask(tmp_path_factory):
    return _setup("mask", tmp_path_factory)


def test_onnxruntime_gives_the_eager_detections(mask):
    onnx_or_skip()
    s, arch = mask, "mask"
    meta = s.exported("onnx")
    runner = ExportedDetector(meta["path"])
    assert runner.backend.session.get_providers()[0] == "CPUExecutionProvider"
    for images, eager in zip(s.batches, s.eager):
        assert_detections_equal(runner.run(*padded(images)), eager, f"onnx {arch}")

    import onnx

    model = onnx.load(meta["path"], load_external_data=False)
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["class_names"]) == CLASS_NAMES and float(props["score_threshold"]) == 0.05
    assert "RGB, 0-255" in props["input_layout"] and json.loads(props["pixel_std"]) == [58.395, 57.12, 57.375]
    assert "NonMaxSuppression" in {n.op_type for n in model.graph.node}
    assert read_metadata(meta["path"])["output_shapes"]["boxes"] == ["batch", 100, 4]


def test_exported_program_runs_without_resdet_and_gives_the_eager_detections(faster):
    s, arch = faster, "faster"
    meta = s.exported("exported-program")
    inputs, outputs = s.tmp / "pt2_inputs.pt", s.tmp / "pt2_outputs.pt"
    torch.save([padded(images) for images in s.batches], inputs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "run_pt2_without_resdet.py"),
                           meta["path"], str(inputs), str(outputs)], cwd=str(s.tmp), env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = torch.load(outputs)
    assert result["modules"] == []
    assert result["metadata"]["class_names"] == CLASS_NAMES and result["metadata"]["format"] == "exported-program"
    names = result["metadata"]["outputs"]
    for outs, eager in zip(result["outputs"], s.eager):
        assert_detections_equal(dict(zip(names, outs)), eager, f"exported program {arch}")


def test_predictor_and_demo_run_the_exported_model(mask, tmp_path):
    """DetectionPredictor.from_exported (and tools/demo.py --exported) returns the eager predictor's
    instances: test-time resize, class names and thresholds from the file, masks pasted at full size."""
    onnx_or_skip()
    from PIL import Image

    from resdet.predictor import DetectionPredictor
    from tools.demo import main as demo

    meta = mask.exported("onnx")
    image = photo("astronaut", 120, 150).permute(1, 2, 0).to(torch.uint8).numpy()
    path = str(tmp_path / "astronaut.png")
    Image.fromarray(image).save(path)
    cfg = mask.cfg
    eager = DetectionPredictor(mask.model, CLASS_NAMES, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST,
                               resize_rounding=cfg.INPUT.RESIZE_ROUNDING)(path)
    predictor = DetectionPredictor.from_exported(meta["path"])
    assert predictor.class_names == CLASS_NAMES and predictor.score_threshold == cfg.TEST.VIS_SCORE_THRESHOLD
    got = predictor(path)
    n = len(eager["scores"])
    assert n > 0 and len(got["scores"]) == n and torch.equal(got["labels"], eager["labels"])
    assert got["class_names"] == eager["class_names"]
    assert_boxes_close(got["boxes"], eager["boxes"])
    assert got["masks"].shape == eager["masks"].shape == (n, 1, 120, 150)
    # pasted masks: the same function on boxes equal to ~1e-5 px; a pixel row may fall on the other side
    # of a box edge's truncation, so compare on average
    assert float((got["masks"] - eager["masks"]).abs().mean()) < 1e-4

    out = tmp_path / "demo"
    written = demo(["--exported", meta["path"], "--input", path, "--output", str(out), "--score", "0.0"])
    assert written == [str(out / "astronaut.png")]
    drawn = np.asarray(Image.open(written[0]))
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)


def test_benchmark_times_onnxruntime_against_eager(mask, tmp_path, capsys):
    onnx_or_skip()
    from tools.benchmark import main as benchmark

    meta = mask.exported("onnx")  # the file the ONNX test wrote: one export per model and format
    out = tmp_path / "bench.jsonl"
    assert benchmark(["--exported", meta["path"], "--device", "cpu", "--size", "128x160", "--batch", "2",
                      "--iters", "1", "--warmup", "0", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ratio = exported img/s / eager img/s" in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["model"], r["format"]) for r in rows] == [("eager", "eager"), ("exported", "onnx")]
    assert all(r["img_per_s"] > 0 and r["size"] == "128x160" for r in rows) and rows[1]["ratio"] > 0
    assert rows[0]["dets_per_image"] == rows[1]["dets_per_image"] > 0  # same weights, same photos


@pytest.mark.parametrize("config,backbone,mask_on", [("coco_r101.yaml", "resnet101", True),
                                                     ("coco_r152_faster.yaml", "resnet152", False)])
def test_deeper_backbones_are_accepted(config, backbone, mask_on):
    """R101 / R152-FPN: the config builds and the exporter takes it (the graph is the R50's with more
    blocks; tracing it here would only cost time)."""
    from resdet.config import load_config
    from resdet.export.exporter import build_metadata, detector_spec
    from resdet.runs.export import build_model, default_size

    cfg = load_config(os.path.join(ROOT, "configs", config), ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.WEIGHTS", ""])
    model = build_model(cfg)
    assert default_size(cfg, model) == (1344, 1344)  # a square holds portrait and landscape images
    spec = detector_spec(model, batch=1, size=(800, 1344), dynamic=False, nms="onnx")
    meta = build_metadata(spec, "onnx", cfg=cfg)
    assert meta["backbone"] == backbone and meta["architecture"] == ("Mask R-CNN" if mask_on else "Faster R-CNN")
    assert meta["input_shapes"]["images"] == [1, 3, 800, 1344] and ("mask_probs" in meta["outputs"]) == mask_on
    with pytest.raises(ValueError, match="multiples of 32"):
        detector_spec(model, batch=1, size=(800, 1333), dynamic=False)
