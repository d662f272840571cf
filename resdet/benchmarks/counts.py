"""`tools/benchmark.py --counts`: host reads and aten ops of one training step and one inference call,
ours against torchvision's, same weights (detection.build_pair) and same inputs.

On a GPU each host read (`.item()`, `.tolist()`, `nonzero`, a boolean mask, ...) stalls the stream and
each aten op is about one kernel launch; both are counted on any device by resdet.utils.counting.
The training step is the one train_det runs: `Trainer.run_step` (autocast, backward, the optimizer that
`engine.build_optimizer` builds from the preset config, the lr schedule, the one read of the losses).
torchvision's model runs in the same Trainer with SGD on foreach kernels (what it gets on a GPU).
On the CPU the GPU branches are forced where they differ (box_ops.force_packed_nms: NMS packing), so
the counts are the GPU path's. A warm-up step runs first (optimizer state, anchor cache), then the
counted one.

    python tools/benchmark.py --counts --size 192x256 --count-batches 1 8 --arch maskrcnn
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import torch

from resdet.config import load_config
from resdet.detection.box_ops import force_packed_nms
from resdet.engine.schedules import build_lr_scheduler, build_optimizer
from resdet.engine.trainer import Trainer
from resdet.utils.counting import OpCounter, count_ops

from .detection import _PRESETS, build_pair, synthetic_batch

__all__ = ["count_training_step", "count_inference", "count_rows", "shrink_heads", "format_counts", "main_counts"]


def _trainer(model, optimizer, scheduler, batch, amp: str) -> Trainer:
    trainer = Trainer(model, optimizer, [batch], max_iter=1, scheduler=scheduler, amp=amp,
                      device=next(model.parameters()).device)
    trainer._data_iter = iter(())  # run_step pulls from here; refilled per step below
    return trainer


def count_training_step(model, optimizer, images, targets, amp: str = "", scheduler=None,
                        warmup: int = 1) -> OpCounter:
    """Counts of `Trainer.run_step` on (images, targets) after `warmup` uncounted steps."""
    model.train()
    trainer = _trainer(model, optimizer, scheduler, (images, targets), amp)
    for _ in range(warmup):
        trainer._data_iter = iter([(images, targets)])
        trainer.run_step()
    trainer._data_iter = iter([(images, targets)])
    with count_ops() as c:
        trainer.run_step()
    return c


def count_inference(model, images, amp: str = "", warmup: int = 1) -> OpCounter:
    """Counts of one `model(images)` call in eval mode under no_grad (after `warmup` calls)."""
    model.eval()
    device_type = images[0].device.type
    dtype = {"": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]

    def call():
        with torch.no_grad(), torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return model(images)

    for _ in range(warmup):
        call()
    with count_ops() as c:
        call()
    return c


def _optimizer_for(model, cfg, ours: bool):
    if ours:  # exactly what train_det builds
        opt = build_optimizer(cfg, model)
        return opt, build_lr_scheduler(cfg, opt)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                          weight_decay=cfg.SOLVER.WEIGHT_DECAY, foreach=True)
    return opt, None


def shrink_heads(ours, tv, pre_nms_topk: int, post_nms_topk: int, rpn_batch: int, roi_batch: int) -> None:
    """The same smaller RPN top-k and sample sizes in both models (short CPU runs; the op and read
    counts do not depend on them)."""
    ours.rpn.pre_nms_topk.update({True: pre_nms_topk, False: pre_nms_topk})
    ours.rpn.post_nms_topk.update({True: post_nms_topk, False: post_nms_topk})
    ours.rpn.batch_size_per_image, ours.roi_heads.batch_size_per_image = rpn_batch, roi_batch
    tv.rpn._pre_nms_top_n = dict(training=pre_nms_topk, testing=pre_nms_topk)
    tv.rpn._post_nms_top_n = dict(training=post_nms_topk, testing=post_nms_topk)
    tv.rpn.fg_bg_sampler.batch_size_per_image = rpn_batch
    tv.roi_heads.fg_bg_sampler.batch_size_per_image = roi_batch


def count_rows(arch: str, height: int, width: int, batches: Sequence[int] = (1, 8), device: str = "cpu",
               amp: str = "", boxes_per_image: int = 7, num_classes: int = 91,
               modes: Sequence[str] = ("infer", "train"), progress=None,
               shrink: Optional[Dict[str, int]] = None) -> List[Dict[str, object]]:
    """Rows {arch, mode, batch, model, host_reads, aten_ops, kernel_ops, nms_calls, reads_by_kind}.
    `shrink`: keyword arguments of `shrink_heads`, applied to both models."""
    cfg = load_config(os.path.join(_PRESETS, f"{arch}_resnet50_fpn.yaml"),
                      ["MODEL.ROI_HEADS.NUM_CLASSES", num_classes - 1,
                       # a tiny lr keeps the random weights sane over the warm-up and counted steps; the
                       # optimizer's ops do not depend on it
                       "SOLVER.BASE_LR", 1e-6])
    rows = []
    with force_packed_nms(True):
        for batch in batches:
            ours, tv = build_pair(arch, height, width, num_classes, device)
            if shrink:
                shrink_heads(ours, tv, **shrink)
            images, targets = synthetic_batch(batch, height, width, boxes_per_image, num_classes,
                                              arch == "maskrcnn", device)
            inputs = {"resdet": images, "torchvision": [im / 255 for im in images]}
            for mode in modes:
                for name, model in (("resdet", ours), ("torchvision", tv)):
                    torch.manual_seed(0)
                    if mode == "train":
                        opt, sched = _optimizer_for(model, cfg, name == "resdet")
                        c = count_training_step(model, opt, inputs[name], targets, amp, sched)
                    else:
                        c = count_inference(model, inputs[name], amp)
                    row = {"arch": arch, "mode": mode, "batch": batch, "size": f"{height}x{width}", "model": name,
                           "amp": amp or "fp32", "host_reads": c.host_reads, "aten_ops": c.aten_ops,
                           "kernel_ops": c.kernel_ops, "nms_calls": c.nms_calls,
                           "reads_by_kind": dict(c.reads_by_kind), "summary": c.summary(8)}
                    rows.append(row)
                    if progress:
                        progress(row)
    return rows


def format_counts(rows: List[Dict[str, object]]) -> str:
    """One line per (arch, mode, batch): reads, aten ops and NMS calls of both, and ours / torchvision's."""
    lines = [f"{'arch':<11}{'mode':<7}{'batch':>6}{'size':>10}{'reads ours/tv':>15}{'aten ops ours/tv':>19}"
             f"{'ratio':>8}{'kernels ours/tv':>18}{'nms ours/tv':>13}"]
    by = {(r["arch"], r["mode"], r["batch"], r["model"]): r for r in rows}
    for (arch, mode, batch, model), r in by.items():
        t = by.get((arch, mode, batch, "torchvision"))
        if model != "resdet" or t is None:
            continue
        lines.append(f"{arch:<11}{mode:<7}{batch:>6}{r['size']:>10}{r['host_reads']:>8}/{t['host_reads']:<6}"
                     f"{r['aten_ops']:>11}/{t['aten_ops']:<7}{r['aten_ops'] / max(t['aten_ops'], 1):>7.2f}x"
                     f"{r['kernel_ops']:>10}/{t['kernel_ops']:<7}{r['nms_calls']:>7}/{t['nms_calls']:<5}")
    return "\n".join(lines)


def main_counts(args) -> int:
    """`tools/benchmark.py --counts`: the table, then where our reads come from, optionally JSON lines."""
    import json

    amp = args.amp if args.amp is not None else ("fp16" if args.device.startswith("cuda") else "")
    h, w = args.size
    archs = ["fasterrcnn", "maskrcnn"] if args.arch == "both" else [args.arch]
    rows = []
    for arch in archs:
        rows += count_rows(arch, h, w, args.count_batches, args.device, amp, args.boxes,
                           progress=lambda r: print(f"  {r['arch']} {r['mode']} batch {r['batch']} {r['model']}: "
                                                    f"{r['host_reads']} host reads, {r['aten_ops']} aten ops",
                                                    flush=True))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: v for k, v in r.items() if k != "summary"}) + "\n")
    print(f"device: {args.device}, torch {torch.__version__}, amp {amp or 'fp32'}; per training step (forward, "
          "backward, optimizer and lr step, loss read) and per inference call; ratio = ours / torchvision's aten ops; "
          "NMS calls apart (each one host sync on CUDA)")
    print(format_counts(rows))
    for r in rows:
        if r["model"] == "resdet":
            print(f"\nresdet {r['arch']} {r['mode']} batch {r['batch']}: {r['summary']}")
    return 0
