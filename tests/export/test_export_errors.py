"""Bad use of tools/export.py gets an error that says what is wrong: a missing weights file names its
path; a model that cannot be exported in the asked format names the module and the reason."""
import os

import pytest
import torch
from torch import nn

from resdet.backbones.registry import BACKBONE_REGISTRY
from resdet.config import load_config
from resdet.export.exporter import ExportError, aoti_unavailable_reason
from resdet.runs.export import export_from_config

from .helpers import CONFIGS, onnx_or_skip

CIFAR = os.path.join(CONFIGS, "cifar10_resnet20.yaml")


class DataDependentGate(nn.Module):
    """Python control flow on a tensor's value: torch.export cannot trace it into one graph."""

    def forward(self, x):
        if x.mean() > 0:
            return x
        return -x


class SpectralScale(nn.Module):
    """Scales features by their largest singular value: torch.export traces it, ONNX has no SVD."""

    def forward(self, x):
        s = torch.linalg.svd(x.flatten(2), full_matrices=False)[1]
        return x * s[:, :1, None, None]


class TinyNet(nn.Module):
    def __init__(self, stage: nn.Module, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stage = stage
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.stage(self.stem(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def user_backbones():
    """Two backbones a user could register (the registry is the extension point)."""
    names = {"test_export_gated": DataDependentGate, "test_export_spectral": SpectralScale}
    for name, stage in names.items():
        BACKBONE_REGISTRY._do_register(name, lambda num_classes=10, _s=stage, **kw: TinyNet(_s(), num_classes))
    yield
    for name in names:
        BACKBONE_REGISTRY._obj_map.pop(name, None)


def _cfg(backbone):
    return load_config(CIFAR, ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.NAME", backbone, "CLS.DATA.PER_PIXEL_MEAN", False])


def test_missing_weights_file_is_named(tmp_path):
    missing = str(tmp_path / "nowhere" / "model_final.pth")
    with pytest.raises(FileNotFoundError, match=f"Weights file '{missing}' does not exist"):
        export_from_config(load_config(CIFAR), "exported-program", str(tmp_path / "m.pt2"), weights=missing)
    from tools.export import main

    with pytest.raises(FileNotFoundError, match="model_final.pth"):
        main([CIFAR, "--format", "exported-program", "--weights", missing, "--output", str(tmp_path)])
    assert not os.path.exists(tmp_path / "cifar10_resnet20.pt2")


def test_untraceable_module_is_named(tmp_path, user_backbones):
    with pytest.raises(ExportError) as err:
        export_from_config(_cfg("test_export_gated"), "exported-program", str(tmp_path / "m.pt2"), class_names=[])
    text = str(err.value)
    assert "cannot export to exported-program" in text and "'backbone.stage'" in text
    assert "DataDependentGate" in text and "data-dependent" in text
    assert not os.listdir(tmp_path)  # nothing half-written


def test_module_without_onnx_translation_is_named(tmp_path, user_backbones):
    """The spectral backbone exports as an ExportedProgram, but not to ONNX: the error says which module
    and which operator."""
    onnx_or_skip()
    cfg = _cfg("test_export_spectral")
    export_from_config(cfg, "exported-program", str(tmp_path / "ok.pt2"), class_names=[])
    with pytest.raises(ExportError) as err:
        export_from_config(cfg, "onnx", str(tmp_path / "m.onnx"), class_names=[])
    text = str(err.value)
    assert "cannot export to onnx" in text and "'backbone.stage'" in text and "SpectralScale" in text
    assert "linalg_svd" in text and "No ONNX function" in text
    assert not os.path.exists(tmp_path / "m.onnx")


def test_unknown_architecture_and_bad_sizes(tmp_path):
    with pytest.raises(ExportError, match="MODEL.META_ARCHITECTURE 'RetinaNet' cannot be exported"):
        export_from_config(load_config(CIFAR, ["MODEL.META_ARCHITECTURE", "RetinaNet"]), "onnx", str(tmp_path / "m"))
    with pytest.raises(ValueError, match="32x32 per-pixel mean image"):
        export_from_config(load_config(CIFAR), "exported-program", str(tmp_path / "m.pt2"), size=(64, 64),
                           class_names=[])
    from tools.export import main

    with pytest.raises(SystemExit):
        main([CIFAR, "--format", "tflite"])


def test_aoti_without_a_compiler_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++ / c++ on it
    monkeypatch.setenv("CXX", "no-such-compiler")
    reason = aoti_unavailable_reason()
    assert reason is not None and "compiler" in reason
    with pytest.raises(ExportError, match="cannot export to aoti: .*compiler"):
        export_from_config(load_config(CIFAR), "aoti", str(tmp_path / "m.aoti.pt2"), class_names=[])
