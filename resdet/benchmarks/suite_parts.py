"""The measurements of `tools/benchmark.py --suite gpu`, one function per part, each run by the driver
(suite.py) in a process of its own: `python -m resdet.benchmarks.suite_parts --part NAME ...` (the suite's
own options plus --rows-file and --deadline). Every row is appended to the rows file as one JSON line
the moment it is measured; an exception becomes a last line {"error": ..., "traceback": ...}. Between
measurements a part checks its deadline (what --max-minutes leaves it) and writes "skipped" rows for
what it no longer starts; the driver's hard limit per part stops the rest.

Every row times ours and a reference on the same inputs in the same run and gives ratio = ours /
reference (above 1: ours is faster; for counts, below 1: ours syncs and launches less). Peak memory:
one step of each model, measured after both have warmed up, as the memory the step added to what was
allocated before it plus the model's own weights and optimizer state (detection.step_peak_gib).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from resdet.config import load_config
from resdet.engine.trainer import HookBase, Trainer
from resdet.runs.cli import image_size

__all__ = ["PARTS", "PART_MINUTES", "PART_FUNCTIONS", "build_parser", "status_row", "out_of_time", "detection_rows",
           "resnet50_rows", "cifar_rows", "counts_rows", "nms_rows", "run_part"]

_CONFIGS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "configs"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _row(part: str, model: str, mode: str, precision: str, batch: int, size: str, unit: str, ours: float,
         reference: float, reference_name: str, ours_peak_gib: Optional[float] = None,
         reference_peak_gib: Optional[float] = None, **extra: Any) -> Dict[str, Any]:
    return dict(part=part, model=model, mode=mode, precision=precision, batch=batch, size=size, unit=unit,
                resdet=ours, reference=reference, ratio=ours / reference if reference else None,
                reference_name=reference_name, resdet_peak_gib=ours_peak_gib,
                reference_peak_gib=reference_peak_gib, status="ok", **extra)


def status_row(part: str, status: str, reason: str, model: str = "-", mode: str = "-") -> Dict[str, Any]:
    """A row for what was not measured: status "failed", "timed out" or "skipped", and why."""
    return dict(part=part, model=model, mode=mode, precision="-", batch=None, size="-", unit="", resdet=None,
                reference=None, ratio=None, reference_name="-", resdet_peak_gib=None, reference_peak_gib=None,
                status=status, reason=reason)


def out_of_time(args) -> bool:
    """The part's soft deadline (--max-minutes of the whole run) has passed: stop between measurements."""
    deadline = getattr(args, "deadline", None)
    return deadline is not None and time.time() >= deadline


def _skip_rest(part: str, what: str, emit) -> None:
    emit(status_row(part, "skipped", "--max-minutes spent before this measurement", model=what))


# ---------------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------------
def detection_rows(args, device: torch.device, log: Callable[[str], None], emit: Callable = None) -> List[Dict[str, Any]]:
    from resdet.benchmarks.detection import build_pair, time_models

    emit = emit or (lambda row: None)

    h, w = args.det_size
    cuda = device.type == "cuda"
    # TF32 for the fp32 row (what SOLVER.ALLOW_TF32 gives a run); the AMP row autocasts on top of it
    precisions = [("tf32", ""), ("fp16", "fp16")] if cuda else [("fp32", ""), ("bf16", "bf16")]
    precisions = {"both": precisions, "fp32": precisions[:1], "amp": precisions[1:]}[getattr(args, "det_precisions", "both")]
    torch.backends.cudnn.benchmark = False  # detection shapes change every step (runs/train_det.py says why)
    rows = []
    for arch in args.archs:
        name = {"maskrcnn": "Mask R-CNN R50-FPN", "fasterrcnn": "Faster R-CNN R50-FPN"}[arch]
        if out_of_time(args):
            _skip_rest("detection", name, emit)
            continue
        pair = build_pair(arch, h, w, device=str(device))
        for label, amp in precisions:
            if out_of_time(args):
                _skip_rest("detection", f"{name} ({label})", emit)
                continue
            raw = time_models(arch, h, w, args.det_batch, args.iters, args.warmup, str(device), amp,
                              boxes_per_image=args.boxes, pair=pair)
            by = {(r["model"], r["mode"]): r for r in raw}
            for mode in ("train", "infer"):
                ours, tv = by[("resdet", mode)], by[("torchvision", mode)]
                rows.append(_row("detection", name, mode, label, args.det_batch, f"{h}x{w}", "img/s",
                                 ours["img_per_s"], tv["img_per_s"], f"torchvision {arch}_resnet50_fpn",
                                 ours["peak_mem_gib"], tv["peak_mem_gib"],
                                 dets_per_image=[ours["dets_per_image"], tv["dets_per_image"]]))
                emit(rows[-1])
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


