"""`tools/benchmark.py --suite gpu`: the GPU acceptance benchmark, one process, one command.

    python tools/benchmark.py --suite gpu                         # one H100/H200: a few minutes (limit 8)
    python tools/benchmark.py --suite gpu --device cpu --det-size 64x96 --det-batch 1 --cls-size 64 \\
        --cls-batch 2 --cifar-batch 8 --iters 1 --rounds 1        # a CPU rehearsal (what the test runs)

Every row times ours and a reference on the same inputs in the same run and gives ratio = ours /
reference (above 1: ours is faster):
- detection: Faster and Mask R-CNN R50-FPN against torchvision's, same weights, same photographs and
  targets (detection.time_models), training and inference images/s and peak memory, batch 8 at
  800x1216, at two precisions: TF32 and AMP fp16 on CUDA (fp32 and bf16 on a CPU);
- resnet50: classification training images/s, batch 256 at 224, bf16, channels_last, one batch of
  photographs kept on the device. Ours is what train_cls runs: the classifier of configs/imagenet_r50.yaml
  (in torchvision's v1.5 layout, so both are the same network), its loss and optimizer, the engine's
  Trainer step; torchvision's resnet50 runs in a bare loop with SGD of the same settings;
- cifar: the paper's CIFAR-10 recipe with ResNet-20 (configs/cifar10_resnet20.yaml), iterations/s of
  train_cls's eager step (Trainer + the on-device pad-crop-flip DeviceBatches) against a bare eager loop
  over the same network (torchvision has no CIFAR ResNet): batches indexed from the same device tensor,
  torchvision.transforms.v2 crop and flip;
- counts: host reads and kernel launches per step, ours vs torchvision's (resdet/benchmarks/counts.py);
- cascade: Cascade Mask R-CNN R50-FPN against resdet's own Mask R-CNN R50-FPN (torchvision has no cascade),
  training and inference images/s, AMP fp16 on CUDA (resdet/benchmarks/cascade.py).
Writes OUTPUT/benchmark.json (settings, device, every row) and OUTPUT/benchmark.md (the table). Parts
that would start after --max-minutes are skipped and listed as such.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from resdet.config import load_config
from resdet.engine.checkpoint import atomic_write_text
from resdet.engine.trainer import HookBase, Trainer
from resdet.utils.env import peak_memory_mib

from resdet.runs.cli import image_size

__all__ = ["PARTS", "run_suite", "format_markdown", "main"]

_CONFIGS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "configs"))
PARTS = ("detection", "resnet50", "cifar", "counts", "cascade")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _row(part: str, model: str, mode: str, precision: str, batch: int, size: str, unit: str, ours: float,
         reference: float, reference_name: str, ours_peak_gib: Optional[float] = None,
         reference_peak_gib: Optional[float] = None, **extra: Any) -> Dict[str, Any]:
    return dict(part=part, model=model, mode=mode, precision=precision, batch=batch, size=size, unit=unit,
                resdet=ours, reference=reference, ratio=ours / reference if reference else None,
                reference_name=reference_name, resdet_peak_gib=ours_peak_gib,
                reference_peak_gib=reference_peak_gib, **extra)


# ---------------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------------
def detection_rows(args, device: torch.device, log: Callable[[str], None]) -> List[Dict[str, Any]]:
    from resdet.benchmarks.detection import build_pair, time_models

    h, w = args.det_size
    cuda = device.type == "cuda"
    # TF32 for the fp32 row (what SOLVER.ALLOW_TF32 gives a run); the AMP row autocasts on top of it
    precisions = [("tf32", ""), ("fp16", "fp16")] if cuda else [("fp32", ""), ("bf16", "bf16")]
    torch.backends.cudnn.benchmark = False  # detection shapes change every step (runs/train_det.py says why)
    rows = []
    for arch in args.archs:
        pair = build_pair(arch, h, w, device=str(device))
        for label, amp in precisions:
            raw = time_models(arch, h, w, args.det_batch, args.iters, args.warmup, str(device), amp,
                              boxes_per_image=args.boxes, pair=pair)
            by = {(r["model"], r["mode"]): r for r in raw}
            for mode in ("train", "infer"):
                ours, tv = by[("resdet", mode)], by[("torchvision", mode)]
                name = {"maskrcnn": "Mask R-CNN R50-FPN", "fasterrcnn": "Faster R-CNN R50-FPN"}[arch]
                rows.append(_row("detection", name, mode, label, args.det_batch, f"{h}x{w}", "img/s",
                                 ours["img_per_s"], tv["img_per_s"], f"torchvision {arch}_resnet50_fpn",
                                 ours["peak_mem_gib"], tv["peak_mem_gib"],
                                 dets_per_image=[ours["dets_per_image"], tv["dets_per_image"]]))
                log(_line(rows[-1]))
        del pair
        if cuda:
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------------
# classification: block timing (steps are short; a sync per step would hide launch overhead)
# ---------------------------------------------------------------------------------------------------
class _BlockTimer(HookBase):
    """Wall time of one Trainer.train() call, device synchronised at both ends."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, None

    def before_train(self) -> None:
        _sync(self.device)
        self._start = time.perf_counter()

    def after_train(self) -> None:
        _sync(self.device)
        self.seconds = time.perf_counter() - self._start


