#!/usr/bin/env python
"""Train or evaluate an image classifier (the paper's ImageNet and CIFAR-10 recipes).

    python tools/train_cls.py configs/cifar10_resnet20.yaml                       # train
    python tools/train_cls.py configs/cifar10_resnet20.yaml --resume              # continue the newest checkpoint
    python tools/train_cls.py configs/imagenet_r50.yaml --eval-only MODEL.WEIGHTS out/model_final.pth \
        CLS.TEST.TEN_CROP True                                                     # 10-crop top-1/top-5 error
    python tools/train_cls.py CONFIG --export-backbone r50.pth MODEL.WEIGHTS out/model_final.pth
    torchrun --nproc_per_node=8 tools/train_cls.py configs/imagenet_r50.yaml      # DDP (multi-node too)

Trailing KEY VALUE pairs override the config (e.g. SOLVER.MAX_ITER 500 OUTPUT_DIR /tmp/run).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import resdet  # noqa: E402,F401  (sets NO_ALBUMENTATIONS_UPDATE before anything imports albumentations)
from resdet.config import load_config  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file (configs/cifar10_resnet20.yaml, configs/imagenet_r50.yaml, ...)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUTPUT_DIR")
    p.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS (or, with --resume, the newest checkpoint)")
    p.add_argument("--export-backbone", metavar="PATH", default="",
                   help="write the backbone of MODEL.WEIGHTS for train_det (MODEL.BACKBONE.WEIGHTS) and exit")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    # Intermixed: options may come before, between or after the KEY VALUE pairs.
    return p.parse_intermixed_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts)
    from resdet.classification.train import evaluate_only, export_from_config, train_classifier
    from resdet.engine.distributed import cleanup

    if args.export_backbone:
        from resdet.classification.model import build_classifier
        from resdet.engine.checkpoint import Checkpointer

        if not cfg.MODEL.WEIGHTS:
            raise SystemExit("--export-backbone needs MODEL.WEIGHTS (a train_cls checkpoint)")
        model = build_classifier(cfg)
        Checkpointer(cfg.OUTPUT_DIR, model).load_model(cfg.MODEL.WEIGHTS, strict=True)
        print(export_from_config(cfg, model, args.export_backbone))
        return 0

    try:  # the engine's default_setup joins torchrun's process group, if any
        if args.eval_only:
            weights = cfg.MODEL.WEIGHTS
            if args.resume:
                from resdet.engine.checkpoint import Checkpointer

                weights = Checkpointer(cfg.OUTPUT_DIR, None).latest() or weights
            results = evaluate_only(cfg, weights)
        else:
            results = train_classifier(cfg, resume=args.resume)
        from resdet.engine.distributed import is_main_process

        if is_main_process():
            print(json.dumps(results, indent=2))
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
