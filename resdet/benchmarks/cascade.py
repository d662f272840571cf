"""Cascade Mask R-CNN against resdet's standard Mask R-CNN: training and inference images/s, host reads and
aten ops, same backbone/FPN/RPN/mask-head weights, same photographs and targets, same process.

torchvision has no cascade, so the reference is our own Mask R-CNN R50-FPN (configs/coco_r50.yaml vs
configs/coco_r50_cascade.yaml, random weights, the shared parts copied): the ratio says what the two extra
stages cost (below 1: the cascade is slower, reads more, launches more).

    python tools/benchmark.py --arch cascade --device cuda --size 800x1216 --batch 8 --iters 10
    python tools/benchmark.py --counts --arch cascade --size 192x256 --count-batches 1 8
    python tools/benchmark.py --suite gpu --parts cascade      # its row of the GPU suite
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from resdet.config import load_config
from resdet.detection.nms import force_packed_nms
from resdet.detection.rcnn import build_detection_model

from .counts import count_inference, count_training_step
from .detection import _make_steps, _sync, synthetic_batch

__all__ = ["build_cascade_pair", "time_cascade", "cascade_count_rows", "format_cascade_rows", "main_cascade_counts"]

_CONFIGS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "configs"))
MODELS = ("cascade", "standard")


def build_cascade_pair(num_classes: int = 81, device: str = "cpu", shrink: Optional[Dict[str, int]] = None,
                       overrides: Sequence = ()):
    """{"cascade": ..., "standard": ...}: Cascade and standard Mask R-CNN R50-FPN (Detectron2's 1x configs,
    random weights, score threshold 0 so that inference returns its full 100 detections), sharing every
    weight they have in common. `num_classes` includes the background. `shrink`: smaller RPN top-k and RoI
    samples for both (pre_nms_topk, post_nms_topk, roi_batch), for short CPU runs; `overrides`: more KEY
    VALUE pairs for both (the tests' narrow models)."""
    common = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.WEIGHTS", "", "MODEL.ROI_HEADS.NUM_CLASSES", num_classes - 1,
              "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, *overrides]
    if shrink:
        common += ["MODEL.RPN.PRE_NMS_TOPK_TRAIN", shrink["pre_nms_topk"], "MODEL.RPN.PRE_NMS_TOPK_TEST",
                   shrink["pre_nms_topk"], "MODEL.RPN.POST_NMS_TOPK_TEST", shrink["post_nms_topk"],
                   "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", shrink["roi_batch"]]
    models = {}
    for name, config in (("standard", "coco_r50.yaml"), ("cascade", "coco_r50_cascade.yaml")):
        extra = ["MODEL.RPN.POST_NMS_TOPK_TRAIN", shrink["post_nms_topk"]] if shrink else []
        torch.manual_seed(0)
        models[name] = build_detection_model(load_config(os.path.join(_CONFIGS, config), common + extra))
    shared = {k: v for k, v in models["standard"].state_dict().items()
              if not k.startswith(("roi_heads.box_head.", "roi_heads.box_predictor."))}
    missing, unexpected = models["cascade"].load_state_dict(shared, strict=False)
    assert not unexpected and all(k.startswith(("roi_heads.box_heads.", "roi_heads.box_predictors.")) for k in missing)
    return {name: m.to(device) for name, m in models.items()}


def time_cascade(height: int, width: int, batch: int, iters: int, warmup: int = 1, device: str = "cpu",
                 amp: str = "", boxes_per_image: int = 7, num_classes: int = 81, progress=None,
                 models=None) -> List[Dict[str, object]]:
    """Rows {model, mode, img_per_s, s_per_iter, dets_per_image, peak_mem_gib} for the cascade and the
    standard heads: medians over `iters` steps, the two models alternating step by step (a load change on a
    shared machine hits both alike); each step as detection.time_models times it (forward, backward, SGD)."""
    from resdet.utils.env import peak_memory_mib

    models = models or build_cascade_pair(num_classes, device)
    images, targets = synthetic_batch(batch, height, width, boxes_per_image, num_classes, True, device)
    dtype = {"": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    dets = {name: [] for name in models}
    steps = {name: _make_steps(m, images, targets, dtype, dev_type, dets[name]) for name, m in models.items()}
    rows = []
    for mode in ("train", "infer"):
        elapsed, peak = {name: [] for name in models}, {}
        for name, model in models.items():
            model.train(mode == "train")
            peak_memory_mib(device)
            for _ in range(max(warmup, 1)):
                steps[name][mode]()
            _sync(device)
            mib = peak_memory_mib(device)
            peak[name] = mib / 1024 if mib is not None else None
        for _ in range(iters):
            for name in models:
                torch.manual_seed(0)
                _sync(device)
                start = time.perf_counter()
                steps[name][mode]()
                _sync(device)
                elapsed[name].append(time.perf_counter() - start)
        for name in models:
            sec = statistics.median(elapsed[name])
            row = {"arch": "cascade", "model": name, "mode": mode, "batch": batch, "size": f"{height}x{width}",
                   "amp": amp or "fp32", "s_per_iter": sec, "img_per_s": batch / sec,
                   "dets_per_image": dets[name][-1] if mode == "infer" else None, "peak_mem_gib": peak[name]}
            rows.append(row)
            if progress:
                progress(row)
    return rows


def cascade_count_rows(height: int, width: int, batches: Sequence[int] = (1, 8), device: str = "cpu",
                       amp: str = "", boxes_per_image: int = 7, num_classes: int = 81,
                       modes: Sequence[str] = ("infer", "train"), progress=None,
                       shrink: Optional[Dict[str, int]] = None, overrides: Sequence = ()) -> List[Dict[str, object]]:
    """Host reads and aten ops of one training step (Trainer.run_step with the optimizer train_det builds)
    and one inference call of each, the CUDA NMS branch forced (as counts.count_rows)."""
    from resdet.engine.schedules import build_lr_scheduler, build_optimizer

    cfg = load_config(os.path.join(_CONFIGS, "coco_r50.yaml"), ["SOLVER.BASE_LR", 1e-6])
    rows = []
    with force_packed_nms(True):
        for batch in batches:
            given = {k: v for k, v in (("shrink", shrink), ("overrides", tuple(overrides))) if v}
            models = build_cascade_pair(num_classes, device, **given)
            images, targets = synthetic_batch(batch, height, width, boxes_per_image, num_classes, True, device)
            for mode in modes:
                for name, model in models.items():
                    torch.manual_seed(0)
                    if mode == "train":
                        opt = build_optimizer(cfg, model)
                        c = count_training_step(model, opt, images, targets, amp, build_lr_scheduler(cfg, opt))
                    else:
                        c = count_inference(model, images, amp)
                    row = {"arch": "cascade", "mode": mode, "batch": batch, "size": f"{height}x{width}", "model": name,
                           "amp": amp or "fp32", "host_reads": c.host_reads, "aten_ops": c.aten_ops,
                           "kernel_ops": c.kernel_ops, "nms_calls": c.nms_calls,
                           "reads_by_kind": dict(c.reads_by_kind), "summary": c.summary(8)}
                    rows.append(row)
                    if progress:
                        progress(row)
    return rows


def format_cascade_rows(rows: List[Dict[str, object]]) -> str:
    """One line per (mode, batch): the cascade's figure, the standard heads', and cascade / standard."""
    counts = "host_reads" in rows[0] if rows else False
    keys = ("host_reads", "aten_ops", "nms_calls") if counts else ("img_per_s",)
    head = "".join(f"{k + ' casc/std':>22}" for k in keys) + f"{'ratio':>8}"
    lines = [f"{'mode':<7}{'batch':>6}{'size':>11}{head}"]
    by = {(r["mode"], r["batch"], r["model"]): r for r in rows}
    for (mode, batch, model), r in by.items():
        s = by.get((mode, batch, "standard"))
        if model != "cascade" or s is None:
            continue
        cells = "".join(f"{r[k]:>12.4g}/{s[k]:<9.4g}" for k in keys)
        main_key = "aten_ops" if counts else "img_per_s"
        lines.append(f"{mode:<7}{batch:>6}{r['size']:>11}{cells}{r[main_key] / max(s[main_key], 1e-9):>7.2f}x")
    return "\n".join(lines)


def suite_rows(args, device: torch.device, log: Callable[[str], None], make_row) -> List[Dict[str, object]]:
    """The GPU suite's "cascade" part: training and inference images/s of Cascade Mask R-CNN R50-FPN against
    resdet's Mask R-CNN R50-FPN, at --det-size and --det-batch, AMP fp16 on CUDA (fp32 on a CPU)."""
    h, w = args.det_size
    amp = "fp16" if device.type == "cuda" else ""
    torch.backends.cudnn.benchmark = False
    raw = time_cascade(h, w, args.det_batch, args.iters, args.warmup, str(device), amp, args.boxes)
    by = {(r["model"], r["mode"]): r for r in raw}
    rows = []
    for mode in ("train", "infer"):
        c, s = by[("cascade", mode)], by[("standard", mode)]
        rows.append(make_row("cascade", "Cascade Mask R-CNN R50-FPN", mode, amp or "fp32", args.det_batch, f"{h}x{w}",
                             "img/s", c["img_per_s"], s["img_per_s"], "resdet Mask R-CNN R50-FPN (standard heads)",
                             c["peak_mem_gib"], s["peak_mem_gib"],
                             dets_per_image=[c["dets_per_image"], s["dets_per_image"]]))
        log(f"  cascade {mode}: {c['img_per_s']:.2f} img/s, standard {s['img_per_s']:.2f} img/s, "
            f"ratio {c['img_per_s'] / s['img_per_s']:.2f}x")
    return rows


def main_cascade_counts(args) -> int:
    """`--counts --arch cascade`: Cascade Mask R-CNN's reads and ops against our standard Mask R-CNN's."""
    import json

    amp = args.amp if args.amp is not None else ("fp16" if args.device.startswith("cuda") else "")
    h, w = args.size
    rows = cascade_count_rows(h, w, args.count_batches, args.device, amp, args.boxes,
                              progress=lambda r: print(f"  cascade {r['mode']} batch {r['batch']} {r['model']}: "
                                                       f"{r['host_reads']} host reads, {r['aten_ops']} aten ops",
                                                       flush=True))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: v for k, v in r.items() if k != "summary"}) + "\n")
    print(f"device: {args.device}, torch {torch.__version__}, amp {amp or 'fp32'}; Cascade Mask R-CNN vs resdet's "
          "Mask R-CNN R50-FPN, per training step and per inference call; ratio = cascade / standard aten ops")
    print(format_cascade_rows(rows))
    for r in rows:
        if r["model"] == "cascade":
            print(f"\ncascade {r['mode']} batch {r['batch']}: {r['summary']}")
    return 0
