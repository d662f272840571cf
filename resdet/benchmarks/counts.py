"""`tools/benchmark.py --counts`: the synchronisations and aten ops of one training step and one inference
call, ours against torchvision's, same weights (detection.build_pair) and same inputs.

On a GPU three kinds of operation stall the stream, each counted on any device by resdet.utils.counting
and named apart in the table: host reads (`.item()`, `.tolist()`, `nonzero`, a boolean mask, ...),
blocking host-to-device copies (a tensor made from host data on the device, a copy from pageable
memory without non_blocking) and torchvision NMS calls (each reads its kept count); "syncs" is their sum,
the budget of resdet/DESIGN.md (at most 8 per step and per call, at any batch). Each aten op is about one
kernel launch. `--config` counts our model as a config builds it (e.g. configs/coco_r50.yaml, random
weights) against torchvision's model of the same architecture (same inputs, its own random weights).
The training step is the one train_det runs: `Trainer.run_step` (autocast, backward, the optimizer that
`engine.build_optimizer` builds from the preset config, the lr schedule, the one read of the losses).
torchvision's model runs in the same Trainer with SGD on foreach kernels (what it gets on a GPU).
On the CPU the GPU branches are forced where they differ (nms.force_packed_nms: the batched NMS branch;
roi_align.force_torchvision_roi_align: the poolers' kernel), so the counts are the GPU path's. A
warm-up step runs first (optimizer state, anchor cache), then the counted one.

    python tools/benchmark.py --counts --size 192x256 --count-batches 1 8 --arch maskrcnn
    python tools/benchmark.py --counts --config configs/coco_r50.yaml --size 800x1216 --count-batches 1
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import torch

from resdet.config import load_config
from resdet.detection.nms import force_packed_nms
from resdet.detection.rcnn import build_detection_model
from resdet.detection.roi_align import force_torchvision_roi_align
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
    with force_torchvision_roi_align(), count_ops() as c:  # the GPU's pooling kernel (see the module doc)
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
    with force_torchvision_roi_align(), count_ops() as c:  # the GPU's pooling kernel (see the module doc)
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
               shrink: Optional[Dict[str, int]] = None, config: str = "") -> List[Dict[str, object]]:
    """Rows {arch, mode, batch, model, config, syncs, host_reads, h2d_copies, nms_calls, undeclared, aten_ops,
    kernel_ops, reads_by_kind}. `shrink`: keyword arguments of `shrink_heads`, applied to both models.
    `config`: build ours from this config (its own class count, random weights) instead of the torchvision
    preset of `arch` with torchvision's weights."""
    preset = os.path.join(_PRESETS, f"{arch}_resnet50_fpn.yaml")
    # a tiny lr keeps the random weights sane over the warm-up and counted steps; the optimizer's ops do
    # not depend on it
    cfg = load_config(config or preset, ([] if config else ["MODEL.ROI_HEADS.NUM_CLASSES", num_classes - 1])
                      + ["SOLVER.BASE_LR", 1e-6, "MODEL.DEVICE", device]
                      + (["MODEL.BACKBONE.WEIGHTS", "", "MODEL.WEIGHTS", ""] if config else []))
    if config:
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1  # the inputs' labels: the config's classes
    rows = []
    with force_packed_nms(True):
        for batch in batches:
            ours, tv = build_pair(arch, height, width, num_classes, device)
            if config:
                torch.manual_seed(0)
                ours = build_detection_model(cfg).to(device)
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
                           "config": os.path.relpath(config or preset) if name == "resdet" else f"torchvision {arch}",
                           "amp": amp or "fp32", "syncs": c.syncs, "host_reads": c.host_reads,
                           "h2d_copies": c.h2d_copies, "nms_calls": c.nms_calls, "undeclared": len(c.undeclared),
                           "aten_ops": c.aten_ops, "kernel_ops": c.kernel_ops,
                           "reads_by_kind": dict(c.reads_by_kind), "summary": c.summary(8)}
                    rows.append(row)
                    if progress:
                        progress(row)
    return rows


def format_counts(rows: List[Dict[str, object]]) -> str:
    """One line per (arch, mode, batch): the syncs of both, by kind (host reads, blocking host-to-device
    copies, NMS calls), aten ops, and ours / torchvision's."""
    lines = [f"{'arch':<11}{'mode':<7}{'batch':>6}{'size':>10}{'syncs ours/tv':>15}{'reads ours/tv':>15}"
             f"{'h2d ours/tv':>13}{'nms ours/tv':>13}{'aten ops ours/tv':>19}{'ratio':>8}{'kernels ours/tv':>18}"]
    by = {(r["arch"], r["mode"], r["batch"], r["model"]): r for r in rows}
    for (arch, mode, batch, model), r in by.items():
        t = by.get((arch, mode, batch, "torchvision"))
        if model != "resdet" or t is None:
            continue
        lines.append(f"{arch:<11}{mode:<7}{batch:>6}{r['size']:>10}{r['syncs']:>8}/{t['syncs']:<6}"
                     f"{r['host_reads']:>8}/{t['host_reads']:<6}{r['h2d_copies']:>6}/{t['h2d_copies']:<6}"
                     f"{r['nms_calls']:>6}/{t['nms_calls']:<6}"
                     f"{r['aten_ops']:>11}/{t['aten_ops']:<7}{r['aten_ops'] / max(t['aten_ops'], 1):>7.2f}x"
                     f"{r['kernel_ops']:>10}/{t['kernel_ops']:<7}")
    return "\n".join(lines)


def main_counts(args) -> int:
    """`tools/benchmark.py --counts`: the table, then where our reads come from, optionally JSON lines."""
    import json

    amp = args.amp if args.amp is not None else ("fp16" if args.device.startswith("cuda") else "")
    h, w = args.size
    config = getattr(args, "config", "") or ""
    if config:  # the architecture of the config's model; torchvision's of the same one is the reference
        archs = ["maskrcnn" if load_config(config).MODEL.MASK_ON else "fasterrcnn"]
    else:
        archs = ["fasterrcnn", "maskrcnn"] if args.arch == "both" else [args.arch]
    rows = []
    for arch in archs:
        rows += count_rows(arch, h, w, args.count_batches, args.device, amp, args.boxes, config=config,
                           progress=lambda r: print(f"  {r['arch']} {r['mode']} batch {r['batch']} {r['model']}: "
                                                    f"{r['syncs']} syncs ({r['host_reads']} host reads, "
                                                    f"{r['h2d_copies']} blocking copies, {r['nms_calls']} NMS "
                                                    f"calls), {r['aten_ops']} aten ops", flush=True))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: v for k, v in r.items() if k != "summary"}) + "\n")
    print(f"device: {args.device}, torch {torch.__version__}, amp {amp or 'fp32'}"
          + (f", ours: {config}" if config else "") + "; per training step (forward, backward, optimizer and lr "
          "step, loss read) and per inference call; syncs = host reads + blocking host-to-device copies (h2d) + "
          "NMS calls (each one host sync on CUDA); ratio = ours / torchvision's aten ops")
    print(format_counts(rows))
    for r in rows:
        if r["model"] == "resdet":
            print(f"\nresdet {r['arch']} {r['mode']} batch {r['batch']}: {r['summary']}")
    return 0
