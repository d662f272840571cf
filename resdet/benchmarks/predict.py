r"""`tools/benchmark.py --predict`: tools/predict.py's pipeline against the model alone, on the same frames.

    python tools/benchmark.py --predict --weights output/quickstart_shapes/model_final.pth \
        --folder datasets/shapes/val_n50_seed0_80-128/images
    python tools/benchmark.py --predict --config configs/coco_r50.yaml --size 800x1067   # R50-FPN at 800 px
    python tools/benchmark.py --predict --weights model_final.pth --video clip.mp4 --batch 4 --device cuda

Three measurements, each ours against a reference in the same run:
1. video: the pipeline end to end (decoding the file, the model, drawing, writing the .mp4 and the JSON
   lines) against the model alone (`predict_batch` on the same frames, decoded and resized beforehand),
   in frames per second; rounds alternate between the two so a busy machine slows both alike, and the
   median ratio is reported (target: at least 0.9), with the share of the pipeline's run the model
   computed (near 100%: decoding and drawing never kept it waiting; what is left of the ratio is the CPU
   they took from it).
2. folder: the same for a folder of JPEGs (pictures and COCO results written), at batch 1 and at
   --batch (on a GPU, batch 4 should reach 1.5x batch 1).
3. results: writing a COCO results JSON with RLE masks for --results-images images of --results-dets
   detections (synthetic detections of COCO-like sizes on 480x640 images, smooth masks), ours
   (box-sized masks, resdet/evaluation/rle.py) against the evaluator's path on image-sized masks
   (`instances_to_coco_results` on pasted masks, paste not counted), the latter timed on a subset and
   scaled to the same count.
Without --folder, JPEG photographs (resdet/benchmarks/photos.py) of --size are written to a temporary
folder; without --video, a video is made of the folder's images (each shown for a few frames). Without
--weights or --config, an untrained R50-FPN (configs/coco_r50.yaml at --size) keeps its 10 best
detections per frame and draws them all, so that drawing has masks to paste and draw.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
import torch

__all__ = ["main", "time_pipeline", "time_results_writer"]

R50_DEFAULTS = ["MODEL.BACKBONE.WEIGHTS", "", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                "TEST.DETECTIONS_PER_IMAGE", "10"]


def parse_args(argv) -> argparse.Namespace:
    from resdet.runs.cli import image_size

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predict", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--weights", default="", help="a training checkpoint (default: an untrained R50-FPN)")
    p.add_argument("--config", default="", help="a config for weights without one, or the model to build")
    p.add_argument("--device", default="", help="MODEL.DEVICE (default: the config's; the CPU without a GPU)")
    p.add_argument("--video", default="", help="a video file (default: one made of the folder's images)")
    p.add_argument("--folder", default="", help="a folder of JPEG images (default: photographs of --size)")
    p.add_argument("--size", type=image_size, default=(800, 1067), help="HxW of the generated photographs")
    p.add_argument("--frames", type=int, default=40, help="frames (images) per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per measurement (median)")
    p.add_argument("--batch", type=int, default=1, help="images per model call (the folder is also timed at 1)")
    p.add_argument("--workers", type=int, default=2, help="decode and draw threads each")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice; on a "
                   "machine shared with other jobs 1 avoids threads spin-waiting for each other)")
    p.add_argument("--score", type=float, default=None, help="drawing threshold (default TEST.VIS_SCORE_THRESHOLD; "
                   "0 for the default untrained R50)")
    p.add_argument("--results-images", type=int, default=5000)
    p.add_argument("--results-dets", type=int, default=100)
    p.add_argument("--reference-images", type=int, default=10, help="images the evaluator's path is timed on")
    p.add_argument("--skip", nargs="*", default=[], choices=["video", "folder", "results"])
    p.add_argument("--json", default="", help="append one JSON line per measurement to this file")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if args.frames < 1 or args.rounds < 1 or args.batch < 1:
        p.error("--frames, --rounds and --batch must be >= 1")
    return args


def _predictor(args):
    from resdet.config import load_config
    from resdet.predictor import DetectionPredictor

    opts = list(args.opts) + (["MODEL.DEVICE", args.device] if args.device else [])
    if args.weights:
        return DetectionPredictor.from_checkpoint(args.weights, args.config or None, opts)
    h, w = args.size
    config = args.config or os.path.join(os.path.dirname(__file__), "..", "..", "configs", "coco_r50.yaml")
    extra = [] if args.config else R50_DEFAULTS + ["INPUT.MIN_SIZE_TEST", str(min(h, w)), "INPUT.MAX_SIZE_TEST",
                                                   str(max(h, w))]
    predictor = DetectionPredictor.from_config(load_config(config, extra + opts))
    if not args.config and args.score is None:
        predictor.score_threshold = 0.0  # draw the untrained model's 10 detections
    return predictor


def _photo_folder(folder: str, n: int, size) -> str:
    from PIL import Image

    from .photos import photo_batch

    os.makedirs(folder, exist_ok=True)
    batch = photo_batch(n, size[0], size[1]).permute(0, 2, 3, 1).numpy()
    for i, img in enumerate(batch):
        Image.fromarray(img).save(os.path.join(folder, f"photo_{i:04d}.jpg"), quality=90)
    return folder


def _video_from(folder: str, path: str, frames: int, hold: int = 4) -> str:
    """A video of the folder's images (sorted), each held for `hold` frames, resized to the first's size."""
    import cv2

    from resdet.pipeline.sources import IMAGE_EXTENSIONS

    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    first = cv2.imread(os.path.join(folder, names[0]))
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
    for k in range(frames):
        img = cv2.imread(os.path.join(folder, names[(k // hold) % len(names)]))
        writer.write(cv2.resize(img, (w, h)) if img.shape[:2] != (h, w) else img)
    writer.release()
    return path


class _First:
    """The first `n` units of a source (a video may be longer than a round)."""

    def __init__(self, source, n: int):
        self.source, self.n = source, n
        self.kind, self.name, self.fps = source.kind, source.name, source.fps
        self.total = min(n, source.total) if source.total is not None else n
        self.relative_of = getattr(source, "relative_of", {})

    def units(self):
        for k, unit in enumerate(self.source.units()):
            if k >= self.n:
                return
            yield unit

    def close(self):
        self.source.close()


def _sources(kind: str, path: str, n: int):
    from resdet.pipeline.sources import ImageFiles, VideoFile, images_in

    if kind == "video":
        return [_First(VideoFile(path, "video"), n)]
    paths = images_in(path)[:n]
    return [ImageFiles(paths, [os.path.relpath(p, path) for p in paths], "folder")]


def _model_only(predictor, sources, batch: int) -> Dict:
    """The model alone on the same frames: every frame decoded and resized first, then only
    `predict_batch` timed (the call the pipeline makes)."""
    import cv2

    from resdet.data.jpeg import read_any_image_fast

    prepared = []
    for s in sources:
        for unit in s.units():
            pixels = read_any_image_fast(unit) if s.kind == "images" else cv2.cvtColor(unit[1], cv2.COLOR_BGR2RGB)
            prepared.append(predictor.prepare(pixels))
        s.close()
    drawn = 0
    start = time.perf_counter()
    for i in range(0, len(prepared), batch):
        part = prepared[i:i + batch]
        outs = predictor.predict_batch([t for t, _ in part], [s for _, s in part], paste_masks=False)
        drawn += sum(int((o["scores"] >= predictor.score_threshold).sum()) for o in outs)
    seconds = time.perf_counter() - start
    return {"frames": len(prepared), "seconds": seconds, "fps": len(prepared) / seconds,
            "drawn_per_frame": drawn / max(len(prepared), 1)}


def _pipeline(predictor, sources, batch: int, workers: int, out_dir: str) -> Dict:
    from resdet.pipeline.job import PredictionJob
    from resdet.pipeline.outputs import choose_codec
    from resdet.pipeline.stages import run_pipeline

    codec = choose_codec()[0] if any(s.kind != "images" for s in sources) else ""
    job = PredictionJob(predictor, out_dir, draw=True, results=True, codec=codec)
    try:
        report = run_pipeline(sources, job, batch_size=batch, decode_workers=workers, draw_workers=workers,
                              progress=False)
    finally:
        job.close()
        for s in sources:
            s.close()
    # the share of the run the model loop computed (not waiting for frames or for the draw/write stage):
    # unlike the frame rates it hardly depends on how busy other jobs keep a shared machine
    return {"frames": report.frames, "seconds": report.wall, "fps": report.frames_per_second,
            "model_busy": report.times.model / max(report.wall, 1e-9), "stages": report.stage_lines(batch)}


def time_pipeline(predictor, kind: str, path: str, *, frames: int, rounds: int, batch: int, workers: int,
                  progress=print) -> Dict:
    """Median frames/s of the pipeline (with drawing and writing) and of the model alone, alternating."""
    with tempfile.TemporaryDirectory() as tmp:
        _model_only(predictor, _sources(kind, path, min(frames, 2 * batch)), batch)  # warm-up
        ratios, model_fps, pipe_fps, busy, last = [], [], [], [], None
        for r in range(rounds):
            m = _model_only(predictor, _sources(kind, path, frames), batch)
            last = _pipeline(predictor, _sources(kind, path, frames), batch, workers, os.path.join(tmp, f"r{r}"))
            model_fps.append(m["fps"])
            pipe_fps.append(last["fps"])
            ratios.append(last["fps"] / m["fps"])
            busy.append(last["model_busy"])
            progress(f"  {kind} round {r + 1}: model alone {m['fps']:.3g} frames/s, pipeline {last['fps']:.3g} "
                     f"frames/s ({ratios[-1]:.2f}), the model busy {100 * busy[-1]:.0f}% of the pipeline's run; "
                     f"{m['drawn_per_frame']:.1f} detections drawn per frame")
    return {"kind": kind, "batch": batch, "frames": frames, "rounds": rounds,
            "model_fps": statistics.median(model_fps), "pipeline_fps": statistics.median(pipe_fps),
            "ratio": statistics.median(ratios), "ratios": ratios, "model_busy": statistics.median(busy),
            "stages": last["stages"],
            "drawn_per_frame": m["drawn_per_frame"]}


def _synthetic_detections(n: int, h: int = 480, w: int = 640, seed: int = 0) -> Dict[str, torch.Tensor]:
    """n detections of COCO-like sizes (sqrt(area) log-uniform from 12 px to 60% of the shorter side) with
    smooth 28x28 mask probabilities (an ellipse's soft edge, as a trained mask head gives)."""
    g = torch.Generator().manual_seed(seed)
    side = torch.exp(torch.empty(n).uniform_(np.log(12), np.log(0.6 * min(h, w)), generator=g))
    aspect = torch.exp(torch.empty(n).uniform_(-0.7, 0.7, generator=g))
    bw, bh = side * aspect.sqrt(), side / aspect.sqrt()
    x0 = torch.rand(n, generator=g) * (w - bw).clamp(min=1)
    y0 = torch.rand(n, generator=g) * (h - bh).clamp(min=1)
    boxes = torch.stack((x0, y0, x0 + bw, y0 + bh), 1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 28), indexing="ij")
    radius = 0.6 + 0.3 * torch.rand(n, 1, 1, generator=g)
    probs = torch.sigmoid(10 * (radius - (xx ** 2 + yy ** 2).sqrt()))[:, None]
    return {"boxes": boxes, "scores": torch.rand(n, generator=g), "labels": torch.randint(1, 81, (n,), generator=g),
            "mask_probs": probs}


