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
import logging
import os
import sys
from typing import Dict, Optional, Sequence

from torch.distributed.elastic.multiprocessing.errors import record

__all__ = ["build_argument_parser", "refuse_cudnn_benchmark", "build_model", "train_detection", "evaluate_only",
           "main"]

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
    from resdet.config import ConfigError

    k = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if metadata.num_classes != k:
        raise ConfigError(f"MODEL.ROI_HEADS.NUM_CLASSES is {k} but the training data has {metadata.num_classes} "
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


def _without_backbone_weights(cfg):
    out = cfg.clone()
    out.defrost()
    out.MODEL.BACKBONE.WEIGHTS = ""
    out.freeze()
    return out


def refuse_cudnn_benchmark(cfg) -> None:
    """CUDNN_BENCHMARK is for fixed shapes; a detection run refuses it (see the message)."""
    if cfg.CUDNN_BENCHMARK:
        raise ValueError(
            "CUDNN_BENCHMARK True is for fixed-shape classification; detection changes its shapes every step "
            "(image sizes, and the mask head's batch is the number of foreground RoIs), so cuDNN would time "
            "every convolution algorithm again nearly every step (torchvision's Mask R-CNN on an H200: 9.95 "
            "img/s with it, 53.3 without, and 78 GiB of memory). Set CUDNN_BENCHMARK False"
        )


def build_model(cfg, device):
    """The detection model on `device`, channels_last if asked, in DDP when distributed (without
    broadcasting buffers every step: frozen BN's never change, GN has none, SyncBN keeps its own in
    step; rank 0's are broadcast before each evaluation instead), torch.compile if asked."""
    from resdet.detection.rcnn import build_detection_model
    from resdet.engine import prepare_model

    return prepare_model(build_detection_model(cfg), cfg, device, broadcast_buffers=False)


def _load_for_evaluation(cfg, model, resume: bool) -> None:
    """--eval-only: the newest checkpoint in OUTPUT_DIR (with --resume) or MODEL.WEIGHTS, loaded strictly:
    a checkpoint that does not fit the model is a CheckpointError naming the missing and unexpected keys
    (as tools/eval.py), never a warning followed by scores of a half-loaded model."""
    from resdet.engine.checkpoint import Checkpointer

    checkpointer = Checkpointer(cfg.OUTPUT_DIR, model)
    path = (checkpointer._latest_on_every_rank() if resume else None) or cfg.MODEL.WEIGHTS
    if not path:
        logger.warning("--eval-only without MODEL.WEIGHTS (or a checkpoint to --resume): evaluating an untrained model")
        return
    checkpointer.load_model(path, strict=True)
    logger.info("Evaluating %s", path)


def _resolve_training_length(cfg):
    """SOLVER.MAX_EPOCHS and the *_FRACTION keys turned into iterations (engine.schedules), counting the
    training images when epochs are asked for; the resolved config replaces config.yaml. Returns
    (cfg, (records, metadata) or None), the records to be reused by the training loader."""
    from resdet.config import save_config
    from resdet.data.loader import load_train_records
    from resdet.engine.distributed import is_main_process
    from resdet.engine.schedules import resolve_training_length

    records = None
    if cfg.SOLVER.MAX_EPOCHS > 0:
        records = load_train_records(cfg.DATASETS.TRAIN, cfg.DATASETS.FILTER_EMPTY_ANNOTATIONS,
                                     cfg.DATASETS.CHECK_IMAGES, cfg.DATALOADER.SKIP_BAD_IMAGES)
    resolved = resolve_training_length(cfg, len(records[0]) if records else 0)
    if resolved is not cfg and is_main_process():
        save_config(resolved, os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
    return resolved, records


def _evaluate_all(cfg, model, device) -> Dict:
    from resdet.engine.distributed import broadcast_buffers
    from resdet.evaluation.inference import evaluate_detection_model

    broadcast_buffers(model)  # DDP runs without per-step buffer broadcasts: score rank 0's model everywhere
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
                                   mask_threshold=cfg.TEST.MASK_THRESHOLD, resize_rounding=cfg.INPUT.RESIZE_ROUNDING,
                                   resize_backend=cfg.INPUT.RESIZE_BACKEND)
    path = save_prediction_pictures(predictor, [r["file_name"] for r in records[:num_images]],
                                    os.path.join(cfg.OUTPUT_DIR, "predictions.png"))
    net.train(was_training)
    logger.info("Predictions drawn on %d images of %s: %s", min(num_images, len(records)), meta.name, path)
    return path


def train_detection(cfg, resume: bool = False, eval_only: bool = False) -> Dict:
    from resdet.backbones.registry import resolve_backbone_config
    from resdet.data.catalog import register_from_config
    from resdet.data.loader import build_detection_train_loader
    from resdet.engine import Checkpointer, build_trainer, build_training_state, cleanup, default_setup
    from resdet.evaluation.inference import check_evaluation_datasets

    refuse_cudnn_benchmark(cfg)
    # the checkpoint a resumed run continues from replaces every weight: backbone weights are not needed
    resumed_from = Checkpointer(cfg.OUTPUT_DIR, None).latest() if resume else None
    cfg, backbone_note = resolve_backbone_config(cfg, checkpoint=resumed_from or "")
    cfg, device = default_setup(cfg)
    if backbone_note:
        logger.info(backbone_note)
    if not eval_only:
        _warn_frozen_random_backbone(cfg, resume)
    register_from_config(cfg)
    train_records = None
    if not eval_only:
        # the evaluation data is checked now, as evaluation will check it, not after a whole training run
        # (--eval-only: evaluation checks it first thing, after the weights have loaded)
        check_evaluation_datasets(cfg)
        cfg, train_records = _resolve_training_length(cfg)
    model = build_model(_without_backbone_weights(cfg) if resumed_from else cfg, device)
    if cfg.MODEL.WEIGHTS and not resume:  # a class-count mismatch named by its key, not a tensor-size list
        from resdet.detection.weights import check_num_classes
        from resdet.engine.checkpoint import load_checkpoint

        check_num_classes(load_checkpoint(cfg.MODEL.WEIGHTS), model, cfg.MODEL.WEIGHTS)
    if eval_only:
        _load_for_evaluation(cfg, model, resume)
        results = _evaluate_all(cfg, model, device)
        _prediction_picture(cfg, model)
        cleanup()
        return results

    state = build_training_state(cfg, model, resume=resume)
    loader = build_detection_train_loader(cfg, start_iter=state.start_iter, train_records=train_records)
    _check_classes(cfg, loader.metadata)
    trainer = build_trainer(cfg, model, loader, state, eval_fn=lambda: _evaluate_all(cfg, model, device))
    trainer.train()
    eval_hook = next((h for h in trainer.hooks if type(h).__name__ == "EvalHook"), None)
    results = dict(eval_hook.results) if eval_hook is not None else {}
    _prediction_picture(cfg, model)
    if results:
        from resdet.engine.distributed import is_main_process

        if is_main_process():  # strict JSON: a metric that is NaN (no ground truth of a size) is null
            from resdet.engine.logging import write_json

            write_json(results, os.path.join(cfg.OUTPUT_DIR, "final_metrics.json"))
    cleanup()
    return results


def evaluate_only(cfg) -> Dict:
    return train_detection(cfg, eval_only=True)


@record  # under torchrun, the failure summary then shows this process's error, not only its exit code
def main(argv: Optional[Sequence[str]] = None) -> Dict:
    from resdet.config import load_config

    argv = list(sys.argv[1:] if argv is None else argv)
    # Flags may come anywhere (`CONFIG --resume KEY VALUE`); the overrides are a REMAINDER (so values
    # like "-1" stay values), which would swallow a flag written after CONFIG: move flags first.
    flags = [a for a in argv if a in ("--resume", "--eval-only")]
    args = build_argument_parser().parse_args(flags + [a for a in argv if a not in flags])
    cfg = load_config(args.config, args.opts)
    return train_detection(cfg, resume=args.resume, eval_only=args.eval_only)
