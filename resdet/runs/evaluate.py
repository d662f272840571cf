"""`tools/eval.py`: COCO evaluation with pycocotools (bbox and segm): the 12-number summary and a
per-category AP table, saved as coco_eval.json in a new folder.

A training run's checkpoint carries the run's resolved config, and is evaluated with it by default:
    python tools/eval.py --weights output/run/model_final.pth [--dataset NAME] [--output-dir DIR] [KEY VALUE ...]
With a config file (converted weights, or another config on purpose: every INPUT/MODEL/TEST key that
differs from the checkpoint's is named, and refused unless --allow-config-mismatch):
    python tools/eval.py --config configs/coco_r50.yaml --weights model_final.pth [KEY VALUE ...]
    torchrun --nproc_per_node N tools/eval.py --weights ...          (DDP inference, results gathered)
From a results file written earlier (no model):
    python tools/eval.py --gt annotations.json --results coco_instances_results.json [--iou-types bbox segm]
With --analyze, the evaluation is explained in <output folder>/analysis/ (index.html, analysis.json,
figures: error types, PR bands, confusion, thresholds, worst and best images; tools/analyze.py).
Both the ground truth and the results are validated first; a problem is an error naming the entry.
Results go to a new folder each time (_2, _3, ... after the first), never over the training run's own
inference/ results: <checkpoint folder>/eval/<checkpoint>_<dataset>/, or <results folder>/eval/<results
name>/ for a results file; --output-dir says otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from torch.distributed.elastic.multiprocessing.errors import record  # torchrun's failure summary shows the error

from resdet.evaluation.coco import BACKENDS


USAGE = """usage: python tools/eval.py --weights CHECKPOINT [--dataset NAME] [KEY VALUE ...]
       python tools/eval.py --gt ANNOTATIONS.json --results RESULTS.json [--iou-types bbox segm]

The two common forms:
    python tools/eval.py --weights output/coco_r101/model_final.pth
        a training run's checkpoint, evaluated with the config it was trained with, on its DATASETS.TEST
        (COCO box and mask mAP@[.5:.95] through pycocotools; --config CONFIG for converted weights)
    python tools/eval.py --gt instances_val2017.json --results coco_instances_results.json
        a COCO results file written earlier, scored against its ground truth

python tools/eval.py --help lists every option.
"""


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # nothing to evaluate: say how, briefly, instead of an argparse error
        print(USAGE, end="")
        raise SystemExit(2)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="model config (YAML); default: the config stored in the --weights checkpoint")
    p.add_argument("--weights", default="", help="checkpoint to evaluate (default: MODEL.WEIGHTS of --config)")
    p.add_argument("--dataset", default="", help="registered dataset name (default: DATASETS.TEST[0])")
    p.add_argument("--gt", help="ground-truth COCO JSON, to evaluate a results file")
    p.add_argument("--results", help="COCO results JSON to evaluate against --gt")
    p.add_argument("--iou-types", nargs="+", default=None, choices=["bbox", "segm"],
                   help="for --results: what to score (default: bbox and segm, as far as the results carry "
                        "them); a type asked for that the results lack is an error")
    p.add_argument("--output-dir", default="", help="where results and coco_eval.json go (default: a new folder "
                   "<checkpoint folder>/eval/<checkpoint>_<dataset>)")
    p.add_argument("--backend", default="", choices=("",) + BACKENDS,
                   help="COCOeval implementation (default: TEST.COCO_EVAL_BACKEND, i.e. pycocotools)")
    p.add_argument("--analyze", action="store_true",
                   help="also explain the evaluation (error types, PR bands, confusion matrix, per-class thresholds, "
                        "worst and best images) in <output folder>/analysis/index.html (tools/analyze.py)")
    p.add_argument("--images", default="",
                   help="with --results --analyze: the images' folder, for the pictures of the worst and best images")
    p.add_argument("--allow-config-mismatch", action="store_true",
                   help="evaluate with --config even where its INPUT/MODEL/TEST keys differ from the checkpoint's "
                        "training config (a warning names them; without this flag it is an error)")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    # Intermixed: options may come before, between or after the KEY VALUE pairs.
    args = p.parse_intermixed_args(argv)
    if args.results and (args.config or args.weights):
        p.error("give either --weights/--config (evaluate a model) or --gt and --results (evaluate a results file)")
    if not (args.results or args.config or args.weights):
        p.error("give --weights CHECKPOINT (a training checkpoint, evaluated with its own config), --config CONFIG "
                "[--weights W], or --gt GT --results RESULTS")
    if args.results and not args.gt:
        p.error("--results needs --gt, the ground truth it is scored against")
    if args.images and not (args.results and args.analyze):
        p.error("--images is for --results with --analyze (a model's dataset brings its own image folder)")
    return args


def inference_device(name: str, device_count: Optional[int] = None):
    """The device eval.py runs the model on, from MODEL.DEVICE: "cuda:N" is GPU N; plain "cuda" is this
    process's GPU under torchrun (LOCAL_RANK; the one visible GPU where the launcher shows each process
    only its own) and GPU 0 otherwise; without a GPU, the CPU with a warning. `device_count` stands in
    for torch.cuda.device_count() (tests)."""
    from resdet.utils.env import get_device

    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if under_torchrun else 0
    return get_device(name, local_rank=local_rank, device_count=device_count, cpu_fallback=True)


def evaluation_config(args):
    """The config to evaluate with: the checkpoint's own (plus KEY VALUE overrides) when --config is
    not given; --config (plus overrides) otherwise, checked against the checkpoint's when it has one."""
    from resdet.config import load_config
    from resdet.engine.checkpoint_config import config_for_checkpoint

    extra = ["TEST.COCO_EVAL_BACKEND", args.backend] if args.backend else []
    weights = args.weights
    if not weights and args.config:
        weights = load_config(args.config, args.opts).MODEL.WEIGHTS
        if not weights:
            print("warning: no --weights and no MODEL.WEIGHTS: evaluating an untrained model", file=sys.stderr)
            return load_config(args.config, args.opts + extra)
    return config_for_checkpoint(weights, args.config, args.opts + extra,
                                 on_mismatch="warn" if args.allow_config_mismatch else "error")