def _bare_sgd_step(model: torch.nn.Module, loss_of_batch: Callable[[], torch.Tensor]):
    """The reference side of a classification row: a bare eager step (SGD, momentum 0.9, weight decay 1e-4)
    on `loss_of_batch()`. Returns (step, optimizer)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step():
        loss = loss_of_batch()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, optimizer


def _alternate(ours: Callable[[int], float], reference: Callable[[int], float], device: torch.device, warmup: int,
               iters: int, rounds: int, resident: Tuple[Callable[[], int], Callable[[], int]] = None
               ) -> Tuple[float, float, Optional[float], Optional[float]]:
    """Steps/s of both (median over `rounds` blocks of `iters` steps, alternating, so that a change in
    machine load hits both alike) and their peak memory (GiB, detection.step_peak_gib: one step measured
    after both have warmed up, so neither pays for the other's first-use allocations)."""
    from resdet.benchmarks.detection import step_peak_gib

    for fn in (ours, reference):
        fn(max(warmup, 1))
    resident = resident or (lambda: 0, lambda: 0)
    peaks = [step_peak_gib(device, lambda fn=fn: fn(1), own()) for fn, own in zip((ours, reference), resident)]
    rates: Dict[str, List[float]] = {"ours": [], "reference": []}
    for _ in range(rounds):
        rates["ours"].append(iters / ours(iters))
        rates["reference"].append(iters / reference(iters))
    return statistics.median(rates["ours"]), statistics.median(rates["reference"]), peaks[0], peaks[1]


def resnet50_rows(args, device: torch.device, log: Callable[[str], None], emit: Callable = None) -> List[Dict[str, Any]]:
    import torchvision

    from resdet.benchmarks.detection import resident_bytes

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
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, device=device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD, device=device).view(1, -1, 1, 1)
    tv_images = ((images - mean) / std).contiguous(memory_format=memory_format)

    def tv_loss():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return F.cross_entropy(tv(tv_images).float(), labels)

    tv_step, tv_opt = _bare_sgd_step(tv, tv_loss)

    ours_rate, tv_rate, ours_peak, tv_peak = _alternate(
        lambda n: _time_trainer(trainer, timer, n), lambda n: _time_loop(tv_step, device, n), device,
        args.warmup, args.iters, args.rounds,
        resident=(lambda: resident_bytes(ours, trainer.optimizer), lambda: resident_bytes(tv, tv_opt)))
    precision = (amp or "fp32") + ("+channels_last" if channels_last else "")
    rows = [_row("resnet50", "ResNet-50 (v1.5) classification", "train", precision, b, f"{s}x{s}", "img/s",
                 ours_rate * b, tv_rate * b, "torchvision resnet50 (bare loop)", ours_peak, tv_peak)]
    if emit:
        emit(rows[-1])
    log(_line(rows[-1]))
    torch.backends.cudnn.benchmark = False
    return rows


