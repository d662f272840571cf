#!/usr/bin/env python
"""Train a Faster/Mask R-CNN: `python tools/train_det.py CONFIG [--resume] [--eval-only] [KEY VALUE ...]`.

DDP: `torchrun --nproc_per_node N tools/train_det.py CONFIG ...` (add --nnodes/--node_rank/--master_addr
for several machines). Everything happens in resdet.runs.train_det.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resdet.runs.train_det import main  # noqa: E402

if __name__ == "__main__":
    from resdet.runs.cli import run_tool  # user errors: one line, no traceback (--debug shows it)

    sys.exit(run_tool(main))