def _time_trainer(trainer: Trainer, timer: _BlockTimer, steps: int) -> float:
    """Seconds for `steps` steps of train_cls's own loop (the engine's Trainer, hooks and all)."""
    trainer.max_iter = steps
    trainer.train()
    return timer.seconds


def _time_loop(step: Callable[[], None], device: torch.device, steps: int) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - start


def _alternate(ours: Callable[[int], float], reference: Callable[[int], float], device: torch.device, warmup: int,
               iters: int, rounds: int) -> Tuple[float, float, Optional[float], Optional[float]]:
    """Steps/s of both (median over `rounds` blocks of `iters` steps, alternating, so that a change in
    machine load hits both alike) and their peak memory (GiB) in the warm-up block."""
    peaks = []
    for fn in (ours, reference):
        peak_memory_mib(device)
        fn(max(warmup, 1))
        mib = peak_memory_mib(device)
        peaks.append(mib / 1024 if mib is not None else None)
    rates: Dict[str, List[float]] = {"ours": [], "reference": []}
    for _ in range(rounds):
        rates["ours"].append(iters / ours(iters))
        rates["reference"].append(iters / reference(iters))
    return statistics.median(rates["ours"]), statistics.median(rates["reference"]), peaks[0], peaks[1]


def resnet50_rows(args, device: torch.device, log: Callable[[str], None]) -> List[Dict[str, Any]]:
    import torchvision

    from resdet.classification.model import build_classifier
    from resdet.engine.build import prepare_model
    from resdet.engine.schedules import build_optimizer
    from resdet.runs.train_cls import ClassificationLoss

    from resdet.benchmarks.photos import photo_batch

    b, s = args.cls_batch, args.cls_size
    cfg = load_config(os.path.join(_CONFIGS, "imagenet_r50.yaml"),
                      ["MODEL.DEVICE", str(device), "MODEL.BACKBONE.VARIANT", "v1.5", "SOLVER.IMS_PER_BATCH", b,
                       "CLS.INPUT.CROP_SIZE", s])
    amp, channels_last = cfg.SOLVER.AMP, cfg.SOLVER.CHANNELS_LAST  # bf16, channels_last: the config's choice
    dtype = {"": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    # fixed shapes: what CUDNN_BENCHMARK is for; the same setting for both models
    torch.backends.cudnn.benchmark = device.type == "cuda"
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = photo_batch(b, s, s).to(device).float().contiguous(memory_format=memory_format)
    labels = torch.randint(0, 1000, (b,), generator=torch.Generator().manual_seed(0)).to(device)

    ours = prepare_model(build_classifier(cfg), cfg, device)
    timer = _BlockTimer(device)
    trainer = Trainer(ours, build_optimizer(cfg, ours), itertools.repeat((images, labels)), max_iter=1,
                      loss_fn=ClassificationLoss(**ClassificationLoss.from_config(cfg)), amp=amp,
                      channels_last=channels_last, device=device, hooks=[timer])

    tv = torchvision.models.resnet50().to(device).to(memory_format=memory_format)
    tv_opt = torch.optim.SGD(tv.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, device=device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD, device=device).view(1, -1, 1, 1)
    tv_images = ((images - mean) / std).contiguous(memory_format=memory_format)

    def tv_step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(tv(tv_images).float(), labels)
        tv_opt.zero_grad(set_to_none=True)
        loss.backward()
        tv_opt.step()

    ours_rate, tv_rate, ours_peak, tv_peak = _alternate(
        lambda n: _time_trainer(trainer, timer, n), lambda n: _time_loop(tv_step, device, n), device,
        args.warmup, args.iters, args.rounds)
    precision = (amp or "fp32") + ("+channels_last" if channels_last else "")
    rows = [_row("resnet50", "ResNet-50 (v1.5) classification", "train", precision, b, f"{s}x{s}", "img/s",
                 ours_rate * b, tv_rate * b, "torchvision resnet50 (bare loop)", ours_peak, tv_peak)]
    log(_line(rows[-1]))
    torch.backends.cudnn.benchmark = False
    return rows


def cifar_rows(args, device: torch.device, log: Callable[[str], None]) -> List[Dict[str, Any]]:
    from torchvision.transforms import v2

    from resdet.classification.model import build_classifier
    from resdet.data.folders import DeviceBatches, mean_image
    from resdet.data.samplers import InfiniteSampler
    from resdet.engine.build import prepare_model
    from resdet.engine.schedules import build_lr_scheduler, build_optimizer
    from resdet.runs.train_cls import ClassificationLoss

    from resdet.benchmarks.photos import photo_batch

    b, n = args.cifar_batch, args.cifar_images
    cfg = load_config(os.path.join(_CONFIGS, "cifar10_resnet20.yaml"),
                      ["MODEL.DEVICE", str(device), "SOLVER.IMS_PER_BATCH", b])
    torch.backends.cudnn.benchmark = device.type == "cuda"  # 32x32 crops of a fixed batch: fixed shapes
    torch.manual_seed(0)
    images = photo_batch(n, 32, 32, seed=1).to(device)  # CIFAR-sized crops of photographs, on the device
    labels = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(0)).to(device)
    mean = mean_image(images)

    def classifier():
        m = build_classifier(cfg)
        m.set_mean_image(mean)
        return prepare_model(m, cfg, device)

    # ours: train_cls's recipe step (configs/cifar10_resnet20.yaml: its optimizer, lr schedule, precision
    # and layout), fed by the on-device pad-crop-flip batches
    ours = classifier()
    batches = DeviceBatches(images, labels, b, InfiniteSampler(n, seed=cfg.SEED), pad=cfg.CLS.INPUT.PAD,
                            crop=cfg.CLS.INPUT.CROP_SIZE, hflip=cfg.CLS.INPUT.HFLIP, pad_value=mean, seed=cfg.SEED)
    optimizer = build_optimizer(cfg, ours)
    timer = _BlockTimer(device)
    trainer = Trainer(ours, optimizer, batches, max_iter=1, scheduler=build_lr_scheduler(cfg, optimizer),
                      loss_fn=ClassificationLoss(**ClassificationLoss.from_config(cfg)), amp=cfg.SOLVER.AMP,
                      channels_last=cfg.SOLVER.CHANNELS_LAST, device=device, hooks=[timer])

    # the reference: the same network in a bare eager loop
    bare = classifier()
    bare_opt = torch.optim.SGD(bare.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    augment = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])

    def bare_step():
        idx = torch.randint(0, n, (b,), device=device)
        loss = F.cross_entropy(bare(augment(images[idx].float())), labels[idx])
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()

    ours_rate, bare_rate, ours_peak, bare_peak = _alternate(
        lambda k: _time_trainer(trainer, timer, k), lambda k: _time_loop(bare_step, device, k), device,
        args.warmup, args.cifar_iters, args.rounds)
    precision = (cfg.SOLVER.AMP or ("tf32" if device.type == "cuda" else "fp32")) + \
        ("+channels_last" if cfg.SOLVER.CHANNELS_LAST else "")
    reference = "the same network, bare eager loop"
    rows = [_row("cifar", "CIFAR-10 ResNet-20 recipe", "train (eager step)", precision, b, "32x32", "it/s",
                 ours_rate, bare_rate, reference, ours_peak, bare_peak)]
    log(_line(rows[-1]))
    rows += _fast_cifar_rows(device, b, args.cifar_iters, bare_rate, reference, log)
    torch.backends.cudnn.benchmark = False
    return rows


