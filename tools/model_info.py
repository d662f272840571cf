#!/usr/bin/env python
"""Print a registry model's parameters, FLOPs and the shape of each stage's output.

    python tools/model_info.py resnet50
    python tools/model_info.py cifar_resnet110 --size 32
    python tools/model_info.py resnet101 --variant v1 --size 800 1216 --features
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resdet.backbones import build_backbone  # noqa: E402
from resdet.utils.model_stats import model_summary  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="a registry name (see resdet.backbones.list_backbones()) or timm/<model>")
    p.add_argument("--size", type=int, nargs="+", default=None,
                   help="input H [W] (default 224, or 32 for cifar_* models)")
    p.add_argument("--variant", default="v1.5", help="v1 (stride in 1x1, the paper) or v1.5 (torchvision)")
    p.add_argument("--shortcut", default="", help="A, B or C (default: the family's own)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)

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
    info["stages"] = {k: list(v) for k, v in model_summary(feats, size)["outputs"].items()}
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


if __name__ == "__main__":
    main()
