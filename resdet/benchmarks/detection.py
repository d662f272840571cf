"""Throughput of our Faster / Mask R-CNN against torchvision's, same weights, same inputs, same process.

Both models are R50-FPN with frozen BN and res3..res5 trainable (torchvision: trainable_layers=3,
ours: FREEZE_AT 2), torchvision's weights converted into ours; torchvision's internal resize is made
a no-op (min/max size = the image's sides) so both see identical tensors: crops of real photographs
(resdet/benchmarks/photos.py) with random boxes and box-shaped masks. Inference keeps every candidate
(score threshold 0) so both return 100 detections per image and mask pasting is measured.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torchvision
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from resdet.config import load_config
from resdet.detection.convert import convert_torchvision_detection
from resdet.detection.rcnn import build_detection_model

from resdet.benchmarks.photos import photo_batch

# the presets live in the repository's configs/ (YAML only), beside the package
_PRESETS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "torchvision"))

__all__ = ["build_pair", "synthetic_batch", "time_models", "format_table", "step_peak_gib", "resident_bytes"]


def build_pair(arch: str, height: int, width: int, num_classes: int = 91, device: str = "cpu"):
    """(ours, torchvision's) with identical random weights; num_classes includes the background."""
    if arch not in ("fasterrcnn", "maskrcnn"):
        raise ValueError(f"arch must be 'fasterrcnn' or 'maskrcnn'; got {arch!r}")
    torch.manual_seed(0)
    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3)
    cls = MaskRCNN if arch == "maskrcnn" else FasterRCNN
    tv = cls(backbone, num_classes=num_classes, min_size=min(height, width), max_size=max(height, width),
             box_score_thresh=0.0)
    cfg = load_config(os.path.join(_PRESETS, f"{arch}_resnet50_fpn.yaml"),
                      ["MODEL.ROI_HEADS.NUM_CLASSES", num_classes - 1, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])
    ours = build_detection_model(cfg)
    ours.load_state_dict(convert_torchvision_detection(tv.state_dict()), strict=True)
    return ours.to(device), tv.to(device)


def synthetic_batch(batch: int, height: int, width: int, boxes_per_image: int, num_classes: int, masks: bool,
                    device: str, seed: int = 0, photos: bool = True) -> Tuple[List[torch.Tensor], List[Dict[str, torch.Tensor]]]:
    """Images (float 0-255: crops of real photographs, or noise with photos=False) and random boxes with
    rectangular masks."""
    g = torch.Generator().manual_seed(seed)
    pictures = photo_batch(batch, height, width, seed).float() if photos else None
    images, targets = [], []
    for i in range(batch):
        images.append((pictures[i] if photos else torch.rand(3, height, width, generator=g) * 255).to(device))
        xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = (torch.rand(boxes_per_image, 2, generator=g) * 0.25 + 0.05) * torch.tensor([width, height])
        b = torch.cat([xy, xy + wh], 1).round()
        t = {"boxes": b.to(device), "labels": torch.randint(1, num_classes, (boxes_per_image,), generator=g).to(device)}
        if masks:
            m = torch.zeros(boxes_per_image, height, width, dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(b.to(torch.int64).tolist()):
                m[i, y1:y2, x1:x2] = 1
            t["masks"] = m.to(device)
        targets.append(t)
    return images, targets


def _sync(device) -> None:
    """Wait for `device`'s work: the device asked for ("cuda:1"), not the current one."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resident_bytes(model, optimizer=None) -> int:
    """Bytes a model keeps between steps: parameters, buffers and the optimizer's state tensors."""
    tensors = list(model.parameters()) + list(model.buffers())
    if optimizer is not None:
        tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def step_peak_gib(device, step, own_bytes: int = 0) -> Optional[float]:
    """Peak memory of one call of `step` on CUDA `device` (GiB; None elsewhere): the most the step added
    to what was allocated when it started, plus `own_bytes` (the model's resident_bytes). Call it after
    every model compared has warmed up: their first steps' one-off allocations (cuDNN / cuBLAS workspaces,
    autotuning) then count for none of them, and another model's weights held meanwhile count for neither."""
    device = torch.device(device)
    if device.type != "cuda":
        step()
        return None
    _sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) - before + own_bytes) / 2**30


def _make_steps(model, ims, targets, dtype, dev_type, dets: List[float]):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-6, momentum=0.9)
    model._benchmark_optimizer = opt  # its momentum buffers count in the model's peak memory

    def train_step():
        with torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None):
            losses = model(ims, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer_step():
        with torch.no_grad(), torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None):
            out = model(ims)
        dets.append(sum(len(o["boxes"]) for o in out) / len(out))

    return {"train": train_step, "infer": infer_step}


