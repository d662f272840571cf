#!/usr/bin/env python
"""Train or evaluate an image classifier (the paper's ImageNet and CIFAR-10 recipes): see
resdet/runs/train_cls.py.

    python tools/train_cls.py configs/cifar10_resnet20.yaml [--resume] [--eval-only] [KEY VALUE ...]
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import resdet  # noqa: E402,F401  (sets NO_ALBUMENTATIONS_UPDATE before anything imports albumentations)
from resdet.runs.train_cls import main  # noqa: E402

if __name__ == "__main__":
    from resdet.runs.cli import run_tool  # user errors: one line, no traceback (--debug shows it)

    sys.exit(run_tool(main))
