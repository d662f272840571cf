#!/usr/bin/env python
"""Why the AP is what it is: error types, PR bands, confusion matrix, per-class thresholds, worst and best
images, in analysis.json, PNG figures and index.html. See resdet/runs/analyze.py.

    python tools/analyze.py --weights output/run/model_final.pth
    python tools/analyze.py --gt annotations.json --results coco_instances_results.json --images images/
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resdet.runs.analyze import main  # noqa: E402

if __name__ == "__main__":
    from resdet.runs.cli import run_tool  # user errors: one line, no traceback (--debug shows it)

    sys.exit(run_tool(main))
