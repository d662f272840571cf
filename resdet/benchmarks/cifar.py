"""`tools/benchmark.py --cifar`: iterations/s of the paper's CIFAR training step, eager against the
compiled and CUDA-graph steps (SOLVER.STEP_MODE), same model, data and recipe in the same process.

    python tools/benchmark.py --cifar --device cuda --depth 20 --iters 500
    python tools/benchmark.py --cifar --device cpu --depth 20 --batch 32 --iters 5 --rounds 3

What is timed is the step train_cls runs: ImageClassifier over the 6n+2 CIFAR ResNet, cross-entropy,
SGD (momentum 0.9, weight decay 1e-4), the multi-step schedule, the on-device pad-crop-flip batches
(resdet/data/folders.py DeviceBatches, per-pixel mean) and the metrics hook (LOG_PERIOD 100), driven
step by step as Trainer.train drives it. Images are 32x32 crops of real photographs (scikit-image's
bundled ones, resdet/benchmarks/photos.py). Each mode is set up once (compilation / warm-up and
capture are reported as setup_s), then the modes are timed in turn, `rounds` times, alternating, and
each mode's median is reported with its ratio to eager's.

`cifar_step_rates(device, depth=20, iters=200, batch=128)` returns the rows (one per mode) for other
benchmarks (e.g. the GPU suite, resdet/benchmarks/suite.py) to include.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from resdet.backbones.resnet import ResNet
from resdet.classification.model import ImageClassifier
from resdet.data.folders import DeviceBatches, mean_image
from resdet.data.samplers import InfiniteSampler
from resdet.engine.hooks import MetricsLogger
from resdet.engine.schedules import WarmupMultiStepLR, make_optimizer
from resdet.engine.static_step import StaticStepTrainer
from resdet.engine.trainer import Trainer

from resdet.runs.train_cls import ClassificationLoss

__all__ = ["cifar_step_rates", "cifar_classifier", "photo_cifar_images", "format_cifar_table", "main"]

# "cuda_graph+inductor": the captured step with the model compiled by inductor inside (SOLVER.COMPILE True)
ALL_MODES = ("eager", "compiled", "cuda_graph", "cuda_graph+inductor")


def photo_cifar_images(n: int = 2048, num_classes: int = 10, seed: int = 0):
    """n uint8 [3, 32, 32] images, random crops of real photographs scaled down to CIFAR's size, with
    labels (photo index mod num_classes)."""
    import cv2

    from .photos import random_crop_resized, skimage_photos

    rng = np.random.default_rng(seed)
    photos = skimage_photos()
    images = np.empty((n, 32, 32, 3), np.uint8)
    labels = np.empty(n, np.int64)
    for i in range(n):
        k = int(rng.integers(len(photos)))
        crop = random_crop_resized(photos[k][1], rng, 64, 96, min_crop=0.1)
        images[i] = cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA)
        labels[i] = k % num_classes
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


def cifar_classifier(depth: int, mean: torch.Tensor) -> ImageClassifier:
    """The paper's 6n+2 CIFAR ResNet (any n, option A) in the recipe's classifier: per-pixel mean `mean`
    [3, 32, 32] subtracted, no scaling (configs/Base-CIFAR10.yaml)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"--depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, 1202); got {depth}")
    n = (depth - 2) // 6
    net = ResNet("basic", (n, n, n), widths=(16, 32, 64), stem="cifar", shortcut="A", num_classes=10)
    model = ImageClassifier(net, pixel_mean=[125.3, 123.0, 113.9], pixel_std=[1.0] * 3, mean_image_size=(32, 32))
    model.set_mean_image(mean)
    return model


