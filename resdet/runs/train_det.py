"""Detection training and evaluation runs (what tools/train_det.py and tools/eval.py call).

    python tools/train_det.py CONFIG [--resume] [--eval-only] [KEY VALUE ...]
    torchrun --nproc_per_node 8 tools/train_det.py CONFIG ...          (DDP; multi-node with --nnodes)

One run: torchrun/DDP setup, seed, OUTPUT_DIR/config.yaml (engine.default_setup) -> model from the
config -> optimizer with the linear lr scaling rule, warm-up schedule, grad scaler, checkpointer
(resumed from OUTPUT_DIR with --resume) -> endless, aspect-grouped, sharded training loader starting at
the resumed iteration -> Trainer with metrics (metrics.jsonl + TensorBoard), tqdm ETA, atomic periodic
checkpoints and periodic COCO evaluation -> final evaluation and a picture of predictions.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Dict, Optional, Sequence

import torch

__all__ = ["build_argument_parser", "train_detection", "evaluate_only", "main"]

logger = logging.getLogger("resdet.train_det")


def build_argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train (or evaluate) a Faster/Mask R-CNN from a config.")
    p.add_argument("config", help="YAML config, e.g. configs/coco_r50.yaml or configs/quickstart_shapes.yaml")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUTPUT_DIR")
    p.add_argument("--eval-only", action="store_true",
                   help="only evaluate MODEL.WEIGHTS (or, with --resume, the newest checkpoint) on DATASETS.TEST")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, e.g. SOLVER.MAX_ITER 100")
    return p


def _check_classes(cfg, metadata) -> None:
    k = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if metadata.num_classes != k:
        raise ValueError(f"MODEL.ROI_HEADS.NUM_CLASSES is {k} but the training data has {metadata.num_classes} "
                         f"categories ({', '.join(metadata.thing_classes[:10])}...); set it to {metadata.num_classes}")


def _warn_frozen_random_backbone(cfg, resume: bool) -> None:
    # FrozenBN keeps its (identity) statistics and affine values fixed, and FREEZE_AT keeps the stem and
    # first stages at their random initialisation: such a run trains, but poorly. It is a plain mistake
    # (forgetting MODEL.BACKBONE.WEIGHTS), so say so loudly instead of letting a 90k-step job run on it.
    bb = cfg.MODEL.BACKBONE
    if bb.NORM == "FrozenBN" and not (bb.WEIGHTS or cfg.MODEL.WEIGHTS or resume):
        logger.warning("MODEL.BACKBONE.NORM is FrozenBN but neither MODEL.BACKBONE.WEIGHTS nor MODEL.WEIGHTS "
                       "is set: the backbone starts from random weights with frozen norms%s. Give pretrained "
                       "weights (tools/convert_weights.py --backbone, or tools/train_cls.py --export-backbone), "
                       "or train from scratch with MODEL.BACKBONE.NORM GN (or SyncBN) and FREEZE_AT 0.",
                       f" and stages up to FREEZE_AT {bb.FREEZE_AT} frozen" if bb.FREEZE_AT else "")


def _evaluate_all(cfg, model, device) -> Dict:
    from resdet.evaluation.inference import evaluate_detection_model

    results = {}
    for name in cfg.DATASETS.TEST:
        out_dir = os.path.join(cfg.OUTPUT_DIR, "inference", name)
        metrics = evaluate_detection_model(cfg, model, device, name, output_dir=out_dir)
        # per-category tables go to coco_eval.json; the metric writer takes the summary numbers
        results[name] = {t: {k: v for k, v in m.items() if k != "per_category"} for t, m in metrics.items()}
    return results if len(results) != 1 else next(iter(results.values()))


def _prediction_picture(cfg, model, num_images: int = 8) -> Optional[str]:
    """Predictions on the first images of the first test dataset, drawn into OUTPUT_DIR/predictions.png."""
    from resdet.data.catalog import get_detection_dataset
    from resdet.engine.distributed import is_main_process, unwrap_model
    from resdet.predictor import DetectionPredictor, save_prediction_pictures

    if not cfg.DATASETS.TEST or not is_main_process():
        return None
    records, meta = get_detection_dataset(cfg.DATASETS.TEST[0], filter_empty=False, check_images="none",
                                          instances_without_mask="keep")
    net = unwrap_model(model)
    was_training = net.training
    predictor = DetectionPredictor(net, meta.thing_classes, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST,
                                   score_threshold=cfg.TEST.VIS_SCORE_THRESHOLD,
                                   mask_threshold=cfg.TEST.MASK_THRESHOLD)
    path = save_prediction_pictures(predictor, [r["file_name"] for r in records[:num_images]],
                                    os.path.join(cfg.OUTPUT_DIR, "predictions.png"))
    net.train(was_training)
    logger.info("Predictions drawn on %d images of %s: %s", min(num_images, len(records)), meta.name, path)
    return path


def train_detection(cfg, resume: bool = False, eval_only: bool = False) -> Dict:
    from resdet.data.catalog import register_from_config
    from resdet.data.loader import build_detection_train_loader
    from resdet.detection.rcnn import build_detection_model
    from resdet.engine import build_trainer, build_training_state, cleanup, default_setup, prepare_model
    from resdet.evaluation.inference import check_evaluation_datasets

    cfg, device = default_setup(cfg)
    if not eval_only:
        _warn_frozen_random_backbone(cfg, resume)
    register_from_config(cfg)
    # the evaluation data is checked now, as evaluation will check it, not after a whole training run
    check_evaluation_datasets(cfg)
    model = prepare_model(build_detection_model(cfg), cfg, device)
    state = build_training_state(cfg, model, resume=resume)
    if eval_only:
        results = _evaluate_all(cfg, model, device)
        _prediction_picture(cfg, model)
        cleanup()
        return results

    loader = build_detection_train_loader(cfg, start_iter=state.start_iter)
    _check_classes(cfg, loader.metadata)
    trainer = build_trainer(cfg, model, loader, state, eval_fn=lambda: _evaluate_all(cfg, model, device))
    trainer.train()
    eval_hook = next((h for h in trainer.hooks if type(h).__name__ == "EvalHook"), None)
    results = dict(eval_hook.results) if eval_hook is not None else {}
    _prediction_picture(cfg, model)
    if results:
        from resdet.engine.distributed import is_main_process

        if is_main_process():
            with open(os.path.join(cfg.OUTPUT_DIR, "final_metrics.json"), "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
    cleanup()
    return results


def evaluate_only(cfg) -> Dict:
    return train_detection(cfg, eval_only=True)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    from resdet.config import load_config

    argv = list(sys.argv[1:] if argv is None else argv)
    # Flags may come anywhere (`CONFIG --resume KEY VALUE`); the overrides are a REMAINDER (so values
    # like "-1" stay values), which would swallow a flag written after CONFIG: move flags first.
    flags = [a for a in argv if a in ("--resume", "--eval-only")]
    args = build_argument_parser().parse_args(flags + [a for a in argv if a not in flags])
    cfg = load_config(args.config, args.opts)
    return train_detection(cfg, resume=args.resume, eval_only=args.eval_only)
