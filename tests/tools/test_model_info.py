import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_model_info_prints_params_flops_and_stages():
    out = subprocess.run([sys.executable, "tools/model_info.py", "resnet50"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert "25,557,032" in out and "4.112 G" in out
    assert "res5        32  (1, 2048, 7, 7)" in out


def test_model_info_json_for_v1_and_cifar():
    out = subprocess.run([sys.executable, "tools/model_info.py", "cifar_resnet56", "--json"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    info = json.loads(out.strip().splitlines()[-1])
    assert info["parameters"] == 853_018
    assert info["stages"]["res4"] == [1, 64, 8, 8]


def test_model_info_for_a_detection_config_per_component():
    from resdet.config import load_config
    from resdet.detection.rcnn import build_detection_model
    from resdet.utils.model_stats import count_flops, count_parameters

    config = os.path.join(ROOT, "configs", "quickstart_shapes.yaml")
    out = subprocess.run([sys.executable, "tools/model_info.py", "--config", config, "--size", "128", "--json"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    info = json.loads(out.strip().splitlines()[-1])
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
    out = subprocess.run([sys.executable, "tools/model_info.py", "--config", config, "--size", "128", "--json",
                          "MODEL.MASK_ON", "False"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    boxes_only = json.loads(out.strip().splitlines()[-1])
    assert boxes_only["flops"]["backbone"] == info["flops"]["backbone"]
    assert boxes_only["flops"]["roi_heads"] < 0.5 * info["flops"]["roi_heads"]


def test_model_info_for_a_classifier_config():
    out = subprocess.run([sys.executable, "tools/model_info.py", "--config", "configs/cifar10_resnet110.yaml"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert "1,727,962" in out  # the paper's 1.7M
