"""Bad use of tools/export.py gets an error that says what is wrong: a missing weights file names its
path; a model that cannot be exported in the asked format names the module and the reason."""
import os

import pytest
import torch
from torch import nn

from resdet.backbones.registry import BACKBONE_REGISTRY
from resdet.config import load_config
from resdet.export.exporter import ExportError, aoti_unavailable_reason
from resdet.runs.export import build_model, export_from_config

from .helpers import CONFIGS, ROOT, onnx_or_skip

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


def test_default_fixed_shape_holds_portrait_and_landscape_images(tmp_path):
    """Without --size or --dynamic a detector's input is a square of INPUT.MAX_SIZE_TEST: the test-time
    resize of any image, portrait or landscape, fits in it (MIN x MAX, the default before, refused every
    portrait image). An image larger than the square is refused with an ExportedFileError that names the
    file and the shapes. (Detections equal to the eager model's: test_detection_export.py.)"""
    onnx_or_skip()
    from resdet.export.runtime import ExportedDetector, ExportedFileError
    from resdet.predictor import DetectionPredictor

    from .helpers import photo

    cfg = load_config(os.path.join(CONFIGS, "quickstart_shapes.yaml"), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    weights = str(tmp_path / "w.pth")
    torch.save(build_model(cfg).state_dict(), weights)
    meta = export_from_config(cfg, "onnx", str(tmp_path / "shapes.onnx"), weights=weights,
                              class_names=["circle", "square", "triangle"])
    side = cfg.INPUT.MAX_SIZE_TEST  # the square that holds any resized image (a multiple of the FPN stride here)
    assert side % 32 == 0 and meta["input_shapes"]["images"] == [1, 3, side, side] and not meta["dynamic"]
    predictor = DetectionPredictor.from_exported(meta["path"], score_threshold=0.0)
    for h, w in ((150, 100), (100, 150)):  # portrait, then landscape: shorter side MIN_SIZE_TEST after the resize
        image = photo("astronaut", h, w).permute(1, 2, 0).to(torch.uint8).numpy()  # HxWx3 RGB, as the predictor takes
        found = predictor(image)
        boxes = found["boxes"]
        assert len(found["scores"]) > 0 and found["masks"].shape[-2:] == (h, w), (h, w)
        assert bool((boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (boxes >= 0).all()), (h, w)
    with pytest.raises(ExportedFileError, match=rf"shapes\.onnx' was exported for fixed {side}x{side} inputs; an image "
                                                r"of 224x96 does not fit"):
        ExportedDetector(meta["path"])([torch.zeros(3, 224, 96)])


def test_a_file_not_from_export_is_one_line_in_the_tools(tmp_path):
    """tools/demo.py --exported on a torch.export file that resdet did not write: one line naming the file
    (ExportedFileError is a user error for runs/cli.run_tool), no traceback, exit status 1."""
    import subprocess
    import sys

    path = str(tmp_path / "other.pt2")
    torch.export.save(torch.export.export(nn.Linear(4, 2), (torch.zeros(1, 4),)), path)
    env = dict(os.environ, PYTHONPATH=ROOT, NO_ALBUMENTATIONS_UPDATE="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--exported", path,
                           "--input", str(tmp_path), "--output", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"error: '{path}' carries no 'resdet' metadata" in proc.stderr
