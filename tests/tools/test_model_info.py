"""tools/model_info.py: parameters, FLOPs and stage shapes. One test runs the script as a command; the
others call its main() in this process (a fresh interpreter costs seconds of imports each time)."""
import json
import os
import subprocess
import sys

import pytest

from tools.model_info import main

# one intra-op thread (tests/conftest.py): two spin-waiting threads on two shared cores cost CPU for nothing
pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _json(capsys, argv):
    main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_model_info_prints_params_flops_and_stages(capsys):
    main(["resnet50"])
    out = capsys.readouterr().out
    assert "25,557,032" in out and "4.112 G" in out
    assert "res5        32  (1, 2048, 7, 7)" in out


def test_model_info_json_for_v1_and_cifar(capsys):
    info = _json(capsys, ["cifar_resnet56", "--json"])
    assert info["parameters"] == 853_018
    assert info["stages"]["res4"] == [1, 64, 8, 8]


def test_model_info_for_a_detection_config_per_component(capsys):
    from resdet.config import load_config
    from resdet.detection.rcnn import build_detection_model
    from resdet.utils.model_stats import count_flops, count_parameters

    config = os.path.join(ROOT, "configs", "quickstart_shapes.yaml")
    info = _json(capsys, ["--config", config, "--size", "128", "--json"])
    parts = ("backbone", "fpn", "rpn", "roi_heads")
    model = build_detection_model(load_config(config))
    assert info["parameters"]["total"] == count_parameters(model) == sum(info["parameters"][p] for p in parts)
    assert info["parameters"]["backbone"] == count_parameters(model.backbone)
    # the backbone inside the detector costs what fvcore counts for it alone on the same (padded) input
    assert info["flops"]["backbone"] == count_flops(model.backbone, (128, 128))
    assert all(info["flops"][p] > 0 for p in parts)
    assert info["flops"]["total"] >= sum(info["flops"][p] for p in parts)
    assert info["detections"] > 0
    # the mask head runs on those detections and is counted (a trace keeps only what reaches an output)
    boxes_only = _json(capsys, ["--config", config, "--size", "128", "--json", "MODEL.MASK_ON", "False"])
    assert boxes_only["flops"]["backbone"] == info["flops"]["backbone"]
    assert boxes_only["flops"]["roi_heads"] < 0.5 * info["flops"]["roi_heads"]


def test_model_info_for_a_classifier_config():
    """The script as a command, from the repository root (its own sys.path set-up, run_tool's exit)."""
    out = subprocess.run([sys.executable, "tools/model_info.py", "--config", "configs/cifar10_resnet110.yaml"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert "1,727,962" in out  # the paper's 1.7M
