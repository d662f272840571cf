"""`tools/benchmark.py`: training steps/s and inference images/s of our Faster/Mask R-CNN against
torchvision's, with the same weights on the same inputs in the same process; prints a table with the
ratio (ours / torchvision). This module is the command line; each kind of measurement lives in its own
module beside it (benchmark_det.py: the detectors).

  python tools/benchmark.py --device cpu --size 256 --batch 2 --iters 3
  python tools/benchmark.py --device cuda --size 800x1216 --batch 8 --iters 20 --amp fp16
  python tools/benchmark.py --exported output/export/coco_r50.onnx --device cpu --size 800x1216 --batch 1
      (an exported file against the eager model it came from: benchmark_export.py)
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from .benchmark_det import format_table, time_models


def _size(text: str):
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be N or HxW (e.g. 256 or 800x1216); got {text!r}")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 32:
        raise argparse.ArgumentTypeError(f"--size must be N or HxW with sides >= 32; got {text!r}")
    return tuple(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["maskrcnn", "fasterrcnn", "both"], default="both")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=_size, default=(800, 1216), help="N (square) or HxW")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=10, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--amp", choices=["", "fp16", "bf16"], default=None,
                   help="autocast dtype (default: fp16 on CUDA, none on CPU)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--boxes", type=int, default=7, help="ground-truth boxes per training image")
    p.add_argument("--json", help="append one JSON line per measurement to this file")
    p.add_argument("--exported", default="", help="time this file from tools/export.py (.onnx: onnxruntime, "
                   ".pt2: torch.export) against the eager model it came from, instead of torchvision")
    p.add_argument("--weights", default="", help="with --exported: the eager model's weights (default: the "
                   "checkpoint the file records)")
    args = p.parse_args(argv)
    if args.exported:
        return _main_exported(args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but no GPU is visible; use --device cpu")
    amp = args.amp if args.amp is not None else ("fp16" if args.device.startswith("cuda") else "")
    # never cudnn.benchmark: detection shapes change every step (the mask head's batch size, above all)
    torch.backends.cudnn.benchmark = False
    h, w = args.size
    archs = ["fasterrcnn", "maskrcnn"] if args.arch == "both" else [args.arch]
    rows = []
    for arch in archs:
        rows += time_models(arch, h, w, args.batch, args.iters, args.warmup, args.device, amp, args.channels_last,
                            args.boxes, progress=lambda r: print(f"  {r['arch']} {r['model']} {r['mode']}: "
                                                                 f"{r['img_per_s']:.2f} img/s", flush=True))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(f"device: {torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}, "
          f"torch {torch.__version__}; ratio = resdet img/s / torchvision img/s")
    print(format_table(rows))
    return 0


def _main_exported(args) -> int:
    from .benchmark_export import format_rows, time_exported

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but no GPU is visible; use --device cpu")
    rows = time_exported(args.exported, size=args.size, batch=args.batch, iters=args.iters, warmup=args.warmup,
                         weights=args.weights, device=args.device,
                         progress=lambda r: print(f"  {r['model']} ({r['format']}): {r['img_per_s']:.2f} img/s",
                                                  flush=True))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(f"device: {torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; ratio = exported img/s / eager img/s")
    print(format_rows(rows))
    return 0

