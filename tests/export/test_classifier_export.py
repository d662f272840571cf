"""Classifiers exported by tools/export.py give the eager logits (within 1e-5 of their scale): the paper's ImageNet
ResNet-50 with free batch and image size, and the CIFAR ResNet-20, whose per-pixel mean image fixes the
size (the tool says so, and the file's metadata too)."""
import json
import os

import pytest
import torch

from resdet.classification.model import build_classifier
from resdet.config import load_config
from resdet.export.runtime import ExportedClassifier, load_exported, read_metadata
from resdet.runs.export import export_from_config

from .helpers import CONFIGS, onnx_or_skip, photo


def _close(got, want, rel: float = 1e-5):
    """Logits equal to `rel` of each image's logit scale (its largest |logit|): float32 convolutions summed in
    another order differ by ~1e-6 of the values they add up, whatever the logit's own size."""
    scale = want.abs().amax(dim=1, keepdim=True).clamp(min=1.0)
    worst = float(((got - want).abs() / scale).max())
    assert got.shape == want.shape and worst <= rel, f"logits differ by {worst:.2e} of their scale (allowed {rel})"


@pytest.fixture
def r50(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export_r50_cls")
    cfg = load_config(os.path.join(CONFIGS, "imagenet_r50.yaml"), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_classifier(cfg).eval()
    weights = str(tmp / "r50.pth")
    torch.save({"model": model.state_dict()}, weights)  # a train_cls checkpoint's layout
    inputs = [torch.stack([photo("astronaut", 64, 64), photo("coffee", 64, 64)]),
              photo("chelsea", 96, 128)[None]]
    with torch.no_grad():
        eager = [model(x) for x in inputs]
    return cfg, weights, tmp, inputs, eager


def test_resnet50_logits_with_dynamic_batch_and_size(r50):
    """As an ExportedProgram (ONNX classifiers: the CIFAR net below, through the tool; an R50 to ONNX costs
    the test budget ~15 s more and its layers are the detectors' backbone, checked there)."""
    cfg, weights, tmp, inputs, eager = r50
    meta = export_from_config(cfg, "exported-program", str(tmp / "r50.pt2"), weights=weights, dynamic=True,
                              size=(64, 64), class_names=[f"n{i:08d}" for i in range(1000)])
    assert meta["input_shapes"]["images"] == ["batch", 3, "height (>= 64)", "width (>= 64)"] and meta["notes"] == []
    model = load_exported(meta["path"])
    assert isinstance(model, ExportedClassifier) and model.class_names[:2] == ["n00000000", "n00000001"]
    for x, want in zip(inputs, eager):  # batch 2 at 64x64, batch 1 at 96x128
        _close(model(x), want)


def test_cifar_resnet20_through_the_tool(tmp_path, capsys):
    """tools/export.py end to end: CIFAR ResNet-20 (with a per-pixel mean image) to ONNX with --dynamic:
    the batch is free, the size stays 32x32 and the output says why."""
    onnx_or_skip()
    from tools.export import main

    cfg = load_config(os.path.join(CONFIGS, "cifar10_resnet20.yaml"), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_classifier(cfg).eval()
    model.set_mean_image(torch.rand(3, 32, 32) * 255)
    weights = str(tmp_path / "r20.pth")
    torch.save(model.state_dict(), weights)
    assert main([os.path.join(CONFIGS, "cifar10_resnet20.yaml"), "--weights", weights, "--format", "onnx",
                 "--dynamic", "--output", str(tmp_path / "out"), "MODEL.DEVICE", "cpu",
                 "CLS.DATA.ROOT", str(tmp_path / "no_data")]) == 0
    text = capsys.readouterr().out
    path = str(tmp_path / "out" / "cifar10_resnet20.onnx")
    assert f"Wrote {path}" in text and "ONNX opset 18" in text
    assert "input  images: [batch, 3, 32, 32]" in text and "fixed at 32x32" in text and "pixel_mean_image" in text
    meta = read_metadata(path)
    assert meta["per_pixel_mean"] and meta["num_classes"] == 10 and meta["dynamic"]
    with open(path + ".json", encoding="utf-8") as f:
        assert json.load(f)["notes"] == meta["notes"]
    x = torch.randint(0, 256, (3, 3, 32, 32)).float()
    with torch.no_grad():
        _close(load_exported(path)(x), model(x))


def test_fixed_shape_exported_program(tmp_path):
    """Without --dynamic the shape is the one asked for, stated in the metadata."""
    cfg = load_config(os.path.join(CONFIGS, "cifar10_resnet20.yaml"), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(1)
    model = build_classifier(cfg).eval()
    weights = str(tmp_path / "r20.pth")
    torch.save(model.state_dict(), weights)
    meta = export_from_config(cfg, "exported-program", str(tmp_path / "r20.pt2"), weights=weights, batch=4,
                              class_names=["plane", "car"] + [str(i) for i in range(2, 10)])
    assert meta["input_shapes"]["images"] == [4, 3, 32, 32] and not meta["dynamic"]
    assert read_metadata(meta["path"])["class_names"][:2] == ["plane", "car"]
    x = torch.rand(4, 3, 32, 32) * 255
    with torch.no_grad():
        _close(load_exported(meta["path"])(x), model(x))