def time_results_writer(images: int, dets: int, reference_images: int, progress=print) -> Dict:
    """Seconds to write a COCO results JSON with RLE masks, ours for all images, the evaluator's path
    timed on `reference_images` of them and scaled."""
    from resdet.detection.postprocess import paste_masks
    from resdet.evaluation.coco import instances_to_coco_results
    from resdet.evaluation.rle import compact_instances_to_coco_results

    h, w = 480, 640
    variants = [_synthetic_detections(dets, h, w, seed=k) for k in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        results = []
        for i in range(images):
            results += compact_instances_to_coco_results(variants[i % len(variants)], i + 1, (h, w))
        with open(os.path.join(tmp, "ours.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, separators=(",", ":"))
        ours, ours_cpu = time.perf_counter() - start, time.process_time() - cpu
        size_mb = os.path.getsize(os.path.join(tmp, "ours.json")) / 2 ** 20
        progress(f"  results: ours {images} images x {dets} detections in {ours:.1f} s ({ours_cpu:.1f} s of CPU, "
                 f"{size_mb:.0f} MiB)")
        pasted = []
        for v in variants[:reference_images]:
            p = {k: t for k, t in v.items() if k != "mask_probs"}
            p["masks"] = paste_masks(v["mask_probs"], v["boxes"], (h, w))  # as the model returns them (not timed)
            pasted.append(p)
        start, cpu = time.perf_counter(), time.process_time()
        ref = []
        for i in range(reference_images):
            ref += instances_to_coco_results(pasted[i % len(pasted)], i + 1)
        with open(os.path.join(tmp, "ref.json"), "w", encoding="utf-8") as f:
            json.dump(ref, f)
        per_image = (time.perf_counter() - start) / reference_images
        per_image_cpu = (time.process_time() - cpu) / reference_images
    # CPU seconds as well: on a machine shared with other jobs they are the work itself (one thread each)
    return {"kind": "results", "images": images, "dets": dets, "ours_s": ours, "reference_s": per_image * images,
            "ours_cpu_s": ours_cpu, "reference_cpu_s": per_image_cpu * images,
            "reference_images_timed": reference_images, "ratio": per_image * images / ours,
            "cpu_ratio": per_image_cpu * images / max(ours_cpu, 1e-9), "mib": size_mb}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ratio = ours / reference")
    if not ({"video", "folder"} <= set(args.skip)):
        predictor = _predictor(args)
        if args.score is not None:
            predictor.score_threshold = args.score
        print(f"model: {args.weights or args.config or 'untrained R50-FPN (configs/coco_r50.yaml)'} on "
              f"{predictor.device}; drawing detections scoring >= {predictor.score_threshold}")
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.folder or _photo_folder(os.path.join(tmp, "photos"), args.frames, args.size)
            video = args.video or _video_from(folder, os.path.join(tmp, "video.mp4"), args.frames)
            kw = dict(frames=args.frames, rounds=args.rounds, workers=args.workers)
            if "video" not in args.skip:
                rows.append(time_pipeline(predictor, "video", video, batch=args.batch, **kw))
            if "folder" not in args.skip:
                for b in sorted({1, args.batch}):
                    rows.append(time_pipeline(predictor, "folder", folder, batch=b, **kw))
    if "results" not in args.skip:
        rows.append(time_results_writer(args.results_images, args.results_dets, args.reference_images))
    for r in rows:
        if r["kind"] == "results":
            print(f"results JSON, {r['images']} images x {r['dets']} detections with RLE masks: ours {r['ours_s']:.1f} s "
                  f"({r['ours_cpu_s']:.1f} s of CPU; {r['mib']:.0f} MiB), the evaluator's path {r['reference_s']:.0f} s "
                  f"({r['reference_cpu_s']:.0f} s of CPU; timed on {r['reference_images_timed']} images, scaled): "
                  f"{r['ratio']:.1f}x ({r['cpu_ratio']:.1f}x in CPU time)")
        else:
            print(f"{r['kind']} (batch {r['batch']}, {r['frames']} frames, median of {r['rounds']}): pipeline "
                  f"{r['pipeline_fps']:.3g} frames/s with drawing = {100 * r['ratio']:.0f}% of the model alone "
                  f"({r['model_fps']:.3g} frames/s), the model busy {100 * r['model_busy']:.0f}% of the pipeline's run; "
                  f"{r['drawn_per_frame']:.1f} detections drawn per frame")
            print("\n".join(r["stages"]))
    folder_rows = {r["batch"]: r for r in rows if r["kind"] == "folder"}
    if len(folder_rows) == 2:
        b = max(folder_rows)
        print(f"folder: batch {b} pipeline / batch 1 pipeline = "
              f"{folder_rows[b]['pipeline_fps'] / folder_rows[1]['pipeline_fps']:.2f}x")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0