def cifar_rows(args, device: torch.device, log: Callable[[str], None], emit: Callable = None) -> List[Dict[str, Any]]:
    from torchvision.transforms import v2

    from resdet.benchmarks.detection import resident_bytes

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
    augment = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])

    def bare_loss():
        idx = torch.randint(0, n, (b,), device=device)
        return F.cross_entropy(bare(augment(images[idx].float())), labels[idx])

    bare_step, bare_opt = _bare_sgd_step(bare, bare_loss)

    ours_rate, bare_rate, ours_peak, bare_peak = _alternate(
        lambda k: _time_trainer(trainer, timer, k), lambda k: _time_loop(bare_step, device, k), device,
        args.warmup, args.cifar_iters, args.rounds,
        resident=(lambda: resident_bytes(ours, optimizer), lambda: resident_bytes(bare, bare_opt)))
    precision = (cfg.SOLVER.AMP or ("tf32" if device.type == "cuda" else "fp32")) + \
        ("+channels_last" if cfg.SOLVER.CHANNELS_LAST else "")
    reference = "the same network, bare eager loop"
    rows = [_row("cifar", "CIFAR-10 ResNet-20 recipe", "train (eager step)", precision, b, "32x32", "it/s",
                 ours_rate, bare_rate, reference, ours_peak, bare_peak)]
    emit = emit or (lambda row: None)
    emit(rows[-1])
    log(_line(rows[-1]))
    if out_of_time(args):
        _skip_rest("cifar", "CIFAR-10 ResNet-20 recipe (fast steps)", emit)
        return rows
    rows += _fast_cifar_rows(device, b, args.cifar_iters, bare_rate, reference, log, emit)
    torch.backends.cudnn.benchmark = False
    return rows


def _fast_cifar_rows(device, batch: int, iters: int, bare_rate: float, reference: str, log,
                     emit: Callable) -> List[Dict[str, Any]]:
    """The "fast step" rows (compiled / CUDA-graph CIFAR steps: resdet/benchmarks/cifar.py's
    cifar_step_rates): every mode other than "eager" becomes a row, with its ratio to the same bare loop.
    On a CPU only the eager mode runs there, so no row."""
    from resdet.benchmarks.cifar import cifar_step_rates

    rows = []
    for r in cifar_step_rates(str(device), depth=20, iters=iters, batch=batch):
        if r.get("mode") == "eager":
            continue
        rows.append(_row("cifar", "CIFAR-10 ResNet-20 recipe", f"train ({r['mode']} step)", r.get("precision", ""),
                         batch, "32x32", "it/s", r["it_per_s"], bare_rate, reference))
        emit(rows[-1])
        log(_line(rows[-1]))
    return rows


def counts_rows(args, device: torch.device, log: Callable[[str], None], emit: Callable = None) -> List[Dict[str, Any]]:
    """Synchronisations (host reads, blocking host-to-device copies, NMS calls: each a stream sync on a
    GPU) and aten ops (kernel launches) per training step and per inference call, ours vs torchvision's,
    at batch 1 and --det-batch (resdet/benchmarks/counts.py: the real Trainer step with the optimizer
    train_det builds, the CUDA NMS branch). Here the ratio is a count ratio: below 1, resdet syncs and
    launches less. Rows are written batch by batch."""
    from resdet.benchmarks.counts import count_rows

    emit = emit or (lambda row: None)
    h, w = args.det_size
    amp = "fp16" if device.type == "cuda" else ""
    rows = []
    for arch in args.archs:
        name = "Mask R-CNN R50-FPN" if arch == "maskrcnn" else "Faster R-CNN R50-FPN"
        for batch in sorted({1, args.det_batch}):
            if out_of_time(args):
                _skip_rest("counts", f"{name} batch {batch}", emit)
                continue
            counted = count_rows(arch, h, w, batches=(batch,), device=str(device), amp=amp,
                                 boxes_per_image=args.boxes)
            by = {(r["mode"], r["model"]): r for r in counted}
            for (mode, model), r in by.items():
                t = by.get((mode, "torchvision"))
                if model != "resdet" or t is None:
                    continue
                for unit, key in (("syncs", "syncs"), ("aten ops", "aten_ops")):
                    extra = {k: [r[k], t[k]] for k in ("host_reads", "h2d_copies", "nms_calls")} if key == "syncs" else {}
                    rows.append(_row("counts", name, "train step" if mode == "train" else "inference", amp or "fp32",
                                     batch, f"{h}x{w}", unit, r[key], t[key], "torchvision (count; lower is better)",
                                     **extra))
                    emit(rows[-1])
                    log(_line(rows[-1]))
    return rows