def _fast_cifar_rows(device, batch: int, iters: int, bare_rate: float, reference: str, log) -> List[Dict[str, Any]]:
    """HOOK for the lead: the "fast step" row (a compiled / CUDA-graph CIFAR step, engineer h13cifar's
    resdet/benchmarks/cifar.py). Its announced interface is `cifar_step_rates(device, depth=20,
    iters=..., batch=128) -> [{"mode": ..., "it_per_s": ...}, ...]`; every row other than "eager" becomes
    a row here, with its ratio to the same bare loop. Until it is merged this part says it is missing."""
    try:
        from resdet.benchmarks.cifar import cifar_step_rates  # (not in this checkout yet)
    except ImportError:
        log("  cifar fast step: resdet/benchmarks/cifar.py is not in this checkout (row left out)")
        return []
    rows = []
    for r in cifar_step_rates(str(device), depth=20, iters=iters, batch=batch):
        if r.get("mode") == "eager":
            continue
        rows.append(_row("cifar", "CIFAR-10 ResNet-20 recipe", f"train ({r['mode']} step)", r.get("precision", ""),
                         batch, "32x32", "it/s", r["it_per_s"], bare_rate, reference))
        log(_line(rows[-1]))
    return rows


def counts_rows(args, device: torch.device, log: Callable[[str], None]) -> List[Dict[str, Any]]:
    """Host reads (stream syncs on a GPU) and aten ops (kernel launches) per training step and per inference
    call, ours vs torchvision's, at batch 1 and --det-batch (resdet/benchmarks/counts.py: the real
    Trainer step with the optimizer train_det builds, the CUDA NMS branch). Here the ratio is a count
    ratio: below 1, resdet reads and launches less."""
    from resdet.benchmarks.counts import count_rows

    h, w = args.det_size
    amp = "fp16" if device.type == "cuda" else ""
    rows = []
    for arch in args.archs:
        counted = count_rows(arch, h, w, batches=sorted({1, args.det_batch}), device=str(device), amp=amp,
                             boxes_per_image=args.boxes)
        by = {(r["mode"], r["batch"], r["model"]): r for r in counted}
        for (mode, batch, model), r in by.items():
            t = by.get((mode, batch, "torchvision"))
            if model != "resdet" or t is None:
                continue
            name = "Mask R-CNN R50-FPN" if arch == "maskrcnn" else "Faster R-CNN R50-FPN"
            for unit, key in (("host reads", "host_reads"), ("aten ops", "aten_ops")):
                rows.append(_row("counts", name, "train step" if mode == "train" else "inference", amp or "fp32",
                                 batch, f"{h}x{w}", unit, r[key], t[key], "torchvision (count; lower is better)"))
                log(_line(rows[-1]))
    return rows


