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
