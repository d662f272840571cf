#!/usr/bin/env python
"""Print a model's parameters, FLOPs and output shapes: a registry backbone by name, or the detection
model (or classifier) a config describes, per component.

    python tools/model_info.py resnet50
    python tools/model_info.py cifar_resnet110 --size 32
    python tools/model_info.py resnet101 --variant v1 --size 800 1216
    python tools/model_info.py --config configs/coco_r50.yaml --size 800 1216 [KEY VALUE ...]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resdet.backbones import build_backbone  # noqa: E402
from resdet.utils.model_stats import model_summary, output_shapes  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="a registry name (see resdet.backbones.list_backbones()) or timm/<model>")
    p.add_argument("--config", help="a YAML config: report the model it builds (detection or classifier)")
    p.add_argument("--size", type=int, nargs="+", default=None,
                   help="input H [W] (default 224, or 32 for cifar_* models)")
    p.add_argument("--variant", default="v1.5", help="v1 (stride in 1x1, the paper) or v1.5 (torchvision)")
    p.add_argument("--shortcut", default="", help="A, B or C (default: the family's own)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    # KEY VALUE overrides (with --config) are the leftovers: an argparse REMAINDER would also swallow
    # flags written after the name (`resnet50 --json`), and with --config the first key lands in `name`.
    args, rest = p.parse_known_args(argv)
    bad = [a for a in rest if a.startswith("--")]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    if args.config and args.name:
        rest = [args.name] + rest
        args.name = None
    if bool(args.name) == bool(args.config) or (rest and not args.config):
        p.error("give a registry name, or --config CONFIG [KEY VALUE ...]")
    args.opts = rest
    if args.config:
        return config_info(args)

    size = args.size or [32 if args.name.startswith("cifar_") else 224]
    size = (size[0], size[-1])
    kwargs = dict(variant=args.variant)
    if args.shortcut:
        kwargs["shortcut"] = args.shortcut
    # Stage outputs come from the feature form of the model; parameters and FLOPs from the classifier.
    clf_kwargs = dict(kwargs, **({"num_classes": args.num_classes} if args.num_classes else {}))
    clf = build_backbone(args.name, **clf_kwargs)  # out_features=None: the classifier
    stages = tuple(n for n in ("stem", "res2", "res3", "res4", "res5") if n in clf._out_shapes)
    if args.name.startswith("timm/"):
        stages = ("res2", "res3", "res4", "res5")
    feats = build_backbone(args.name, **kwargs, out_features=stages, num_classes=None)
    info = model_summary(clf, size)
    # only the feature form's shapes: its FLOPs (a second fvcore trace) would go unused
    info["stages"] = {k: list(v) for k, v in output_shapes(feats, size).items()}
    info["strides"] = {k: s.stride for k, s in feats.output_shape().items()}
    info["name"] = args.name
    if args.json:
        print(json.dumps(info))
        return info
    print(f"{args.name} ({args.variant}), input {size[0]}x{size[1]}")
    print(f"  parameters: {info['parameters']:,}")
    print(f"  FLOPs:      {info['flops'] / 1e9:.3f} G (multiply-adds, fvcore)")
    print(f"  output:     {info['outputs']['logits']}")
    print("  stage   stride  shape")
    for k, shape in info["stages"].items():
        print(f"  {k:<7} {info['strides'][k]:>6}  {tuple(shape)}")
    return info


def config_info(args):
    from resdet.config import load_config

    cfg = load_config(args.config, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    if cfg.MODEL.META_ARCHITECTURE == "ImageClassifier":
        from resdet.classification.model import build_classifier

        size = args.size or [cfg.CLS.INPUT.CROP_SIZE]
        size = (size[0], size[-1])
        info = model_summary(build_classifier(cfg).eval(), size)
        info["outputs"] = {k: list(v) for k, v in info["outputs"].items()}
        if args.json:
            print(json.dumps(info))
        else:
            print(f"{args.config}: ImageClassifier ({cfg.MODEL.BACKBONE.NAME}), input {size[0]}x{size[1]}")
            print(f"  parameters: {info['parameters']:,}\n  FLOPs:      {info['flops'] / 1e9:.3f} G (multiply-adds, fvcore)")
        return info
    from resdet.detection.rcnn import build_detection_model
    from resdet.utils.model_stats import detection_model_summary

    size = tuple(args.size) if args.size else (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    size = (size[0], size[-1])
    model = build_detection_model(cfg)
    info = detection_model_summary(model, size)
    info["config"] = args.config
    if args.json:
        print(json.dumps(info))
        return info
    kind = "Mask R-CNN" if cfg.MODEL.MASK_ON else "Faster R-CNN"
    print(f"{args.config}: {kind}, {cfg.MODEL.BACKBONE.NAME}-FPN, one {size[0]}x{size[1]} image, inference")
    print(f"  {'component':<10} {'parameters':>12} {'trainable':>12} {'GFLOPs':>9}")
    for part in list(info["parameters"]):
        print(f"  {part:<10} {info['parameters'][part]:>12,} {info['trainable_parameters'][part]:>12,} "
              f"{info['flops'][part] / 1e9:>9.2f}")
    print(f"  (fvcore multiply-adds; RoI heads for this model's {info['detections']} detections on a blank image:"
          " their cost grows with proposals and detections)")
    return info


if __name__ == "__main__":
    from resdet.runs.cli import run_tool  # user errors: one line, no traceback (--debug shows it)

    sys.exit(run_tool(main))