def cascade_rows(args, device: torch.device, log: Callable[[str], None]) -> List[Dict[str, Any]]:
    """Cascade Mask R-CNN against resdet's Mask R-CNN, training and inference img/s (benchmarks/cascade.py)."""
    from resdet.benchmarks.cascade import suite_rows

    return suite_rows(args, device, log, _row)


_PART_FUNCTIONS = {"detection": detection_rows, "resnet50": resnet50_rows, "cifar": cifar_rows, "counts": counts_rows,
                   "cascade": cascade_rows}


# ---------------------------------------------------------------------------------------------------
# the run and its reports
# ---------------------------------------------------------------------------------------------------
def _fmt(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _line(r: Dict[str, Any]) -> str:
    return (f"  {r['model']} {r['mode']} {r['precision']}: resdet {_fmt(r['resdet'])} {r['unit']}, "
            f"{r['reference_name']} {_fmt(r['reference'])} {r['unit']}, ratio {_fmt(r['ratio'])}x")


def format_markdown(report: Dict[str, Any]) -> str:
    lines = [f"# resdet GPU acceptance benchmark ({report['device_name']})", "",
             f"torch {report['torch']}, torchvision {report['torchvision']}, {report['started']}, "
             f"{report['seconds']:.0f} s in all. ratio = resdet / reference, measured in the same run on the same "
             "inputs: above 1, resdet is faster. Peak memory: the most tensor memory one step (a warm-up step) held.",
             "",
             "| part | model | mode | precision | batch | size | resdet | reference | ratio | peak GiB resdet / ref | reference is |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['part']} | {r['model']} | {r['mode']} | {r['precision']} | {r['batch']} | {r['size']} | "
                     f"{_fmt(r['resdet'])} {r['unit']} | {_fmt(r['reference'])} {r['unit']} | "
                     f"**{_fmt(r['ratio'])}x** | {_fmt(r['resdet_peak_gib'], 1)} / {_fmt(r['reference_peak_gib'], 1)} | "
                     f"{r['reference_name']} |")
    for s in report["skipped"]:
        lines.append(f"\nSkipped: {s['part']} ({s['reason']})")
    return "\n".join(lines) + "\n"


def run_suite(args, log: Callable[[str], None] = print) -> Dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device} was asked for but no GPU is visible; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    started, clock = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter()
    # TF32 matmuls and convolutions for every float32 row (the default SOLVER.ALLOW_TF32 of a run)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    rows: List[Dict[str, Any]] = []
    skipped: List[Dict[str, str]] = []
    for part in args.parts:
        spent = time.perf_counter() - clock
        if spent > args.max_minutes * 60:
            skipped.append({"part": part, "reason": f"--max-minutes {args.max_minutes} spent ({spent:.0f} s)"})
            log(f"[{part}] skipped: {skipped[-1]['reason']}")
            continue
        log(f"[{part}] ({spent:.0f} s so far)")
        with (torch.cuda.device(device) if device.type == "cuda" else _nothing()):
            rows += _PART_FUNCTIONS[part](args, device, log)
    report = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "torchvision": _torchvision_version(), "started": started,
        "seconds": time.perf_counter() - clock,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
        "rows": rows, "skipped": skipped,
    }
    os.makedirs(args.output, exist_ok=True)
    atomic_write_text(json.dumps(report, indent=1) + "\n", os.path.join(args.output, "benchmark.json"))
    atomic_write_text(format_markdown(report), os.path.join(args.output, "benchmark.md"))
    return report


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _torchvision_version() -> str:
    import torchvision

    return torchvision.__version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/benchmark.py --suite gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=["gpu"], required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", default="output/benchmark", help="folder for benchmark.json and benchmark.md")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--archs", nargs="+", choices=["fasterrcnn", "maskrcnn"], default=["fasterrcnn", "maskrcnn"])
    p.add_argument("--det-size", type=image_size, default=(800, 1216), help="detection input, N or HxW")
    p.add_argument("--det-batch", type=int, default=8)
    p.add_argument("--boxes", type=int, default=7, help="ground-truth boxes (and masks) per training image")
    p.add_argument("--cls-size", type=int, default=224)
    p.add_argument("--cls-batch", type=int, default=256)
    p.add_argument("--cifar-batch", type=int, default=128)
    p.add_argument("--cifar-images", type=int, default=10000, help="CIFAR-sized photographs held on the device")
    p.add_argument("--iters", type=int, default=10, help="timed steps per measurement (detection, ResNet-50)")
    p.add_argument("--cifar-iters", type=int, default=None, help="timed CIFAR steps per block (default: 20 x --iters)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="alternating timed blocks for the classification parts")
    p.add_argument("--max-minutes", type=float, default=8.0, help="parts that would start later are skipped")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.cifar_iters is None:
        args.cifar_iters = 20 * args.iters
    for name in ("det_batch", "cls_batch", "cifar_batch", "cifar_images", "iters", "cifar_iters", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    report = run_suite(args)
    print(format_markdown(report))
    print(f"Saved {os.path.join(args.output, 'benchmark.json')} and benchmark.md")
    return 0
