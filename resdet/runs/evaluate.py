"""`tools/eval.py`: COCO evaluation with pycocotools (bbox and segm): the 12-number summary and a
per-category AP table, saved as OUTPUT_DIR/.../coco_eval.json.

With a model (inference on the GPU, or the CPU when there is none):
    python tools/eval.py --config configs/coco_r50.yaml --weights model_final.pth [--dataset coco_2017_val]
        [--output-dir DIR] [KEY VALUE ...]
    torchrun --nproc_per_node N tools/eval.py --config ...           (DDP inference, results gathered)
From a results file written earlier (no model):
    python tools/eval.py --gt annotations.json --results coco_instances_results.json [--iou-types bbox segm]
Both the ground truth and the results are validated first; a problem is an error naming the entry.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from resdet.evaluation.coco import BACKENDS


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="model config (YAML), to evaluate a model")
    p.add_argument("--weights", default="", help="checkpoint to evaluate (default: MODEL.WEIGHTS)")
    p.add_argument("--dataset", default="", help="registered dataset name (default: DATASETS.TEST[0])")
    p.add_argument("--gt", help="ground-truth COCO JSON, to evaluate a results file")
    p.add_argument("--results", help="COCO results JSON to evaluate against --gt")
    p.add_argument("--iou-types", nargs="+", default=None, choices=["bbox", "segm"],
                   help="for --results: what to score (default: bbox and segm, as far as the results carry "
                        "them); a type asked for that the results lack is an error")
    p.add_argument("--output-dir", default="", help="where results and coco_eval.json go")
    p.add_argument("--backend", default="", choices=("",) + BACKENDS,
                   help="COCOeval implementation (default: TEST.COCO_EVAL_BACKEND, i.e. pycocotools)")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    # Intermixed: options may come before, between or after the KEY VALUE pairs.
    args = p.parse_intermixed_args(argv)
    if bool(args.config) == bool(args.results):
        p.error("give either --config (evaluate a model) or --gt and --results (evaluate a results file)")
    if args.results and not args.gt:
        p.error("--results needs --gt, the ground truth it is scored against")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.results:
        from resdet.config import load_config
        from resdet.evaluation.coco import evaluate_results_file

        out = args.output_dir or os.path.dirname(os.path.abspath(args.results))
        cfg = load_config(None, args.opts)  # KEY VALUE pairs, e.g. DATASETS.INSTANCES_WITHOUT_MASK ignore
        metrics = evaluate_results_file(args.gt, args.results, args.iou_types, output_dir=out,
                                        backend=args.backend or "pycocotools",
                                        instances_without_mask=cfg.DATASETS.INSTANCES_WITHOUT_MASK)
        print(f"Saved {os.path.join(out, 'coco_eval.json')}")
        return metrics

    from resdet.config import load_config
    from resdet.detection.rcnn import build_detection_model
    from resdet.engine import cleanup, init_distributed, is_main_process
    from resdet.engine.checkpoint import Checkpointer
    from resdet.evaluation.inference import evaluate_detection_model
    from resdet.predictor import _device_for

    cfg = load_config(args.config, args.opts + (["TEST.COCO_EVAL_BACKEND", args.backend] if args.backend else []))
    device = _device_for(cfg.MODEL.DEVICE)
    init_distributed(device_type=device.type)
    if device.type == "cuda":  # one GPU per process under torchrun
        import torch

        from resdet.engine import get_local_rank

        device = torch.device("cuda", get_local_rank())
    model = build_detection_model(cfg).to(device)
    weights = args.weights or cfg.MODEL.WEIGHTS
    if weights:
        Checkpointer("", model).load_model(weights, strict=True)
    else:
        print("warning: no --weights and no MODEL.WEIGHTS: evaluating an untrained model", file=sys.stderr)
    name = args.dataset or cfg.DATASETS.TEST[0]
    out = args.output_dir or os.path.join(cfg.OUTPUT_DIR, "inference", name)
    metrics = evaluate_detection_model(cfg, model, device, name, output_dir=out)
    if is_main_process() and "inference" in metrics:
        print(json.dumps(metrics["inference"]))
        print(f"Saved {os.path.join(out, 'coco_eval.json')} and coco_instances_results.json")
    cleanup()
    return metrics

