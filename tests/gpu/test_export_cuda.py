"""GPU checks of the export room (skipped without a CUDA device): an ExportedProgram traced on the GPU and
onnxruntime's CUDA provider give the eager model's detections there, and the benchmark runs on CUDA.

    python -m pytest tests/gpu/test_export_cuda.py -q -m gpu
    python -m pytest tests/gpu/test_export_cuda.py -q --gpu-device cpu     # rehearsal on the CPU
"""
import os

import pytest
import torch

from resdet.export.runtime import ExportedDetector
from resdet.runs.export import export_from_config
from tests.export.helpers import (BATCHES, CLASS_NAMES, assert_detections_equal, batch_images, detector_config,
                                  eager_outputs, onnx_or_skip, padded, peaked_detector, photo)

pytestmark = pytest.mark.gpu

SMALL_TEST = ["INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "192",
              "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "200"]


@pytest.fixture(scope="module")
def export_device(request):
    """--gpu-device (default cuda; `--gpu-device cpu` rehearses these checks on the CPU)."""
    name = request.config.getoption("--gpu-device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("no CUDA device visible: the export GPU checks need one (or rehearse with --gpu-device cpu)")
    return torch.device(name)


@pytest.fixture(scope="module")
def mask_cuda(export_device, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export_cuda")
    cfg = detector_config("mask", SMALL_TEST + ["MODEL.DEVICE", str(export_device)])
    model = peaked_detector(cfg, [photo("astronaut", 128, 160)]).to(export_device)
    weights = str(tmp / "weights.pth")
    torch.save(model.state_dict(), weights)
    batches = [[im.to(export_device) for im in batch_images(model, spec)] for spec in BATCHES]
    eager = [[{k: v.cpu() for k, v in o.items()} for o in eager_outputs(model, ims)] for ims in batches]
    return cfg, tmp, weights, batches, eager


def test_exported_program_traced_on_the_gpu(mask_cuda, export_device):
    cfg, tmp, weights, batches, eager = mask_cuda
    meta = export_from_config(cfg, "exported-program", str(tmp / "m.pt2"), weights=weights, dynamic=True,
                              size=(160, 160), class_names=CLASS_NAMES)
    assert meta["device"] == export_device.type
    runner = ExportedDetector(meta["path"])
    for images, want in zip(batches, eager):
        assert_detections_equal(runner.run(*padded([im.cpu() for im in images])), want, "pt2 cuda")


def test_onnxruntime_cuda_provider(mask_cuda, export_device):
    if export_device.type != "cuda":
        pytest.skip("onnxruntime's CUDA provider: meaningful on CUDA only")
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


def test_benchmark_on_the_gpu(mask_cuda, export_device, capsys):
    from tools.benchmark import main

    cfg, tmp, weights, _, _ = mask_cuda
    path = str(tmp / "m.pt2")
    if not os.path.exists(path):
        export_from_config(cfg, "exported-program", path, weights=weights, dynamic=True, size=(160, 160),
                           class_names=CLASS_NAMES)
    size = "512x768" if export_device.type == "cuda" else "128x160"
    assert main(["--exported", path, "--device", str(export_device), "--size", size, "--batch", "2", "--iters", "3"]) == 0
    assert "ratio = exported img/s / eager img/s" in capsys.readouterr().out
