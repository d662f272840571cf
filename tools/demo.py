#!/usr/bin/env python
"""Draw a model's detections: images in, pictures with boxes, masks, labels and scores out.

A training checkpoint is drawn with the config it was trained with (stored in it):
    python tools/demo.py --weights output/run/model_final.pth --output output/demo            # the first 16
                                                              # images of its DATASETS.TEST[0] (its JSON's order)
    python tools/demo.py --weights output/run/model_final.pth --dataset my_val --limit 8 --output output/demo
    python tools/demo.py --weights output/run/model_final.pth --input photos/ img.jpg --output output/demo
With a config file (converted weights; or on purpose: INPUT/MODEL/TEST keys that differ from the
checkpoint's are refused unless --allow-config-mismatch):
    python tools/demo.py --config configs/quickstart_shapes.yaml --weights model.pth --input ... --output ...
[--score 0.5] [KEY VALUE ...] as for tools/eval.py. An exported model (a file from tools/export.py, .onnx
or .pt2; resize, class names and thresholds come from its metadata):
    python tools/demo.py --exported output/export/coco_r50.onnx --input images/ --output output/demo
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DATASET_LIMIT = 16  # images drawn from a dataset when --limit is not given


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="model config (YAML); default: the config stored in the --weights checkpoint")
    p.add_argument("--weights", default="", help="checkpoint (default: MODEL.WEIGHTS of --config)")
    p.add_argument("--exported", default="", help="an exported detector (tools/export.py) instead of a checkpoint")
    p.add_argument("--device", default="", help="with --exported: cpu or cuda (default: ONNX on the CPU, a .pt2 "
                   "where it was traced)")
    p.add_argument("--input", nargs="+", help="image files and/or folders of images")
    p.add_argument("--dataset", default="", help="draw the first --limit images of this registered dataset "
                   "(its JSON's order; the default without --input: DATASETS.TEST[0])")
    p.add_argument("--output", required=True, help="folder for the drawn pictures")
    p.add_argument("--score", type=float, default=None, help="draw detections scoring at least this "
                   "(default: TEST.SCORE_THRESH_PER_CLASS where set, else TEST.VIS_SCORE_THRESHOLD)")
    p.add_argument("--limit", type=int, default=None,
                   help=f"at most this many images (0: all; default all of --input, {DATASET_LIMIT} of a dataset)")
    p.add_argument("--allow-config-mismatch", action="store_true",
                   help="use --config even where its INPUT/MODEL/TEST keys differ from the checkpoint's (a warning)")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    # Intermixed: options may come before, between or after the KEY VALUE pairs (not right after
    # --input, which takes every name that follows it).
    args = p.parse_intermixed_args(argv)
    if args.exported:
        if args.config or args.weights or args.opts or args.dataset:
            p.error("--exported FILE carries its weights and settings: give it without --config, --weights, "
                    "--dataset or KEY VALUE overrides")
        if not args.input:
            p.error("--exported needs --input (image files or folders)")
    elif not (args.config or args.weights):
        p.error("give --weights CHECKPOINT (drawn with the config stored in it), --config CONFIG [--weights W], "
                "or --exported FILE")
    if args.input and args.dataset:
        p.error("give --input (image files or folders) or --dataset (a registered dataset), not both")
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


def dataset_images(cfg, name, limit):
    """The first `limit` images (0: all) of a registered dataset, in its JSON's order: images it was
    meant to be tested on, never whatever else shares a folder with them (training images)."""
    import json

    from resdet.data.catalog import dataset_files, get_detection_dataset, register_from_config

    register_from_config(cfg)
    records, _ = get_detection_dataset(name, filter_empty=False, check_images="none")  # validated, folder checked
    with open(dataset_files(name)[0], encoding="utf-8") as f:
        order = {img["id"]: i for i, img in enumerate(json.load(f)["images"])}
    records.sort(key=lambda r: order[r["image_id"]])
    return [r["file_name"] for r in records[: limit or None]]


def build_predictor(args):
    from resdet.config import load_config
    from resdet.predictor import DetectionPredictor

    weights = args.weights or load_config(args.config, args.opts).MODEL.WEIGHTS
    if not weights:  # a config and no weights at all: an untrained model (the predictor warns)
        return DetectionPredictor.from_config(load_config(args.config, args.opts))
    return DetectionPredictor.from_checkpoint(weights, args.config, args.opts,
                                              allow_config_mismatch=args.allow_config_mismatch)


def main(argv=None):
    args = parse_args(argv)
    from tqdm import tqdm

    from resdet.config import ConfigError
    from resdet.utils.visualize import save_image

    if args.exported:
        from resdet.predictor import DetectionPredictor

        predictor, cfg = DetectionPredictor.from_exported(args.exported, device=args.device or None), None
    else:
        predictor = build_predictor(args)
        cfg = predictor.cfg
    if args.score is not None:  # one threshold for every class, over TEST.SCORE_THRESH_PER_CLASS too
        predictor.score_threshold, predictor.class_score_thresholds = args.score, None
    if args.input:
        paths = list_images(args.input)[: args.limit or None]
    else:
        name = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
        if not name:
            raise ConfigError("No --input, no --dataset and DATASETS.TEST is empty: say which images to draw")
        paths = dataset_images(cfg, name, DATASET_LIMIT if args.limit is None else args.limit)
    os.makedirs(args.output, exist_ok=True)
    written = []
    for path in tqdm(paths, desc="demo"):
        instances = predictor(path)
        keep = predictor.keep(instances).tolist()
        name = os.path.splitext(os.path.basename(path))[0] + ".png"
        written.append(save_image(predictor.draw(path, instances), os.path.join(args.output, name)))
        above = "its class's threshold" if predictor.class_score_thresholds else str(predictor.score_threshold)
        tqdm.write(f"{path}: {sum(keep)} detections >= {above}: "
                   + ", ".join(f"{n} {s:.2f}" for n, s, k in zip(instances["class_names"],
                                                                instances["scores"].tolist(), keep) if k))
    print(f"Wrote {len(written)} pictures to {args.output}")
    return written


if __name__ == "__main__":
    from resdet.runs.cli import run_tool  # user errors: one line, no traceback (--debug shows it)

    sys.exit(run_tool(main))