def new_output_dir(base: str, name: str, kind: str = "eval") -> str:
    """A folder no earlier evaluation wrote: <base>/<kind>/<name>, else <name>_2, _3, ... (made on rank 0
    and shared, so every process writes the same one)."""
    from resdet.engine import broadcast_object, is_main_process

    path = None
    if is_main_process():
        first = os.path.join(base, kind, name)
        for n in range(1, 100000):
            path = first if n == 1 else f"{first}_{n}"
            try:
                os.makedirs(path)  # exist_ok=False: claims the folder even against a concurrent eval
                break
            except FileExistsError:
                continue
    return broadcast_object(path)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


@record
def main(argv=None):
    return run(parse_args(argv))


def run_analysis(out: str, gt: str, results: str, iou_types, image_root: str, instances_without_mask: str,
                 options: Optional[dict] = None) -> dict:
    """The analysis of an evaluation (resdet/evaluation/analysis) in <out>/analysis/."""
    from resdet.evaluation.analysis.analyze import analyze_results

    folder = os.path.join(out, "analysis")
    report = analyze_results(gt, results, iou_types, output_dir=folder, image_root=image_root or None,
                             instances_without_mask=instances_without_mask, **(options or {}))
    print(f"Analysis: {os.path.join(folder, 'index.html')} (numbers in analysis.json)")
    return report


def run(args, analysis: Optional[dict] = None):
    """Evaluate as `args` (parse_args) say; with args.analyze, explain the evaluation too, with
    `analysis` options for resdet.evaluation.analysis.analyze.analyze_results (score_threshold, iou,
    gallery_size)."""
    if args.results:
        from resdet.config import load_config
        from resdet.evaluation.coco import evaluate_results_file

        out = args.output_dir or new_output_dir(os.path.dirname(os.path.abspath(args.results)), _stem(args.results))
        cfg = load_config(None, args.opts)  # KEY VALUE pairs, e.g. DATASETS.INSTANCES_WITHOUT_MASK ignore
        metrics = evaluate_results_file(args.gt, args.results, args.iou_types, output_dir=out,
                                        backend=args.backend or "pycocotools",
                                        instances_without_mask=cfg.DATASETS.INSTANCES_WITHOUT_MASK)
        print(f"Saved {os.path.join(out, 'coco_eval.json')}")
        if args.analyze:
            metrics["analysis"] = run_analysis(out, args.gt, args.results, args.iou_types, args.images,
                                               cfg.DATASETS.INSTANCES_WITHOUT_MASK, analysis)
        return metrics

    from resdet.detection.rcnn import build_detection_model
    from resdet.detection.tta import with_test_time_augmentation
    from resdet.detection.weights import load_detection_weights
    from resdet.engine import cleanup, init_distributed, is_main_process
    from resdet.engine.logging import json_safe
    from resdet.evaluation.inference import evaluate_detection_model
    from resdet.runs.train_det import refuse_cudnn_benchmark

    cfg = evaluation_config(args)
    if not (args.dataset or cfg.DATASETS.TEST):
        from resdet.config import ConfigError

        raise ConfigError("DATASETS.TEST is empty and no --dataset given: nothing to evaluate on")
    refuse_cudnn_benchmark(cfg)
    device = inference_device(cfg.MODEL.DEVICE)
    init_distributed(device=device, timeout_minutes=cfg.DIST.TIMEOUT_MINUTES)
    model = build_detection_model(cfg).to(device)
    if cfg.MODEL.WEIGHTS:
        load_detection_weights(model, cfg.MODEL.WEIGHTS, strict=True)
    model = with_test_time_augmentation(cfg, model)  # TEST.AUG.ENABLED: several views per image, merged
    if is_main_process() and hasattr(model, "views"):
        print(f"Test-time augmentation: {len(model.views)} views per image (shorter sides, mirrored): {model.views}")
    name = args.dataset or cfg.DATASETS.TEST[0]
    # next to the checkpoint, named after it and the dataset: never over the training's inference/<dataset>/
    weights = cfg.MODEL.WEIGHTS
    out = args.output_dir or new_output_dir(os.path.dirname(os.path.abspath(weights)) if weights else cfg.OUTPUT_DIR,
                                            f"{_stem(weights) if weights else 'untrained'}_{name}")
    metrics = evaluate_detection_model(cfg, model, device, name, output_dir=out)
    if is_main_process() and "inference" in metrics:
        print(json.dumps(json_safe(metrics["inference"])))
        print(f"Saved {os.path.join(out, 'coco_eval.json')} and coco_instances_results.json")
        if args.analyze:
            from resdet.data.catalog import dataset_files, register_from_config

            register_from_config(cfg)
            gt_json, image_root = dataset_files(name)
            types = ["bbox", "segm"] if cfg.MODEL.MASK_ON else ["bbox"]
            metrics["analysis"] = run_analysis(out, gt_json, os.path.join(out, "coco_instances_results.json"), types,
                                               image_root, cfg.DATASETS.INSTANCES_WITHOUT_MASK, analysis)
    cleanup()
    return metrics

