"""`tools/analyze.py`: why the AP is what it is. An evaluation explained in one folder: analysis.json
(every number), PNG figures and index.html (open it in a browser; it needs nothing outside the folder).

A model (evaluated first, with its checkpoint's config, exactly as tools/eval.py does; the analysis goes
to the evaluation's folder, <checkpoint folder>/eval/<checkpoint>_<dataset>/analysis/):
    python tools/analyze.py --weights output/run/model_final.pth [--dataset NAME] [KEY VALUE ...]
A results file written earlier (the analysis goes to <results folder>/analysis/<results name>/):
    python tools/analyze.py --gt annotations.json --results coco_instances_results.json [--images DIR]
        [--iou-types bbox segm]
What it shows, per IoU type (bbox, segm): TIDE's error types as dAP, overall and per category; COCO's
analyze curves (C75, C50, Loc, Sim, Oth, BG, FN) overall, per category and per object size; a one-to-one
confusion matrix; precision, recall and F1 against the score threshold with each class's best threshold
and the TEST.SCORE_THRESH_PER_CLASS line to deploy with it; the worst and best images, drawn (with
--images, or a model's dataset). resdet/evaluation/analysis/ holds the definitions.
"""
from __future__ import annotations

import argparse
import os
import sys

from torch.distributed.elastic.multiprocessing.errors import record

USAGE = """usage: python tools/analyze.py --weights CHECKPOINT [--dataset NAME] [KEY VALUE ...]
       python tools/analyze.py --gt ANNOTATIONS.json --results RESULTS.json [--images DIR]

python tools/analyze.py --help lists every option.
"""


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(USAGE, end="")
        raise SystemExit(2)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="model config (YAML); default: the config stored in the --weights checkpoint")
    p.add_argument("--weights", default="", help="checkpoint to evaluate and analyse")
    p.add_argument("--dataset", default="", help="registered dataset name (default: DATASETS.TEST[0])")
    p.add_argument("--allow-config-mismatch", action="store_true",
                   help="as tools/eval.py: use --config even where it differs from the checkpoint's config")
    p.add_argument("--gt", help="ground-truth COCO JSON (with --results)")
    p.add_argument("--results", help="COCO results JSON to analyse against --gt")
    p.add_argument("--images", default="", help="with --results: the images' folder (file_name in --gt is relative "
                   "to it), for the pictures of the worst and best images; without it they are listed, not drawn")
    p.add_argument("--iou-types", nargs="+", default=None, choices=["bbox", "segm"],
                   help="with --results: what to analyse (default: bbox and segm, as far as the results carry them)")
    p.add_argument("--output-dir", default="", help="where the analysis goes (default: see above)")
    p.add_argument("--score", type=float, default=None,
                   help="one score threshold for the confusion matrix and the pictures (default: each class's "
                        "best-F1 threshold)")
    p.add_argument("--iou", type=float, default=0.5,
                   help="IoU of a true positive for the error types, thresholds and confusion matrix (default 0.5)")
    p.add_argument("--gallery", type=int, default=8, help="worst and best images drawn, each (default 8; 0: none)")
    p.add_argument("--jobs", type=int, default=1,
                   help="2: analyse bbox and segm in two processes (pays on two free cores: see the README)")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    args = p.parse_intermixed_args(argv)
    if args.results and (args.config or args.weights):
        p.error("give either --weights/--config (evaluate and analyse a model) or --gt and --results")
    if not (args.results or args.config or args.weights):
        p.error("give --weights CHECKPOINT, --config CONFIG [--weights W], or --gt GT --results RESULTS")
    if args.results and not args.gt:
        p.error("--results needs --gt, the ground truth it is scored against")
    if args.images and not args.results:
        p.error("--images is for --results (a model's dataset brings its own image folder)")
    if not 0.1 <= args.iou <= 0.95:
        p.error(f"--iou must be between 0.1 and 0.95, got {args.iou}")
    if args.gallery < 0:
        p.error(f"--gallery must be >= 0, got {args.gallery}")
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    return args


@record
def main(argv=None):
    args = parse_args(argv)
    options = {"score_threshold": args.score, "iou": args.iou, "gallery_size": args.gallery, "jobs": args.jobs}
    if args.results:
        from resdet.config import load_config
        from resdet.evaluation.analysis.analyze import analyze_results

        from .evaluate import new_output_dir

        for what, path in (("Results", args.results), ("Ground-truth annotation", args.gt)):
            if not os.path.isfile(path):  # before a folder is made for it
                raise FileNotFoundError(f"{what} file not found: '{path}'")
        stem = os.path.splitext(os.path.basename(args.results))[0]
        out = args.output_dir or new_output_dir(os.path.dirname(os.path.abspath(args.results)), stem, "analysis")
        cfg = load_config(None, args.opts)  # KEY VALUE pairs, e.g. DATASETS.INSTANCES_WITHOUT_MASK ignore
        report = analyze_results(args.gt, args.results, args.iou_types, output_dir=out,
                                 image_root=args.images or None,
                                 instances_without_mask=cfg.DATASETS.INSTANCES_WITHOUT_MASK, **options)
        print(f"Analysis: {os.path.join(out, 'index.html')} (numbers in analysis.json)")
        return report
    from .evaluate import parse_args as eval_args, run

    argv = ["--analyze"]
    for flag, value in (("--config", args.config), ("--weights", args.weights), ("--dataset", args.dataset),
                        ("--output-dir", args.output_dir)):
        if value:
            argv += [flag, value]
    if args.allow_config_mismatch:
        argv.append("--allow-config-mismatch")
    return run(eval_args(argv + list(args.opts)), analysis=options)
