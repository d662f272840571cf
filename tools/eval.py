#!/usr/bin/env python
"""COCO evaluation (bbox and segm) of a model or of a results file: see resdet/runs/evaluate.py.

    python tools/eval.py --config configs/coco_r50.yaml --weights model_final.pth [KEY VALUE ...]
    python tools/eval.py --gt annotations.json --results coco_instances_results.json
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resdet.runs.evaluate import main  # noqa: E402

if __name__ == "__main__":
    from resdet.runs.cli import run_tool  # user errors: one line, no traceback (--debug shows it)

    sys.exit(run_tool(main))
