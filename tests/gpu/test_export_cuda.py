"""GPU checks of the export room (skipped without a CUDA device): an ExportedProgram traced on the GPU and
onnxruntime's CUDA provider give the eager model's detections there, and the benchmark runs on CUDA.

    python -m pytest tests/gpu/test_export_cuda.py -q -m gpu
"""
import os

import pytest
import torch

from resdet.export.runtime import ExportedDetector
from resdet.runs.export import export_from_config
from tests.export.helpers import (BATCHES, CLASS_NAMES, assert_detections_equal, batch_images, detector_config,
                                  eager_outputs, onnx_or_skip, padded, peaked_detector, photo)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (export on the GPU)")]

SMALL_TEST = ["INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "192"]


@pytest.fixture(scope="module")
def mask_cuda(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export_cuda")
    cfg = detector_config("mask", SMALL_TEST + ["MODEL.DEVICE", "cuda"])
    model = peaked_detector(cfg, [photo("astronaut", 128, 160)]).cuda()
    weights = str(tmp / "weights.pth")
    torch.save(model.state_dict(), weights)
    batches = [[im.cuda() for im in batch_images(model, spec)] for spec in BATCHES]
    eager = [[{k: v.cpu() for k, v in o.items()} for o in eager_outputs(model, ims)] for ims in batches]
    return cfg, tmp, weights, batches, eager


def test_exported_program_traced_on_the_gpu(mask_cuda):
    cfg, tmp, weights, batches, eager = mask_cuda
    meta = export_from_config(cfg, "exported-program", str(tmp / "m.pt2"), weights=weights, dynamic=True,
                              size=(160, 160), class_names=CLASS_NAMES)
    assert meta["device"] == "cuda"
    runner = ExportedDetector(meta["path"])
    for images, want in zip(batches, eager):
        assert_detections_equal(runner.run(*padded([im.cpu() for im in images])), want, "pt2 cuda")


def test_onnxruntime_cuda_provider(mask_cuda):
    ort = onnx_or_skip()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has no CUDA provider ({ort.get_available_providers()}): pip install onnxruntime-gpu")
    cfg, tmp, weights, batches, eager = mask_cuda
    meta = export_from_config(cfg, "onnx", str(tmp / "m.onnx"), weights=weights, dynamic=True, size=(160, 160),
                              class_names=CLASS_NAMES)
    runner = ExportedDetector(meta["path"], device="cuda")
    assert runner.backend.session.get_providers()[0] == "CUDAExecutionProvider"
    for images, want in zip(batches, eager):
        assert_detections_equal(runner.run(*padded([im.cpu() for im in images])), want, "onnx cuda")


def test_benchmark_on_the_gpu(mask_cuda, capsys):
    from tools.benchmark import main

    cfg, tmp, weights, _, _ = mask_cuda
    path = str(tmp / "m.pt2")
    if not os.path.exists(path):
        export_from_config(cfg, "exported-program", path, weights=weights, dynamic=True, size=(160, 160),
                           class_names=CLASS_NAMES)
    assert main(["--exported", path, "--device", "cuda", "--size", "512x768", "--batch", "2", "--iters", "3"]) == 0
    assert "ratio = exported img/s / eager img/s" in capsys.readouterr().out
