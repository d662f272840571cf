r"""`tools/predict.py`: a trained detector on folders, videos, cameras and streams, at the model's speed.

    python tools/predict.py --weights output/run/model_final.pth --input photos/ --output out/
    python tools/predict.py --weights model_final.pth --input clip.mp4 "shots/**/*.png" --output out/ --batch 4
    python tools/predict.py --weights model_final.pth --input 0 --output out/            # camera 0 (Ctrl-C ends)
    python tools/predict.py --weights model_final.pth --input rtsp://cam.local/live --output out/ --no-draw
    python tools/predict.py --weights model_final.pth --dataset my_val --output out/ --no-draw   # COCO results
    python tools/predict.py --exported model.onnx --input photos/ --output out/
    python tools/predict.py --weights model_final.pth --input photos/ --output out/ TEST.AUG.ENABLED True

--input takes any mix of image files, folders (recursive), glob patterns, video files, camera indices
and stream URLs (resdet/pipeline/sources.py). Decoding, the model (--batch images per call) and drawing /
writing run at the same time in their own threads (resdet/pipeline/stages.py); the end of the run says
how long each stage took per frame, and which one bounds the frame rate. Outputs (resdet/pipeline/job.py):
drawn pictures and .mp4 videos, a JSON line per video frame, and coco_instances_results.json for images
(with images.json where the ids are numbered here; --dataset or --coco-json give the dataset's ids and
category ids, so that `tools/eval.py --gt ... --results out/coco_instances_results.json` scores it).
An unreadable image or frame is reported by name and skipped; a camera or stream that cannot be opened,
or that stops, ends the run with one line; Ctrl-C finishes the frames under way and closes the outputs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["parse_args", "main", "category_ids_for", "batch_note"]

INTERRUPTED = 130  # the exit status of a run ended by Ctrl-C (128 + SIGINT)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="", help="a training checkpoint (run with the config stored in it)")
    p.add_argument("--config", help="model config (YAML) for weights without one (converted weights)")
    p.add_argument("--exported", default="", help="an exported detector (tools/export.py: .onnx, .pt2) instead")
    p.add_argument("--device", default="", help="with --exported: cpu or cuda")
    p.add_argument("--input", nargs="+", default=[], help="image files, folders, globs, video files, camera "
                   "indices (0, 1, ...) and stream URLs, in any mix")
    p.add_argument("--dataset", default="", help="every image of this registered dataset (its JSON's order), "
                   "with its image ids and category ids in the results")
    p.add_argument("--coco-json", default="", help="a COCO JSON (e.g. image_info_test-dev2017.json) whose "
                   "'images' give the results' image ids (by file name) and whose 'categories' their category ids")
    p.add_argument("--output", required=True, help="folder for the drawings, videos and results")
    p.add_argument("--batch", type=int, default=1, help="images per model call (padded into one batch)")
    p.add_argument("--workers", type=int, default=2, help="decoding threads")
    p.add_argument("--draw-workers", type=int, default=2, help="drawing / picture-writing threads")
    p.add_argument("--threads", type=int, default=0, help="torch threads for the model on the CPU (default: "
                   "torch's, one per core). On a CPU the decode and draw threads take their cores from the model: "
                   "with one core fewer for it, the pipeline keeps 90%% or more of the model's own rate (README.md)")
    p.add_argument("--no-draw", action="store_true", help="results only: no pictures, no videos")
    p.add_argument("--no-results", action="store_true", help="pictures and videos only: no JSON")
    p.add_argument("--score", type=float, default=None, help="draw detections scoring at least this (default "
                   "TEST.VIS_SCORE_THRESHOLD); the results hold every detection the model returns")
    p.add_argument("--codec", default="", help="four-character video codec for the .mp4 files (default: avc1 "
                   "where this OpenCV can write it, else mp4v)")
    p.add_argument("--stream-timeout", type=float, default=10.0,
                   help="seconds a stream may take to open or to deliver a frame before it counts as stopped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-config-mismatch", action="store_true",
                   help="use --config even where its INPUT/MODEL/TEST keys differ from the checkpoint's (a warning)")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides (e.g. TEST.AUG.ENABLED True)")
    args = p.parse_intermixed_args(argv)
    if args.exported and (args.config or args.weights or args.opts):
        p.error("--exported FILE carries its weights and settings: give it without --config, --weights or KEY VALUE "
                "overrides")
    if not (args.exported or args.weights or args.config):
        p.error("give --weights CHECKPOINT (run with the config stored in it), --config CONFIG [--weights W], "
                "or --exported FILE")
    if bool(args.input) == bool(args.dataset):
        p.error("give --input (files, folders, globs, videos, cameras, streams) or --dataset NAME, one of them")
    if args.dataset and args.coco_json:
        p.error("--dataset brings its own image and category ids: give it without --coco-json")
    if args.dataset and args.exported:
        p.error("--dataset needs the model's config (a checkpoint); with --exported give --input and --coco-json")
    if args.threads < 0:
        p.error(f"--threads must be at least 1 (0: torch's default); got {args.threads}")
    if args.batch < 1 or args.workers < 1 or args.draw_workers < 1:
        p.error("--batch, --workers and --draw-workers must be at least 1")
    if args.no_draw and args.no_results:
        p.error("--no-draw and --no-results together leave nothing to write")
    return args


def _predictor(args):
    from resdet.config import load_config
    from resdet.predictor import DetectionPredictor

    if args.exported:
        return DetectionPredictor.from_exported(args.exported, device=args.device or None)
    weights = args.weights or load_config(args.config, args.opts).MODEL.WEIGHTS
    if not weights:  # a config and no weights at all: an untrained model (the predictor warns)
        return DetectionPredictor.from_config(load_config(args.config, args.opts))
    return DetectionPredictor.from_checkpoint(weights, args.config, args.opts,
                                              allow_config_mismatch=args.allow_config_mismatch)


def batch_note(cfg, batch: int) -> str:
    """A line saying that a GroupNorm network's detections depend on --batch (its normalisation sees the
    padding of the batch), where --batch differs from the batch tools/eval.py uses; else ""."""
    if cfg is None or batch == cfg.TEST.IMS_PER_BATCH:
        return ""
    if not str(cfg.MODEL.BACKBONE.NORM).upper().startswith("GN"):
        return ""
    return (f"note: --batch {batch} pads the images into batches of {batch}, and this GroupNorm network's detections "
            f"depend on the padding: tools/eval.py's (TEST.IMS_PER_BATCH {cfg.TEST.IMS_PER_BATCH}) may differ slightly")


def _categories(path: str) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return sorted(json.load(f).get("categories", []), key=lambda c: c["id"])


def category_ids_for(predictor, coco_json: str = "", dataset_json: str = "") -> Tuple[Optional[Dict[int, int]], List[dict]]:
    """(label 1..K -> category id, the categories) for the results: the categories of `coco_json` or
    `dataset_json` (sorted ids -> labels 1..K, the data room's rule), else those of the model's
    DATASETS.TEST[0], else the labels themselves (None) with categories named by the class names."""
    from resdet.config import ConfigError
    from resdet.data.catalog import dataset_files, register_from_config

    k = len(predictor.class_names) or None
    source = coco_json or dataset_json
    if not source and predictor.cfg is not None and predictor.cfg.DATASETS.TEST:
        try:
            register_from_config(predictor.cfg)
            source = dataset_files(predictor.cfg.DATASETS.TEST[0])[0]
        except (KeyError, OSError, ValueError):
            source = ""
    cats = _categories(source) if source and os.path.isfile(source) else []
    if cats:
        num = predictor.model.num_classes if hasattr(predictor.model, "num_classes") else k
        if num is not None and len(cats) != num:
            raise ConfigError(f"'{source}' has {len(cats)} categories but the model has {num} classes: its "
                              "category ids cannot be matched to the model's labels")
        return {i + 1: int(c["id"]) for i, c in enumerate(cats)}, cats
    return None, [{"id": i + 1, "name": n} for i, n in enumerate(predictor.class_names)]


def _dataset_sources(predictor, name: str):
    """An ImageFiles of every image of a registered dataset (its JSON's order) and path -> image id."""
    from resdet.data.catalog import dataset_files, get_detection_dataset, register_from_config
    from resdet.pipeline.sources import ImageFiles

    register_from_config(predictor.cfg)
    records, _ = get_detection_dataset(name, filter_empty=False, check_images="none")
    json_file, image_root = dataset_files(name)
    with open(json_file, encoding="utf-8") as f:
        order = {img["id"]: i for i, img in enumerate(json.load(f)["images"])}
    records.sort(key=lambda r: order[r["image_id"]])
    paths = [r["file_name"] for r in records]
    rel = [os.path.relpath(p, image_root) for p in paths]
    return [ImageFiles(paths, rel, name)], {r["file_name"]: int(r["image_id"]) for r in records}, json_file


def _image_ids_from(coco_json: str, sources) -> Dict[str, int]:
    """path -> image id for every input image, matched by its path below its folder, else its file name."""
    from resdet.pipeline.sources import SourceError

    with open(coco_json, encoding="utf-8") as f:
        images = json.load(f).get("images", [])
    by_name = {img["file_name"]: int(img["id"]) for img in images}
    by_base: Dict[str, List[int]] = {}
    for img in images:
        by_base.setdefault(os.path.basename(img["file_name"]), []).append(int(img["id"]))
    ids, missing = {}, []
    for s in sources:
        if s.kind != "images":
            continue
        for path in s.paths:
            rel = s.relative_of[path].replace(os.sep, "/")
            hit = by_name.get(rel)
            if hit is None and len(by_base.get(os.path.basename(path), [])) == 1:
                hit = by_base[os.path.basename(path)][0]
            if hit is None:
                missing.append(path)
            else:
                ids[path] = hit
    if missing:
        raise SourceError(f"{len(missing)} input image(s) are not in '{coco_json}' 'images' (by file name), e.g. "
                          f"{', '.join(missing[:3])}")
    return ids


def _summary(report, batch: int, written: Dict[str, List[str]], output: str) -> None:
    fps = report.frames_per_second
    print(f"{report.frames} frames in {report.wall:.1f} s: {fps:.2f} frames/s"
          + (f"; {len(report.skipped)} skipped (unreadable, listed above)" if report.skipped else ""))
    print("Time per stage:")
    for line in report.stage_lines(batch):
        print(line)
    parts = [f"{len(v)} {k}" for k, v in written.items() if v]
    print(f"Wrote {', '.join(parts) or 'nothing'} to {output}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from resdet.pipeline.job import PredictionJob
    from resdet.pipeline.outputs import choose_codec
    from resdet.pipeline.sources import SourceError, open_sources
    from resdet.pipeline.stages import run_pipeline

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    # every input opened before the model loads: a camera or stream that does not open stops the run at once
    sources = [] if args.dataset else open_sources(args.input, stream_timeout_s=args.stream_timeout)
    try:
        predictor = _predictor(args)
    except BaseException:
        for s in sources:
            s.close()
        raise
    if args.score is not None:
        predictor.score_threshold = args.score
    note = batch_note(predictor.cfg, args.batch)
    if note:
        print(note)
    image_ids, dataset_json = None, ""
    if args.dataset:
        sources, image_ids, dataset_json = _dataset_sources(predictor, args.dataset)
    try:
        if args.coco_json:
            image_ids = _image_ids_from(args.coco_json, sources)
        category_ids, categories = category_ids_for(predictor, args.coco_json, dataset_json)
        codec = ""
        if not args.no_draw and any(s.kind != "images" for s in sources):
            codec, note = choose_codec(args.codec)
            if note:
                print(note)
        job = PredictionJob(predictor, args.output, draw=not args.no_draw, results=not args.no_results, codec=codec,
                            category_ids=category_ids, image_ids=image_ids)
        try:
            report = run_pipeline(sources, job, batch_size=args.batch, decode_workers=args.workers,
                                  draw_workers=args.draw_workers, progress=not args.no_progress)
        finally:
            written = job.close(categories)  # also after an error or Ctrl-C: videos play, results are whole
    finally:
        for s in sources:
            s.close()
    _summary(report, args.batch, written, args.output)
    for s in sources:
        if getattr(s, "ended_early", None):
            print(f"note: {s.ended_early}")
    if report.interrupted:
        print(f"Interrupted (Ctrl-C): the outputs hold the {report.frames} frames written before it")
        return INTERRUPTED
    stopped = [s.stopped for s in sources if getattr(s, "stopped", None)]
    if stopped:  # a live source is meant to run until Ctrl-C: its end is an error, after the outputs are whole
        raise SourceError("; ".join(stopped) + f" (the {report.frames} frames before are written)")
    return 0
