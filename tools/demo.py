#!/usr/bin/env python
"""Draw a model's detections: images (files or folders) in, pictures with boxes, masks, labels and
scores out.

    python tools/demo.py --config configs/quickstart_shapes.yaml --weights output/quickstart_shapes/model_final.pth \
        --input datasets/shapes/val_*/images --output output/demo [--score 0.5] [KEY VALUE ...]
    python tools/demo.py --exported output/export/coco_r50.onnx --input images/ --output output/demo
        (a file from tools/export.py, .onnx or .pt2: resize, class names and thresholds from its metadata)
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="model config (YAML), for the eager model")
    p.add_argument("--exported", default="", help="an exported detector (tools/export.py) instead of --config")
    p.add_argument("--device", default="", help="with --exported: cpu or cuda (default: ONNX on the CPU, a .pt2 "
                   "where it was traced)")
    p.add_argument("--weights", default="", help="checkpoint (default: MODEL.WEIGHTS)")
    p.add_argument("--input", nargs="+", required=True, help="image files and/or folders of images")
    p.add_argument("--output", required=True, help="folder for the drawn pictures")
    p.add_argument("--score", type=float, default=None, help="draw detections scoring at least this "
                   "(default TEST.VIS_SCORE_THRESHOLD)")
    p.add_argument("--limit", type=int, default=0, help="at most this many images (0: all)")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    # Intermixed: options may come before, between or after the KEY VALUE pairs (not right after
    # --input, which takes every name that follows it).
    args = p.parse_intermixed_args(argv)
    if bool(args.config) == bool(args.exported):
        p.error("give either --config (the eager model) or --exported FILE (a file from tools/export.py)")
    if args.exported and (args.weights or args.opts):
        p.error("--weights and KEY VALUE overrides apply to --config; an exported file carries its weights and settings")
    return args


def list_images(inputs):
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"--input '{item}' is neither an image file nor a folder")
    if not paths:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {inputs}")
    return paths


def main(argv=None):
    args = parse_args(argv)
    from tqdm import tqdm

    from resdet.config import load_config
    from resdet.predictor import DetectionPredictor
    from resdet.utils.visualize import save_image

    if args.exported:
        predictor = DetectionPredictor.from_exported(args.exported, device=args.device or None)
    else:
        predictor = DetectionPredictor.from_config(load_config(args.config, args.opts), weights=args.weights)
    if args.score is not None:
        predictor.score_threshold = args.score
    paths = list_images(args.input)[: args.limit or None]
    os.makedirs(args.output, exist_ok=True)
    written = []
    for path in tqdm(paths, desc="demo"):
        instances = predictor(path)
        keep = int((instances["scores"] >= predictor.score_threshold).sum())
        name = os.path.splitext(os.path.basename(path))[0] + ".png"
        written.append(save_image(predictor.draw(path, instances), os.path.join(args.output, name)))
        tqdm.write(f"{path}: {keep} detections >= {predictor.score_threshold}: "
                   + ", ".join(f"{n} {s:.2f}" for n, s in zip(instances["class_names"], instances["scores"].tolist())
                               if s >= predictor.score_threshold))
    print(f"Wrote {len(written)} pictures to {args.output}")
    return written


if __name__ == "__main__":
    main()
