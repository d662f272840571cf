"""Classification training and evaluation on the engine: config in, checkpoints, metrics and a backbone out.

    results = train_classifier(cfg, resume=False)     # tools/train_cls.py CONFIG [--resume] [KEY VALUE ...]
    results = evaluate_only(cfg, weights)             # tools/train_cls.py CONFIG --eval-only MODEL.WEIGHTS X

Everything stateful lives in the engine (resdet.engine.build: setup, model preparation, training state,
Trainer with its hooks); this module only connects the classification pieces to it: the data (resdet.classification.data), the
model (ImageClassifier), the loss (cross-entropy, or timm's label smoothing / mixup-cutmix soft targets), timm's
weight EMA as a hook, and an evaluation that reports top-1/top-5 error on the test split, on the
held-out split if any, and on a fixed subset of the (unaugmented) training images.

The training data position is not stored separately: batches for step t depend only on (SEED, t), so
resuming at the checkpoint's iteration continues with the same data, and the Trainer restores the RNG
states for whatever else draws random numbers (mixup, dropout-free models draw none).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any, Callable, Dict

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record
from tqdm import tqdm

from resdet.backbones.registry import resolve_backbone_config
from resdet.config import load_config
from resdet.engine.build import build_trainer, build_training_state, default_setup, prepare_model
from resdet.engine.checkpoint import Checkpointer, atomic_write_text
from resdet.engine.distributed import (cleanup, get_rank, get_world_size, is_distributed, is_main_process, synchronize,
                                      unwrap_model)
from resdet.engine.hooks import EvalHook
from resdet.engine.trainer import HookBase
from resdet.evaluation.classification import ClassificationEvaluator

from resdet.classification.data import ClassificationData, build_classification_data
from resdet.classification.model import build_classifier, export_backbone
from resdet.classification.ten_crop import predict

__all__ = ["ClassificationLoss", "EMAHook", "evaluate_classifier", "train_classifier", "evaluate_only", "main"]

logger = logging.getLogger(__name__)

_AMP = {"": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class ClassificationLoss:
    """`loss_fn(model, (images, labels)) -> {"loss_cls": ...}` for the engine's Trainer.

    Plain cross-entropy (the paper); timm's LabelSmoothingCrossEntropy with smoothing > 0; with timm's
    Mixup/CutMix, the batch is mixed on the device and the loss is timm's SoftTargetCrossEntropy (the
    smoothing then goes into the soft targets).
    """

    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0, mixup_alpha: float = 0.0,
                 cutmix_alpha: float = 0.0, mixup_prob: float = 1.0, switch_prob: float = 0.5):
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=mixup_prob,
                               switch_prob=switch_prob, label_smoothing=label_smoothing, num_classes=num_classes)
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif label_smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=label_smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        i = cfg.CLS.INPUT
        return dict(num_classes=cfg.MODEL.CLASSIFIER.NUM_CLASSES, label_smoothing=cfg.MODEL.CLASSIFIER.LABEL_SMOOTHING,
                    mixup_alpha=i.MIXUP_ALPHA, cutmix_alpha=i.CUTMIX_ALPHA, mixup_prob=i.MIXUP_PROB,
                    switch_prob=i.MIXUP_SWITCH_PROB)

    def __call__(self, model: nn.Module, batch) -> Dict[str, torch.Tensor]:
        images, labels = batch
        if self.mixup is not None:
            if len(images) % 2:
                raise ValueError(f"Mixup/CutMix needs an even per-process batch; got {len(images)} images")
            images, labels = self.mixup(images.float(), labels)
        return {"loss_cls": self.criterion(model(images).float(), labels)}


class EMAHook(HookBase):
    """Update timm's ModelEmaV3 after every optimizer step (registered before checkpoint/eval hooks)."""

    def __init__(self, ema: nn.Module, model: nn.Module):
        self.ema, self.model = ema, model

    def after_step(self) -> None:
        self.ema.update(self.model, step=self.trainer.iter + 1)