def nms_rows(args, device: torch.device, log: Callable[[str], None], emit: Callable = None) -> List[Dict[str, Any]]:
    """Grouped NMS on the boxes the torchvision preset's Mask R-CNN sends it at --det-batch and --det-size
    (resdet/benchmarks/nms.py): the RPN's call in training (default top-k 2000 per level) and the box
    head's at inference; ours batched (the GPU default: one declared read, no torchvision call) against
    one torchvision call per group (the CPU default: one sync per group on CUDA), and against
    torchvision's batched_nms (a speed reference: one call over groups shifted apart in float32, not
    exact, or for more than 1,000 boxes on a CPU / 5,000 on CUDA a call per group). Which branch CUDA
    should take by default is this part's question."""
    from resdet.benchmarks.detection import build_pair, synthetic_batch
    from resdet.benchmarks.nms import capture_nms_inputs, time_nms_branches

    emit = emit or (lambda row: None)
    h, w = args.det_size
    b = args.det_batch
    ours, _ = build_pair("maskrcnn", h, w, device=str(device))
    images, targets = synthetic_batch(b, h, w, args.boxes, 91, True, str(device))
    captured = capture_nms_inputs(ours, images, targets)
    del ours
    rows = []
    for site, (boxes, scores, groups, thr, sizes) in captured.items():
        if out_of_time(args):
            _skip_rest("nms", f"NMS: {site}", emit)
            continue
        t = time_nms_branches(boxes, scores, groups, thr, sizes, iters=args.iters, rounds=args.rounds)
        what = f"NMS: {'RPN proposals (train)' if site == 'rpn' else 'box head (inference)'}, {len(boxes)} boxes in " \
               f"{len(sizes)} groups"
        for ref, name in (("per group", "ours per group (a torchvision nms per group)"),
                          ("torchvision batched_nms", "torchvision batched_nms (its choice: one call with float32 "
                                                      "offsets, or a call per group above 1k boxes on a CPU / 5k on CUDA)")):
            rows.append(_row("nms", what, "batched (GPU default)", "fp32", b, f"{h}x{w}", "calls/s", 1 / t["batched"],
                             1 / t[ref], name))
            emit(rows[-1])
            log(_line(rows[-1]))
    return rows


def cascade_rows(args, device: torch.device, log: Callable[[str], None], emit: Callable = None) -> List[Dict[str, Any]]:
    """Cascade Mask R-CNN R50-FPN against resdet's Mask R-CNN R50-FPN (torchvision has no cascade): training
    and inference images/s at --det-size and --det-batch, AMP fp16 on CUDA (benchmarks/cascade.py)."""
    from resdet.benchmarks.cascade import suite_rows

    emit = emit or (lambda row: None)
    if out_of_time(args):
        _skip_rest("cascade", "Cascade Mask R-CNN R50-FPN", emit)
        return []
    rows = suite_rows(args, device, log, _row)
    for r in rows:
        emit(r)
    return rows


PARTS = ("detection", "resnet50", "cifar", "counts", "nms", "cascade")
# each part's time limit on one H100/H200 (minutes): about twice what it is expected to take there
PART_MINUTES = {"detection": 5.0, "resnet50": 2.0, "cifar": 3.0, "counts": 3.0, "nms": 1.5, "cascade": 2.0}
PART_FUNCTIONS = {"detection": detection_rows, "resnet50": resnet50_rows, "cifar": cifar_rows, "counts": counts_rows,
                  "nms": nms_rows, "cascade": cascade_rows}