def time_models(arch: str, height: int, width: int, batch: int, iters: int, warmup: int = 1, device: str = "cpu",
                amp: str = "", channels_last: bool = False, boxes_per_image: int = 7,
                num_classes: int = 91, progress=None, pair=None,
                modes: Sequence[str] = ("train", "infer")) -> List[Dict[str, object]]:
    """Rows {model, mode, img_per_s, s_per_iter, dets_per_image, peak_mem_gib} for ours and torchvision's.

    Times are medians over `iters` steps. The two models alternate iteration by iteration, so a change in
    machine load (a shared CPU) hits both alike; peak memory (CUDA) is one more step per model after both
    have warmed up (step_peak_gib). `pair`: (ours, torchvision's) from build_pair, to time them again (e.g. at another precision).
    `modes`: "train" and/or "infer".
    """
    if device.startswith("cuda"):
        # "cuda:N": make N the current device too, so that nothing inside either model lands on GPU 0
        with torch.cuda.device(torch.device(device)):
            return _time_models(arch, height, width, batch, iters, warmup, device, amp, channels_last,
                                boxes_per_image, num_classes, progress, pair, modes)
    return _time_models(arch, height, width, batch, iters, warmup, device, amp, channels_last, boxes_per_image,
                        num_classes, progress, pair, modes)


def _time_models(arch, height, width, batch, iters, warmup, device, amp, channels_last, boxes_per_image,
                 num_classes, progress, pair, modes):
    ours, tv = pair if pair is not None else build_pair(arch, height, width, num_classes, device)
    if channels_last:
        ours, tv = ours.to(memory_format=torch.channels_last), tv.to(memory_format=torch.channels_last)
    images, targets = synthetic_batch(batch, height, width, boxes_per_image, num_classes, arch == "maskrcnn", device)
    dtype = {"": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    models = {"resdet": ours, "torchvision": tv}
    dets = {name: [] for name in models}
    steps = {"resdet": _make_steps(ours, images, targets, dtype, dev_type, dets["resdet"]),
             "torchvision": _make_steps(tv, [im / 255 for im in images], targets, dtype, dev_type, dets["torchvision"])}
    rows = []
    for mode in modes:
        elapsed = {name: [] for name in models}
        for name, model in models.items():  # warm-up of both first
            model.train(mode == "train")
            for _ in range(max(warmup, 1)):
                steps[name][mode]()
        peak = {}
        for name, model in models.items():  # then the peak of one step each, from the same state
            model.train(mode == "train")
            own = resident_bytes(model, getattr(model, "_benchmark_optimizer", None))
            peak[name] = step_peak_gib(device, steps[name][mode], own) if dev_type == "cuda" else None
        for _ in range(iters):
            for name, model in models.items():
                model.train(mode == "train")
                torch.manual_seed(0)
                _sync(device)
                start = time.perf_counter()
                steps[name][mode]()
                _sync(device)
                elapsed[name].append(time.perf_counter() - start)
        for name in models:
            sec = statistics.median(elapsed[name])  # robust to a load spike on a shared machine
            row = {"arch": arch, "model": name, "mode": mode, "batch": batch, "size": f"{height}x{width}",
                   "amp": amp or "fp32", "s_per_iter": sec, "img_per_s": batch / sec,
                   "dets_per_image": dets[name][-1] if mode == "infer" else None, "peak_mem_gib": peak[name]}
            rows.append(row)
            if progress:
                progress(row)
    return rows


def format_table(rows: List[Dict[str, object]]) -> str:
    """One line per (arch, mode): both throughputs and ours / torchvision's."""
    lines = [f"{'arch':<11}{'mode':<7}{'batch':>6}{'size':>11}{'amp':>6}{'resdet img/s':>14}{'tv img/s':>10}"
             f"{'ratio':>8}{'dets/img':>10}{'mem GiB (ours/tv)':>19}"]
    by = {(r["arch"], r["mode"], r["model"]): r for r in rows}
    for (arch, mode, model), r in by.items():
        if model != "resdet" or (arch, mode, "torchvision") not in by:
            continue
        t = by[(arch, mode, "torchvision")]
        dets = f"{r['dets_per_image']:.0f}/{t['dets_per_image']:.0f}" if r["dets_per_image"] is not None else "-"
        mem = f"{r['peak_mem_gib']:.1f}/{t['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
        lines.append(f"{arch:<11}{mode:<7}{r['batch']:>6}{r['size']:>11}{r['amp']:>6}{r['img_per_s']:>14.2f}"
                     f"{t['img_per_s']:>10.2f}{r['img_per_s'] / t['img_per_s']:>7.2f}x{dets:>10}{mem:>19}")
    return "\n".join(lines)
