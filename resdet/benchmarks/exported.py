"""`tools/benchmark.py --exported FILE`: an exported model (onnxruntime for .onnx, torch.export for .pt2)
against the eager resdet model it came from, same weights, same images, same process, with the ratio.

    python tools/benchmark.py --exported output/export/coco_r50.onnx --device cpu --size 800x1216 --iters 5

The eager model is rebuilt from the config the file carries and loads the weights it was exported from
(or --weights). Inputs are real photographs (scikit-image's bundled photos, resdet/benchmarks/photos.py),
scaled to --size. Each iteration runs eager then exported on the same batch (alternating, so a busy
machine slows both alike); the table gives median images/s and exported / eager. Both produce the same
per-image dicts (detectors: boxes in the image frame, masks pasted), so both timings include padding
and mask pasting.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

__all__ = ["time_exported", "format_rows"]


def _eager_model(meta: Dict, weights: str):
    from resdet.config import load_config
    from resdet.runs.export import build_model, load_weights

    if "config" not in meta:
        raise ValueError("the exported file's metadata has no 'config': it was not written by tools/export.py")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(meta["config"])
    try:
        cfg = load_config(f.name, ["MODEL.WEIGHTS", ""])
    finally:
        os.remove(f.name)
    weights = weights or meta.get("weights", "")
    if not weights:
        raise ValueError("the exported file does not say which weights it holds; give --weights (the checkpoint "
                         "it was exported from) so that eager and exported compute the same thing")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"Weights file '{weights}' (the eager side of the comparison) does not exist; "
                                "give --weights")
    model = build_model(cfg)
    load_weights(model, weights)
    return model


def _photos(batch: int, h: int, w: int) -> List[torch.Tensor]:
    import cv2

    from .photos import skimage_photos

    photos = skimage_photos()
    out = []
    for i in range(batch):
        _, p = photos[i % len(photos)]
        out.append(torch.from_numpy(np.ascontiguousarray(cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA)))
                   .permute(2, 0, 1).float())
    return out


def _fixed_shape(meta: Dict) -> Tuple[Optional[int], Optional[int], Optional[int]]:
    n, _, h, w = meta["input_shapes"]["images"]
    fix = lambda v: v if isinstance(v, int) else None  # noqa: E731
    return fix(n), fix(h), fix(w)


def time_exported(path: str, *, size: Tuple[int, int], batch: int, iters: int, warmup: int = 1,
                  weights: str = "", device: str = "cpu", progress=None) -> List[Dict]:
    """Median img/s of the eager model and of the exported file on the same photographs."""
    from resdet.export.runtime import ExportedClassifier, ExportedDetector, read_metadata

    meta = read_metadata(path)
    fb, fh, fw = _fixed_shape(meta)
    h, w = (fh, fw) if fh is not None else size
    if fb is not None and batch % fb:
        raise ValueError(f"'{path}' has a fixed batch of {fb}; --batch must be a multiple of it (got {batch})")
    model = _eager_model(meta, weights).to(device)
    is_detector = meta["kind"] == "detector"
    # onnxruntime gets as many threads as torch has, so the ratio compares the runtimes, not thread counts
    runner = (ExportedDetector if is_detector else ExportedClassifier)(path, device=device, metadata=meta,
                                                                        threads=torch.get_num_threads())
    images = [im.to(device) for im in _photos(batch, h, w)]
    if is_detector:
        run_eager = lambda: model(images)  # noqa: E731
        run_exported = lambda: runner(images)  # noqa: E731
    else:
        stacked = torch.stack(images)
        run_eager = lambda: model(stacked)  # noqa: E731
        run_exported = lambda: runner(stacked)  # noqa: E731

    def timed(fn):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    times: Dict[str, List[float]] = {"eager": [], "exported": []}
    outs = {}
    with torch.no_grad():
        for i in range(warmup + iters):
            for name, fn in (("eager", run_eager), ("exported", run_exported)):  # alternate: same machine load
                t, outs[name] = timed(fn)
                if i >= warmup:
                    times[name].append(t)
    rows = []
    for name in ("eager", "exported"):
        med = statistics.median(times[name])
        row = {"model": name, "format": "eager" if name == "eager" else meta["format"], "kind": meta["kind"],
               "architecture": meta["architecture"], "size": f"{h}x{w}", "batch": batch, "iters": iters,
               "device": device, "threads": torch.get_num_threads(), "median_s": med, "img_per_s": batch / med}
        if is_detector:
            row["dets_per_image"] = sum(len(o["scores"]) for o in outs[name]) / batch
        rows.append(row)
        if progress:
            progress(row)
    rows[1]["ratio"] = rows[1]["img_per_s"] / rows[0]["img_per_s"]
    return rows


def format_rows(rows: List[Dict]) -> str:
    head = f"{'model':<10}{'format':<18}{'size':>11}{'batch':>6}{'img/s':>9}{'dets/img':>10}{'ratio':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        dets = f"{r['dets_per_image']:.1f}" if "dets_per_image" in r else "-"
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        lines.append(f"{r['model']:<10}{r['format']:<18}{r['size']:>11}{r['batch']:>6}{r['img_per_s']:>9.3f}"
                     f"{dets:>10}{ratio:>8}")
    return "\n".join(lines)
