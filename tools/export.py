#!/usr/bin/env python
"""A trained model to ONNX or a torch.export ExportedProgram: see resdet/runs/export.py.

  python tools/export.py configs/coco_r50.yaml --weights model_final.pth --format onnx --dynamic
  python tools/export.py configs/cifar10_resnet20.yaml --weights model_final.pth --format exported-program
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from resdet.runs.export import main  # noqa: E402

if __name__ == "__main__":
    from resdet.runs.cli import run_tool  # user errors: one line, no traceback (--debug shows it)

    sys.exit(run_tool(main))
