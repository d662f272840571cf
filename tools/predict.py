#!/usr/bin/env python
r"""A trained detector on images, folders, globs, videos, cameras and streams: see resdet/runs/predict.py.

    python tools/predict.py --weights output/run/model_final.pth --input photos/ clip.mp4 --output out/ --batch 4
    python tools/predict.py --weights model_final.pth --input 0 --output out/                 # camera 0
    python tools/predict.py --weights model_final.pth --dataset my_val --output out/ --no-draw   # COCO results
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resdet.runs.predict import main  # noqa: E402

if __name__ == "__main__":
    from resdet.runs.cli import run_tool  # user errors: one line, no traceback (--debug shows it)

    sys.exit(run_tool(main))
