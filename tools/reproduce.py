#!/usr/bin/env python
"""The paper's CIFAR-10 study (Table 6, Fig. 6) by one command: see resdet/runs/reproduce.py.

    python tools/reproduce.py cifar10 [--depths 20 32 44 56 110 1202] [--plain 20 32 44 56 110] [--runs N]
        [--data ROOT] [--output DIR] [--jobs J] [--smoke] [KEY VALUE ...]
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import resdet  # noqa: E402,F401  (sets NO_ALBUMENTATIONS_UPDATE before anything imports albumentations)
from resdet.runs.reproduce import main  # noqa: E402

if __name__ == "__main__":
    from resdet.runs.cli import run_tool  # user errors: one line, no traceback (--debug shows it)

    sys.exit(run_tool(main))