def _sync_buffers(model: nn.Module) -> None:
    # DDP broadcasts rank 0's buffers (BN running stats) at each forward, but every rank then updates
    # its own copy; evaluate with rank 0's so the shards are scored by one model (the one checkpointed).
    if is_distributed():
        for buf in model.buffers():
            dist.broadcast(buf, 0)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, batches, *, device: torch.device, amp: str = "",
                        channels_last: bool = False, topk=(1, 5), desc: str = "eval") -> Dict[str, float]:
    """Top-k error of `model` over `batches` (images [B, C, h, w] or ten crops [B, 10, C, h, w]), summed
    over processes. Restores the model's train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    _sync_buffers(model)
    ev = ClassificationEvaluator(topk)
    dtype = _AMP[amp]
    total = len(batches) if hasattr(batches, "__len__") else None
    for images, labels in tqdm(batches, desc=desc, total=total, leave=False, disable=not is_main_process()):
        images = images.to(device, non_blocking=True)
        if channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            scores = predict(model, images)
        ev.process(scores, labels.to(device))
    model.train(was_training)
    return ev.evaluate()


def _eval_fn(cfg, data: ClassificationData, models: Dict[str, nn.Module], device) -> Callable[[], Dict[str, Any]]:
    def run() -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for prefix, m in models.items():
            for name, batches in data.eval_sets.items():
                out[prefix + name] = evaluate_classifier(m, batches(), device=device, amp=cfg.SOLVER.AMP,
                                                         channels_last=cfg.SOLVER.CHANNELS_LAST,
                                                         desc=f"eval {prefix}{name}")
        return out
    return run


def _setup(cfg):
    cfg, backbone_note = resolve_backbone_config(cfg)  # the export then records what was built
    cfg, device = default_setup(cfg)
    if backbone_note:
        logger.info(backbone_note)
    data = build_classification_data(cfg, device, get_rank(), get_world_size())
    logger.info("Data: %d training images, %d classes, evaluation sets %s",
                data.num_train, data.num_classes, list(data.eval_sets))
    return cfg, device, data


def _write_results(cfg, results: Dict[str, Any], name: str) -> None:
    if is_main_process():
        atomic_write_text(json.dumps(results, indent=2) + "\n", os.path.join(cfg.OUTPUT_DIR, name))


def export_from_config(cfg, model: nn.Module, path: str) -> str:
    backbone = unwrap_model(model).backbone
    # the options the backbone was built with (VARIANT "auto" / SHORTCUT "" resolved)
    return export_backbone(model, path, name=cfg.MODEL.BACKBONE.NAME,
                           variant=getattr(backbone, "variant", cfg.MODEL.BACKBONE.VARIANT),
                           shortcut=getattr(backbone, "shortcut", cfg.MODEL.BACKBONE.SHORTCUT),
                           norm=cfg.MODEL.BACKBONE.NORM)


def evaluate_only(cfg, weights: str = "") -> Dict[str, Any]:
    """Load weights (a train_cls checkpoint or a plain state dict) and evaluate; results also go to
    OUTPUT_DIR/eval_results.json."""
    cfg, device, data = _setup(cfg)
    model = build_classifier(cfg).to(device)
    if cfg.SOLVER.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    weights = weights or cfg.MODEL.WEIGHTS
    if not weights:
        raise ValueError("--eval-only needs weights: set MODEL.WEIGHTS to a checkpoint (or pass --resume)")
    Checkpointer(cfg.OUTPUT_DIR, model).load_model(weights, strict=True)
    results = _eval_fn(cfg, data, {"": model}, device)()
    _write_results(cfg, results, "eval_results.json")
    return results


def train_classifier(cfg, resume: bool = False) -> Dict[str, Any]:
    """Train as cfg says (resuming from OUTPUT_DIR's newest checkpoint with `resume`); return the final
    evaluation results. Writes checkpoints, metrics.jsonl, TensorBoard events, config.yaml,
    final_results.json and backbone_final.pth (the backbone for train_det) under OUTPUT_DIR."""
    i = cfg.CLS.INPUT
    if cfg.SOLVER.STEP_MODE != "eager" and (i.MIXUP_ALPHA > 0 or i.CUTMIX_ALPHA > 0):
        # timm's Mixup draws its mixing on the host (numpy) each step: a captured or compiled step would
        # freeze one draw
        raise ValueError(f"SOLVER.STEP_MODE {cfg.SOLVER.STEP_MODE!r} cannot run CLS.INPUT.MIXUP_ALPHA / CUTMIX_ALPHA "
                         "(host-side random mixing every step); use SOLVER.STEP_MODE eager")
    cfg, device, data = _setup(cfg)
    model = build_classifier(cfg)
    if data.mean_image is not None:  # before DDP and the EMA copy, so every copy starts with it
        model.set_mean_image(data.mean_image)
    train_model = prepare_model(model, cfg, device)   # device, channels_last, DDP, torch.compile
    ema = None
    if cfg.CLS.EMA.ENABLED:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.CLS.EMA.DECAY)
    state = build_training_state(cfg, model, resume=resume, **({"ema": ema} if ema is not None else {}))
    if data.mean_image is not None and not torch.equal(model.pixel_mean_image[0], data.mean_image.to(device)):
        # MODEL.WEIGHTS (fine-tuning) brought another dataset's mean image: this data's is the right one
        logger.warning("MODEL.WEIGHTS held a different per-pixel mean; using this training set's")
        model.set_mean_image(data.mean_image)
        if ema is not None:
            ema.module.set_mean_image(data.mean_image)
    models = {"": model, **({"ema/": ema.module} if ema is not None else {})}
    trainer = build_trainer(cfg, train_model, data.train_batches(state.start_iter), state, device=device,
                            loss_fn=ClassificationLoss(**ClassificationLoss.from_config(cfg)),
                            eval_fn=_eval_fn(cfg, data, models, device))
    if ema is not None:
        # The EMA must be updated before the checkpoint and evaluation hooks of the same step run, or a
        # checkpoint would hold an EMA one step behind its model and resume would not be exact.
        trainer.register_hooks([EMAHook(ema, model)])
        trainer.hooks.insert(0, trainer.hooks.pop())
    trainer.train()
    results = next(h.results for h in trainer.hooks if isinstance(h, EvalHook))
    _write_results(cfg, results, "final_results.json")
    if is_main_process():
        path = export_from_config(cfg, model, os.path.join(cfg.OUTPUT_DIR, "backbone_final.pth"))
        logger.info("Backbone for detection (MODEL.BACKBONE.WEIGHTS): %s", path)
    synchronize()
    return results


_USAGE = r"""Train or evaluate an image classifier (the paper's ImageNet and CIFAR-10 recipes).

    python tools/train_cls.py configs/cifar10_resnet20.yaml                       # train
    python tools/train_cls.py configs/cifar10_resnet20.yaml --resume              # continue the newest checkpoint
    python tools/train_cls.py configs/imagenet_r50.yaml --eval-only MODEL.WEIGHTS out/model_final.pth \
        CLS.TEST.TEN_CROP True                                                     # 10-crop top-1/top-5 error
    python tools/train_cls.py CONFIG --export-backbone r50.pth MODEL.WEIGHTS out/model_final.pth
    torchrun --nproc_per_node=8 tools/train_cls.py configs/imagenet_r50.yaml      # DDP (multi-node too)

Trailing KEY VALUE pairs override the config (e.g. SOLVER.MAX_ITER 500 OUTPUT_DIR /tmp/run).
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=_USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file (configs/cifar10_resnet20.yaml, configs/imagenet_r50.yaml, ...)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUTPUT_DIR")
    p.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS (or, with --resume, the newest checkpoint)")
    p.add_argument("--export-backbone", metavar="PATH", default="",
                   help="write the backbone of MODEL.WEIGHTS for train_det (MODEL.BACKBONE.WEIGHTS) and exit")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    # Intermixed: options may come before, between or after the KEY VALUE pairs.
    return p.parse_intermixed_args(argv)


@record  # under torchrun, the failure summary then shows this process's error, not only its exit code
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)

    if args.export_backbone:
        if not cfg.MODEL.WEIGHTS:
            raise SystemExit("--export-backbone needs MODEL.WEIGHTS (a train_cls checkpoint)")
        cfg, _ = resolve_backbone_config(cfg)  # VARIANT auto: the one MODEL.WEIGHTS was trained with
        model = build_classifier(cfg)
        Checkpointer(cfg.OUTPUT_DIR, model).load_model(cfg.MODEL.WEIGHTS, strict=True)
        print(export_from_config(cfg, model, args.export_backbone))
        return 0

    try:  # the engine's default_setup joins torchrun's process group, if any
        if args.eval_only:
            weights = cfg.MODEL.WEIGHTS
            if args.resume:
                weights = Checkpointer(cfg.OUTPUT_DIR, None).latest() or weights
            results = evaluate_only(cfg, weights)
        else:
            results = train_classifier(cfg, resume=args.resume)
        if is_main_process():
            print(json.dumps(results, indent=2))
    finally:
        cleanup()
    return 0

