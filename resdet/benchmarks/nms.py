"""`tools/benchmark.py --nms`: grouped NMS on the boxes a detector really sends it, each branch timed on the
same inputs in the same run (resdet/detection/nms.py says what the branches are).

The inputs are captured from one forward of a model: the RPN's call (training mode: the training top-k)
and the box head's (eval mode, per (image, class) group). Rows per site:
- per group: one torchvision nms per group (our CPU default; on CUDA one sync per group);
- batched: ours, all groups at once with the fixed point (our CUDA default; one declared read);
- one packed call: one torchvision nms over all groups shifted apart (torchvision's coordinate trick,
  float32; the old packed branch did the same in float64): what "NMS in one call" costs;
- torchvision batched_nms: a speed reference only; torchvision's own choice, one call over groups shifted
  apart in float32 (not exact: the shift rounds coordinates at COCO scale) or, above 1,000 boxes on a
  CPU / 5,000 on CUDA, one call per group.

    python tools/benchmark.py --nms --config configs/custom_scratch_r18_gn.yaml --size 288x480 --batch 4 --device cpu
    python tools/benchmark.py --nms --config configs/torchvision/maskrcnn_resnet50_fpn.yaml --size 800x1216 --batch 8
"""
from __future__ import annotations

import statistics
import time
from typing import Dict, List, Optional

import torch

__all__ = ["capture_nms_inputs", "time_nms_branches", "nms_rows_for", "format_nms", "main_nms"]


def capture_nms_inputs(model, images, targets=None) -> Dict[str, tuple]:
    """{"rpn": ..., "box": ...}: the (boxes, scores, groups, threshold, group_sizes) of the model's NMS calls
    in one training forward (the RPN's) and one inference call (the RPN's at the test top-k is skipped;
    the box head's). `targets`: the training forward's ground truth (None: no RPN training capture)."""
    import resdet.detection.postprocess as post
    import resdet.detection.rpn as rpn

    captured: Dict[str, tuple] = {}
    originals = {"rpn": rpn.grouped_nms, "box": post.grouped_nms}

    def spy(site):
        def capture(boxes, scores, groups, iou_threshold, **kwargs):
            captured.setdefault(site, (boxes.clone(), scores.clone(), groups.clone(), iou_threshold,
                                       list(kwargs.get("group_sizes") or [])))
            return originals[site](boxes, scores, groups, iou_threshold, **kwargs)
        return capture

    rpn.grouped_nms, post.grouped_nms = spy("rpn"), spy("box")
    try:
        with torch.no_grad():
            if targets is not None:
                model.train()
                model(images, targets)
            model.eval()
            captured_rpn = captured.pop("rpn", None)
            model(images)
            if captured_rpn is not None:
                captured["rpn"] = captured_rpn
    finally:
        rpn.grouped_nms, post.grouped_nms = originals["rpn"], originals["box"]
    return captured


def _median_seconds(fn, device: torch.device, iters: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(iters, 1)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_nms_branches(boxes, scores, groups, threshold: float, sizes: Optional[List[int]], iters: int = 5,
                      rounds: int = 3) -> Dict[str, float]:
    """Median seconds per call of each branch, alternating the branches `rounds` times."""
    from torchvision.ops import batched_nms
    from torchvision.ops.boxes import _batched_nms_coordinate_trick

    from resdet.detection.nms import grouped_nms

    sizes = sizes or None
    fns = {"per group": lambda: grouped_nms(boxes, scores, groups, threshold, packed=False, group_sizes=sizes),
           "batched": lambda: grouped_nms(boxes, scores, groups, threshold, packed=True, group_sizes=sizes),
           "one packed call": lambda: _batched_nms_coordinate_trick(boxes, scores, groups, threshold),
           "torchvision batched_nms": lambda: batched_nms(boxes, scores, groups, threshold)}
    out = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            out[name].append(_median_seconds(fn, boxes.device, iters))
    return {name: statistics.median(v) for name, v in out.items()}


def nms_rows_for(model, images, targets, iters: int = 5, rounds: int = 3) -> List[Dict[str, object]]:
    """One row per (site, branch): {site, boxes, groups, largest_group, branch, ms, ratio_to_per_group}."""
    rows = []
    for site, (boxes, scores, groups, thr, sizes) in capture_nms_inputs(model, images, targets).items():
        times = time_nms_branches(boxes, scores, groups, thr, sizes, iters, rounds)
        n_groups = len(sizes) if sizes else int(groups.unique().numel())
        for branch, sec in times.items():
            rows.append({"site": site, "boxes": int(boxes.shape[0]), "groups": n_groups,
                         "largest_group": max(sizes) if sizes else None, "branch": branch, "ms": sec * 1000,
                         "ratio_to_per_group": times["per group"] / sec})
    return rows


def format_nms(rows: List[Dict[str, object]]) -> str:
    lines = [f"{'site':<6}{'boxes':>8}{'groups':>8}{'largest':>9}  {'branch':<26}{'ms':>10}{'speed vs per group':>20}"]
    for r in rows:
        lines.append(f"{r['site']:<6}{r['boxes']:>8}{r['groups']:>8}{str(r['largest_group']):>9}  {r['branch']:<26}"
                     f"{r['ms']:>10.2f}{r['ratio_to_per_group']:>19.2f}x")
    return "\n".join(lines)


def main_nms(args) -> int:
    """`tools/benchmark.py --nms`: the model of --config (its --weights, or random weights) on photographs."""
    from resdet.config import load_config
    from resdet.detection.rcnn import build_detection_model
    from resdet.detection.weights import load_detection_weights

    from .detection import synthetic_batch

    if not args.config:
        raise SystemExit("--nms needs --config (the model whose NMS inputs are timed)")
    cfg = load_config(args.config, ["MODEL.DEVICE", args.device, "MODEL.BACKBONE.WEIGHTS", "", "MODEL.WEIGHTS", ""])
    torch.manual_seed(0)
    model = build_detection_model(cfg).to(args.device)
    if args.weights:
        load_detection_weights(model, args.weights)
    h, w = args.size
    images, targets = synthetic_batch(args.batch, h, w, args.boxes, cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1,
                                      cfg.MODEL.MASK_ON, args.device)
    rows = nms_rows_for(model, images, targets, iters=args.iters, rounds=3)
    print(f"device: {args.device}, {torch.get_num_threads()} threads, {args.config}"
          f"{' + ' + args.weights if args.weights else ' (random weights)'}, batch {args.batch} at {h}x{w}; "
          "median ms per call over alternating rounds")
    print(format_nms(rows))
    return 0
