"""Runs on the right device, strict --eval-only loading, and no cuDNN autotuning for detection."""
import os

import pytest
import torch

from resdet.config import load_config
from resdet.engine.checkpoint import CheckpointError, atomic_save
from resdet.runs.evaluate import inference_device

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
SHAPES = os.path.join(CONFIGS, "quickstart_shapes.yaml")


def test_eval_device_outside_and_under_torchrun(monkeypatch, caplog):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    # outside torchrun, MODEL.DEVICE cuda:1 is GPU 1 (it used to become cuda:<local rank> = cuda:0)
    assert inference_device("cuda:1", device_count=2) == torch.device("cuda", 1)
    assert inference_device("cuda", device_count=2) == torch.device("cuda", 0)
    # under torchrun, plain "cuda" is the process's GPU; one visible GPU per process: that one
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert inference_device("cuda", device_count=2) == torch.device("cuda", 1)
    assert inference_device("cuda", device_count=1) == torch.device("cuda", 0)
    # no GPU: evaluation falls back to the CPU, with a warning
    assert inference_device("cuda", device_count=0) == torch.device("cpu")
    assert inference_device("cpu") == torch.device("cpu")


def _tiny_det_cfg(tmp_path, *extra):
    return load_config(SHAPES, ["OUTPUT_DIR", str(tmp_path / "out"), "DATASETS.SHAPES.ROOT", str(tmp_path / "shapes"),
                                *extra])


def test_eval_only_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    from resdet.detection.rcnn import build_detection_model
    from resdet.runs.train_det import train_detection

    cfg = _tiny_det_cfg(tmp_path)
    state = build_detection_model(cfg).state_dict()
    missing = "roi_heads.box_predictor.cls_score.weight"
    assert missing in state
    del state[missing]
    state["roi_heads.an_old_layer.weight"] = torch.zeros(3)
    path = str(tmp_path / "mismatched.pth")
    atomic_save({"model": state}, path)
    with pytest.raises(CheckpointError, match=rf"mismatched\.pth.*missing keys \['{missing}'\].*unexpected keys "
                                              r"\['roi_heads\.an_old_layer\.weight'\]"):
        train_detection(_tiny_det_cfg(tmp_path, "MODEL.WEIGHTS", path), eval_only=True)
    # nothing was evaluated (the shapes data would have been generated for it)
    assert not os.path.exists(tmp_path / "shapes")


def test_detection_refuses_cudnn_benchmark(tmp_path):
    from resdet.runs import evaluate
    from resdet.runs.train_det import train_detection

    cfg = _tiny_det_cfg(tmp_path, "CUDNN_BENCHMARK", "True")
    with pytest.raises(ValueError, match=r"CUDNN_BENCHMARK True is for fixed-shape classification.*mask head"):
        train_detection(cfg)
    with pytest.raises(ValueError, match=r"CUDNN_BENCHMARK True is for fixed-shape classification"):
        evaluate.main(["--config", SHAPES, "CUDNN_BENCHMARK", "True", "OUTPUT_DIR", str(tmp_path / "ev")])


def test_default_setup_applies_cudnn_benchmark(tmp_path):
    from resdet.config import get_cfg
    from resdet.engine import default_setup

    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path), "CUDNN_BENCHMARK", "True"])
    try:
        default_setup(cfg, distributed=False)
        assert torch.backends.cudnn.benchmark is True
        cfg.merge_from_list(["CUDNN_BENCHMARK", "False"])
        default_setup(cfg, distributed=False)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = False


def test_benchmark_synchronizes_the_asked_gpu(monkeypatch):
    from resdet.benchmarks import detection as benchmark_det

    seen = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: seen.append(device))
    benchmark_det._sync("cuda:1")
    benchmark_det._sync("cpu")
    assert seen == [torch.device("cuda", 1)]  # torch.cuda.synchronize() alone waits for the current GPU
