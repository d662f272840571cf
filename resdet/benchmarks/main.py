"""`tools/benchmark.py`: training steps/s and inference images/s of our Faster/Mask R-CNN against
torchvision's, with the same weights on the same inputs in the same process; prints a table with the
ratio (ours / torchvision). This module is the command line; each kind of measurement lives in its own
module beside it in resdet/benchmarks/ (detection.py: the detectors; cifar.py: the CIFAR training step,
--cifar; counts.py, loader_imagenet.py, loader_coco.py, suite.py, exported.py: below).

  python tools/benchmark.py --device cpu --size 256 --batch 2 --iters 3
  python tools/benchmark.py --device cuda --size 800x1216 --batch 8 --iters 20 --amp fp16

Input pipelines (--loader; loader_imagenet.py and loader_coco.py: ImageNet training input, ours against torchvision's
standard ImageFolder + PIL + RandomResizedCrop pipeline, per core with --workers 0):

  python tools/benchmark.py --loader imagenet [--data DIR] [--workers N] [--decode cpu|gpu] [--n 500]
  python tools/benchmark.py --loader coco --data DIR [--workers N] [--n 500]

  python tools/benchmark.py --suite gpu            # the GPU acceptance suite (suite.py)
  python tools/benchmark.py --counts --size 192x256 --count-batches 1 8     # host reads and aten ops
                                                                              (counts.py)
  python tools/benchmark.py --exported output/export/coco_r50.onnx --device cpu --size 800x1216 --batch 1
      (an exported file against the eager model it came from: exported.py)
  python tools/benchmark.py --nms --config configs/custom_scratch_r18_gn.yaml --size 288x480 --batch 4 --device cpu
      (grouped NMS's branches on a model's own boxes: nms.py)
  python tools/benchmark.py --train-step configs/custom_scratch_r18_gn.yaml --device cpu
      (a recipe's training step with its loader, today's settings against the config's: train_step.py)
  python tools/benchmark.py --predict [--weights CKPT] [--video FILE] [--folder DIR] [--batch N]
      (tools/predict.py's pipeline, drawing included, against the model alone; results JSON writing:
      predict.py; `--predict --help` lists its options)
  python tools/benchmark.py --analysis [--data DIR] [--images 5000]   # tools/analyze.py against pycocotools'
                                                                        evaluation, COCO-val-sized (analysis.py)
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from .detection import format_table, time_models
from resdet.runs.cli import image_size


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--suite" or a.startswith("--suite=") for a in argv):
        # the GPU acceptance suite (resdet/benchmarks/suite.py) has options of its own
        from .suite import main as suite_main

        return suite_main(argv)
    if "--predict" in argv:  # tools/predict.py's pipeline against the model alone: predict.py
        from .predict import main as predict_main

        return predict_main(argv)
    if "--analysis" in argv:  # the evaluation analysis against pycocotools' evaluation: analysis.py
        from .analysis import main as analysis_main

        return analysis_main([a for a in argv if a != "--analysis"])
    if "--cifar" in argv:  # its own options and defaults (batch 128, depth, rounds): cifar.py
        from .cifar import main as cifar_main

        return cifar_main([a for a in argv if a != "--cifar"])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=["gpu"],
                   help="run the GPU acceptance suite instead (benchmark.json + benchmark.md; its options: "
                        "tools/benchmark.py --suite gpu --help)")
    p.add_argument("--predict", action="store_true",
                   help="time tools/predict.py's pipeline against the model alone instead (see `--predict --help`; "
                        "resdet/benchmarks/predict.py)")
    p.add_argument("--analysis", action="store_true",
                   help="time the evaluation analysis against pycocotools' evaluation at COCO val's size instead "
                        "(see `--analysis --help`; resdet/benchmarks/analysis.py)")
    p.add_argument("--cifar", action="store_true",
                   help="time the CIFAR training step instead, eager vs compiled / CUDA graph "
                        "(see `--cifar --help`; resdet/benchmarks/cifar.py)")
    p.add_argument("--arch", choices=["maskrcnn", "fasterrcnn", "both", "cascade"], default="both",
                   help="cascade: Cascade Mask R-CNN against resdet's Mask R-CNN (benchmarks/cascade.py)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=image_size, default=(800, 1216), help="N (square) or HxW")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=10, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--amp", choices=["", "fp16", "bf16"], default=None,
                   help="autocast dtype (default: fp16 on CUDA, none on CPU)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--modes", nargs="+", choices=["train", "infer"], default=["train", "infer"],
                   help="training steps, inference calls, or both (the default)")
    p.add_argument("--boxes", type=int, default=7, help="ground-truth boxes per training image")
    p.add_argument("--json", help="append one JSON line per measurement to this file")
    p.add_argument("--counts", action="store_true",
                   help="count the synchronisations (host reads, blocking host-to-device copies, NMS calls) and "
                        "aten ops of a training step and an inference call instead of timing")
    p.add_argument("--count-batches", type=int, nargs="+", default=[1, 8], help="batch sizes for --counts")
    p.add_argument("--config", default="", help="with --counts: count our model as this config builds it "
                   "(e.g. configs/coco_r50.yaml; random weights) instead of the torchvision preset of --arch; "
                   "with --nms: the model whose NMS inputs are timed")
    p.add_argument("--nms", action="store_true",
                   help="time grouped NMS's branches on the boxes a model of --config sends it (resdet/benchmarks/nms.py)")
    g = p.add_argument_group("input pipelines (--loader)")
    g.add_argument("--loader", choices=["imagenet", "coco"],
                   help="time a training input pipeline instead of the models (ours / torchvision's)")
    g.add_argument("--data", help="imagenet: a folder of class folders of JPEGs (default: benchmark photos made "
                                  "in a temp folder); coco: a COCO-format dataset")
    g.add_argument("--workers", type=int, default=0,
                   help="DataLoader workers; 0 times one core (one process, one thread)")
    g.add_argument("--decode", choices=["cpu", "gpu"], default="cpu", help="imagenet: CLS.DATA.DECODE of ours")
    g.add_argument("--n", type=int, default=500, help="images per round")
    g.add_argument("--aug", choices=["rrc", "scale", "both"], default="both",
                   help="imagenet: RandomResizedCrop, the paper's scale augmentation, or both (the last line "
                        "then reports the one with the lower ratio)")
    g.add_argument("--rounds", type=int, default=3, help="imagenet: alternating rounds per pipeline (median); "
                   "--train-step: rounds per variant (default 2)")
    g.add_argument("--decoders", action="store_true", help="imagenet: also time the JPEG decoders alone")
    p.add_argument("--exported", default="", help="time this file from tools/export.py (.onnx: onnxruntime, "
                   ".pt2: torch.export) against the eager model it came from, instead of torchvision")
    p.add_argument("--weights", default="", help="with --exported: the eager model's weights (default: the "
                   "checkpoint the file records); with --nms: the detector's weights (default: random); with --train-step: the weights both "
                   "variants start from")
    t = p.add_argument_group("a recipe's training step (--train-step; train_step.py)")
    t.add_argument("--train-step", metavar="CONFIG", default="",
                   help="time this config's training step with its loader against --baseline, on photographs "
                        "(--data: a folder with annotations/train.json and images/; default: made in a temp folder)")
    t.add_argument("--baseline", default=None, help="KEY VALUE overrides that make the baseline (default: today's "
                   "settings, train_step.TODAY)")
    t.add_argument("--baseline-weights", default="",
                   help="the baseline's own starting checkpoint where its shapes differ from the config's "
                        "(default: --weights for both)")
    t.add_argument("--opts", nargs="*", default=[], help="KEY VALUE overrides for both variants")
    t.add_argument("--steps", type=int, default=6, help="timed steps per variant per round (after --warmup)")
    t.add_argument("--images", type=int, default=40, help="photographs to make when --data is not given")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (0: torch's default, one per core); 1 measures work per core, "
                        "which a machine shared with other jobs disturbs least")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_step:
        from .train_step import TODAY, main_train_step

        if args.baseline is None:
            args.baseline = TODAY
        if not any(a == "--rounds" or a.startswith("--rounds=") for a in argv):
            args.rounds = 2
        return main_train_step(args)
    if args.exported:
        return _main_exported(args)
    if args.counts:
        if args.arch == "cascade":  # ours against ours: torchvision has no cascade (benchmarks/cascade.py)
            from .cascade import main_cascade_counts

            return main_cascade_counts(args)
        from .counts import main_counts

        return main_counts(args)
    if args.nms:
        from .nms import main_nms

        return main_nms(args)
    if args.loader:
        return _loader_main(args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but no GPU is visible; use --device cpu")
    amp = args.amp if args.amp is not None else ("fp16" if args.device.startswith("cuda") else "")
    # never cudnn.benchmark: detection shapes change every step (the mask head's batch size, above all)
    torch.backends.cudnn.benchmark = False
    h, w = args.size
    if args.arch == "cascade":
        return _main_cascade(args, amp)
    archs = ["fasterrcnn", "maskrcnn"] if args.arch == "both" else [args.arch]
    rows = []
    for arch in archs:
        rows += time_models(arch, h, w, args.batch, args.iters, args.warmup, args.device, amp, args.channels_last,
                            args.boxes, modes=args.modes, progress=lambda r: print(f"  {r['arch']} {r['model']} {r['mode']}: "
                                                                 f"{r['img_per_s']:.2f} img/s", flush=True))
    _append_json(args.json, rows)
    print(f"{_device_line(args.device)}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"ratio = resdet img/s / torchvision img/s")
    print(format_table(rows))
    return 0


def _main_cascade(args, amp: str) -> int:
    from .cascade import format_cascade_rows, time_cascade

    h, w = args.size
    rows = time_cascade(h, w, args.batch, args.iters, args.warmup, args.device, amp, args.boxes,
                        progress=lambda r: print(f"  {r['model']} {r['mode']}: {r['img_per_s']:.2f} img/s", flush=True))
    _append_json(args.json, rows)
    print(f"{_device_line(args.device)}, torch {torch.__version__}; ratio = cascade img/s / standard heads' img/s")
    print(format_cascade_rows(rows))
    return 0


def _append_json(path: str, rows) -> None:
    """--json: one JSON line per measurement, appended."""
    if path:
        with open(path, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


def _device_line(device: str) -> str:
    return f"device: {torch.cuda.get_device_name(torch.device(device)) if device.startswith('cuda') else 'cpu'}"


def _loader_main(args) -> int:
    if args.n < 1 or args.workers < 0 or args.rounds < 1:
        raise SystemExit(f"--n and --rounds must be >= 1 and --workers >= 0; got {args.n}, {args.rounds}, {args.workers}")
    per = "per core" if args.workers == 0 else "in total"
    if args.loader == "coco":
        from .loader_coco import time_coco_loaders  # the detection input (its own module)

        r = time_coco_loaders(args.data, args.n, args.workers)
        rows = [dict(kind="coco", workers=args.workers, n=args.n, resdet=r["resdet"], torchvision=r["torchvision"],
                     ratio=r["resdet"] / r["torchvision"], per=per)]
        last = rows[0]
    else:
        from .loader_imagenet import time_decoders, time_imagenet_loaders

        if args.decode == "gpu" and not args.device.startswith("cuda"):
            print(f"note: --decode gpu on {args.device}: the device decoder runs on the CPU (a functional check, "
                  f"not a GPU figure)")
        if args.decoders:
            for name, rate in time_decoders(args.data, min(args.n, 200)).items():
                print(f"  decoder {name}: {rate:.0f} img/s (one thread)")
        augs = ["rrc", "scale"] if args.aug == "both" else [args.aug]
        rows = time_imagenet_loaders(args.data, args.n, args.workers, args.decode, augs, rounds=args.rounds,
                                     device=args.device, progress=lambda line: print(line, flush=True))
        for r in rows:
            print(f"loader imagenet {r['aug']} (decode {r['decode']}): ratio {r['ratio']:.2f} (resdet {r['resdet']:.0f} "
                  f"img/s, torchvision {r['torchvision']:.0f} img/s {per})")
        last = min(rows, key=lambda r: r["ratio"])
    _append_json(args.json, rows)
    print(f"loader {args.loader}: ratio {last['ratio']:.2f} (resdet {last['resdet']:.0f} img/s, "
          f"torchvision {last['torchvision']:.0f} img/s {per})")
    return 0


def _main_exported(args) -> int:
    from .exported import format_rows, time_exported

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but no GPU is visible; use --device cpu")
    rows = time_exported(args.exported, size=args.size, batch=args.batch, iters=args.iters, warmup=args.warmup,
                         weights=args.weights, device=args.device,
                         progress=lambda r: print(f"  {r['model']} ({r['format']}): {r['img_per_s']:.2f} img/s",
                                                  flush=True))
    _append_json(args.json, rows)
    print(f"{_device_line(args.device)}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"ratio = exported img/s / eager img/s")
    print(format_rows(rows))
    return 0

