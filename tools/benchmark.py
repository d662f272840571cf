#!/usr/bin/env python
"""Ours against torchvision's, same inputs, same process, with the ratio: see resdet/benchmarks/main.py.

  python tools/benchmark.py --device cpu --size 256 --batch 2 --iters 3
  python tools/benchmark.py --device cuda --size 800x1216 --batch 8 --iters 20 --amp fp16
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from resdet.benchmarks.main import main  # noqa: E402

if __name__ == "__main__":
    from resdet.runs.cli import run_tool  # user errors: one line, no traceback (--debug shows it)

    sys.exit(run_tool(main))