def _fmt(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _line(r: Dict[str, Any]) -> str:
    return (f"  {r['model']} {r['mode']} {r['precision']}: resdet {_fmt(r['resdet'])} {r['unit']}, "
            f"{r['reference_name']} {_fmt(r['reference'])} {r['unit']}, ratio {_fmt(r['ratio'])}x")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/benchmark.py --suite gpu", description=_SUITE_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=["gpu"], required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", default="output/benchmark", help="folder for benchmark.json, benchmark.md, logs/")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--archs", nargs="+", choices=["fasterrcnn", "maskrcnn"], default=["fasterrcnn", "maskrcnn"])
    p.add_argument("--det-size", type=image_size, default=(800, 1216), help="detection input, N or HxW")
    p.add_argument("--det-batch", type=int, default=8)
    p.add_argument("--det-precisions", choices=["both", "fp32", "amp"], default="both",
                   help="detection rows: float32 (TF32 on CUDA), AMP (fp16 on CUDA, bf16 on a CPU), or both")
    p.add_argument("--boxes", type=int, default=7, help="ground-truth boxes (and masks) per training image")
    p.add_argument("--cls-size", type=int, default=224)
    p.add_argument("--cls-batch", type=int, default=256)
    p.add_argument("--cifar-batch", type=int, default=128)
    p.add_argument("--cifar-images", type=int, default=10000, help="CIFAR-sized photographs held on the device")
    p.add_argument("--iters", type=int, default=10, help="timed steps per measurement (detection, ResNet-50)")
    p.add_argument("--cifar-iters", type=int, default=None, help="timed CIFAR steps per block (default: 20 x --iters)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="alternating timed blocks for the classification parts")
    p.add_argument("--max-minutes", type=float, default=10.0,
                   help="the whole run: parts stop starting measurements after it, and later parts are skipped")
    p.add_argument("--part-minutes", nargs="+", metavar="PART=MIN",
                   help=f"time limits of parts, overriding the defaults {PART_MINUTES}; a part past its limit "
                        "is stopped and reported as timed out")
    p.add_argument("--grace-seconds", type=float, default=30.0,
                   help="a part may overrun what --max-minutes leaves by this much before it is stopped")
    return p


def run_part(argv=None) -> int:
    """The child process: one part, its rows appended to --rows-file as they come (see the docstring)."""
    p = build_parser()
    p.add_argument("--part", choices=sorted(PART_FUNCTIONS), required=True)
    p.add_argument("--rows-file", required=True)
    p.add_argument("--deadline", type=float, default=None, help="epoch seconds: start no measurement after it")
    args = p.parse_args(argv)
    if args.cifar_iters is None:
        args.cifar_iters = 20 * args.iters
    out = open(args.rows_file, "a", encoding="utf-8")

    def write(obj) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    try:
        device = torch.device(args.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        write({"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
               else "cpu", "torch": torch.__version__})
        # TF32 matmuls and convolutions for every float32 row (the default SOLVER.ALLOW_TF32 of a run)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        with (torch.cuda.device(device) if device.type == "cuda" else _nothing()):
            PART_FUNCTIONS[args.part](args, device, lambda line: print(line, flush=True),
                                      lambda row: write({"row": row}))
    except BaseException as e:  # noqa: B902 -- every failure becomes the part's last line
        write({"error": f"{type(e).__name__}: {e}".strip(), "traceback": traceback.format_exc()[-4000:]})
        traceback.print_exc()
        return 1
    finally:
        out.close()
    return 0


_SUITE_DOC = "the GPU acceptance benchmark: see resdet/benchmarks/suite.py"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    sys.exit(run_part())