class _Run:
    """One mode's model, optimizer, data and trainer, stepped as Trainer.train steps them."""

    def __init__(self, mode: str, device: torch.device, depth: int, batch: int, images, labels, *, amp: str,
                 channels_last: bool, total_iters: int, log_period: int):
        torch.manual_seed(0)
        mean = mean_image(images)
        model = cifar_classifier(depth, mean).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        net = torch.compile(model) if mode == "cuda_graph+inductor" else model
        optimizer = make_optimizer(model, lr=0.1, momentum=0.9, weight_decay=1e-4, weight_decay_norm=1e-4)
        scheduler = WarmupMultiStepLR(optimizer, [total_iters // 2], warmup_iters=0, warmup_factor=1.0)
        x, y = images.to(device), labels.to(device)
        batches = DeviceBatches(x, y, batch, InfiniteSampler(len(y), seed=0), pad=4, pad_value=mean.to(device), seed=0)
        common = dict(max_iter=total_iters, loss_fn=ClassificationLoss(10), scheduler=scheduler, amp=amp,
                      channels_last=channels_last, device=device, hooks=[MetricsLogger(log_period)])
        if mode == "eager":
            self.trainer: Trainer = Trainer(net, optimizer, batches, **common)
        else:
            step_mode = "compiled" if mode == "compiled" else "cuda_graph"
            self.trainer = StaticStepTrainer(net, optimizer, batches, step_mode=step_mode, sync_periods=(log_period,),
                                             **common)
        self.device = device
        # what Trainer.train() does before its loop (the benchmark drives the loop itself, in segments)
        t = self.trainer
        t.model.train()
        t._data_iter = iter(batches)
        t._call_hooks("before_train")
        if isinstance(t, StaticStepTrainer):
            t._prepare()
        t.iter = 0

    def steps(self, n: int) -> float:
        """Run n steps (hooks included); return the seconds they took, device work finished."""
        t = self.trainer
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(n):
            t._call_hooks("before_step")
            t.run_step()
            t._call_hooks("after_step")
            t.iter += 1
        _sync(self.device)
        return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cifar_step_rates(device="cuda", depth: int = 20, iters: int = 200, batch: int = 128, *,
                     modes: Optional[Sequence[str]] = None, rounds: int = 3, warmup: int = 10, amp: str = "",
                     channels_last: bool = False, cudnn_benchmark: Optional[bool] = None, num_images: int = 2048,
                     progress: Optional[Callable[[Dict], None]] = None) -> List[Dict]:
    """Median iterations/s of each step mode over `rounds` alternating segments of `iters` steps, after
    `warmup` steps (compilation, capture) per mode. Rows: {"kind", "mode", "device", "depth", "batch",
    "amp", "precision", "channels_last", "it_per_s", "img_per_s", "ms_per_iter", "ratio_to_eager",
    "setup_s", "rounds_it_per_s", "iters"}. Default modes: all four on CUDA; on the CPU eager only
    (compiling there costs a minute or more: ask for "compiled", as `tools/benchmark.py --cifar` does)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("cifar_step_rates: a CUDA device was asked for but none is visible")
    if modes is None:
        modes = ALL_MODES if device.type == "cuda" else ("eager",)
    bad = [m for m in modes if m not in ALL_MODES]
    if bad or "eager" not in modes:
        raise ValueError(f"modes must include 'eager' and come from {ALL_MODES}; got {list(modes)}")
    if device.type != "cuda" and any(m.startswith("cuda_graph") for m in modes):
        raise ValueError("the cuda_graph modes need a CUDA device")
    if device.type == "cuda":
        # fixed shapes every step: cuDNN's autotuning pays for itself (it is off for detection, whose shapes change)
        torch.backends.cudnn.benchmark = True if cudnn_benchmark is None else cudnn_benchmark
    torch.set_float32_matmul_precision("high")  # TF32, as SOLVER.ALLOW_TF32 does
    images, labels = photo_cifar_images(num_images)
    total = warmup + rounds * iters
    runs, setup = {}, {}
    for mode in modes:
        start = time.perf_counter()
        runs[mode] = _Run(mode, device, depth, batch, images, labels, amp=amp, channels_last=channels_last,
                          total_iters=total, log_period=100)
        runs[mode].steps(warmup)
        setup[mode] = time.perf_counter() - start
    rates = {m: [] for m in modes}
    for _ in range(rounds):
        for mode in modes:  # alternating, so that a busy moment of a shared machine hits every mode
            rates[mode].append(iters / runs[mode].steps(iters))
    eager = statistics.median(rates["eager"])
    rows = []
    for mode in modes:
        r = statistics.median(rates[mode])
        precision = amp or ("float32 (TF32)" if device.type == "cuda" else "float32")
        row = {"kind": "cifar_step", "mode": mode, "device": str(device), "depth": depth, "batch": batch, "amp": amp,
               "precision": precision, "channels_last": channels_last, "it_per_s": r, "img_per_s": r * batch, "ms_per_iter": 1000.0 / r,
               "ratio_to_eager": r / eager, "setup_s": setup[mode], "rounds_it_per_s": rates[mode], "iters": iters}
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def format_cifar_table(rows: List[Dict]) -> str:
    lines = ["| mode | it/s | img/s | ms/iter | ratio to eager | setup s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['it_per_s']:.2f} | {r['img_per_s']:.0f} | {r['ms_per_iter']:.2f} | "
                     f"{r['ratio_to_eager']:.2f} | {r['setup_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/benchmark.py --cifar", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--depth", type=int, default=20, help="6n+2 CIFAR ResNet depth (20: ResNet-20)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--iters", type=int, default=200, help="timed steps per mode per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating timed segments per mode (median reported)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per mode (compilation, capture)")
    p.add_argument("--modes", nargs="+", choices=ALL_MODES, default=None,
                   help="default: all on CUDA, eager and compiled on the CPU")

    p.add_argument("--amp", choices=["", "bf16"], default="")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--images", type=int, default=2048, help="photo crops held on the device")
    p.add_argument("--json", help="append one JSON line per mode to this file")
    args = p.parse_args(argv)
    if args.modes is None and not args.device.startswith("cuda"):
        args.modes = ["eager", "compiled"]
    rows = cifar_step_rates(args.device, args.depth, args.iters, args.batch, modes=args.modes, rounds=args.rounds,
                            warmup=args.warmup, amp=args.amp, channels_last=args.channels_last,
                            num_images=args.images,
                            progress=lambda r: print(f"  {r['mode']}: {r['it_per_s']:.2f} it/s", flush=True))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    dev = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "cpu"
    print(f"CIFAR ResNet-{args.depth} training step, batch {args.batch}, device {dev}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}; ratio = mode it/s / eager it/s (medians of {args.rounds} rounds)")
    print(format_cifar_table(rows))
    return 0
