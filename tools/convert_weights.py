"""Convert torchvision detection checkpoints (or torchvision / timm ResNet classifiers, for the
backbone) into resdet's GeneralizedRCNN weights.

  python tools/convert_weights.py maskrcnn_resnet50_fpn_coco.pth out.pth
  python tools/convert_weights.py maskrcnn_resnet50_fpn_coco.pth out.pth --coco-annotations instances_val2017.json
  python tools/convert_weights.py resnet50-0676ba61.pth output/imagenet_r50/backbone_final.pth --backbone

--backbone writes a backbone file that describes itself (registry name and shortcut read from the
blocks, variant v1.5 for torchvision/timm classifiers unless --variant says otherwise, norm BN), the
format train_cls exports, so the COCO configs' MODEL.BACKBONE.VARIANT auto builds the matching backbone.

With --coco-annotations (or --category-ids 1,2,3,...), torchvision's 91 COCO outputs are reduced to the
dataset's contiguous labels 1..K (sorted category ids), so the weights evaluate with MODEL.ROI_HEADS.
NUM_CLASSES K and our eval.py; without it the model keeps 90 classes (labels are COCO ids).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from resdet.backbones import VARIANTS  # noqa: E402
from resdet.backbones.registry import describe_resnet_state_dict  # noqa: E402
from resdet.backbones.weights import save_backbone_weights  # noqa: E402
from resdet.detection.convert import (  # noqa: E402
    convert_resnet_backbone,
    convert_torchvision_detection,
    remap_classes,
    torchvision_coco_class_indices,
)

__all__ = ["convert_torchvision_detection", "convert_resnet_backbone", "remap_classes",
           "torchvision_coco_class_indices", "main"]


def _category_ids(args):
    if args.category_ids:
        try:
            return [int(c) for c in args.category_ids.split(",") if c.strip()]
        except ValueError as e:
            raise SystemExit(f"--category-ids must be comma-separated integers; got {args.category_ids!r}") from e
    if args.coco_annotations:
        try:
            with open(args.coco_annotations, encoding="utf-8") as f:
                cats = json.load(f)["categories"]
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"cannot read 'categories' from {args.coco_annotations}: {e}") from e
        return [int(c["id"]) for c in cats]
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="torchvision/timm checkpoint (.pth / .pt state dict)")
    p.add_argument("dst", help="where to write resdet's state dict")
    p.add_argument("--backbone", action="store_true", help="src is a ResNet classifier: convert the backbone only")
    p.add_argument("--variant", choices=VARIANTS, default="v1.5",
                   help="with --backbone: where the classifier's stride sits (torchvision and timm: v1.5; "
                        "MSRA's original Caffe models: v1)")
    p.add_argument("--coco-annotations", help="COCO json whose categories define the contiguous labels")
    p.add_argument("--category-ids", help="comma-separated dataset category ids (instead of --coco-annotations)")
    args = p.parse_args(argv)
    if not os.path.isfile(args.src):
        raise SystemExit(f"checkpoint not found: {args.src}")
    try:
        sd = torch.load(args.src, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure: say which file
        raise SystemExit(f"cannot load {args.src} as a state dict: {e}") from e
    if args.backbone:
        try:
            weights = convert_resnet_backbone(sd, prefix="")
            meta = {**describe_resnet_state_dict(weights), "variant": args.variant, "norm": "BN",
                    "source": os.path.basename(args.src), "kind": "backbone"}
        except (KeyError, ValueError) as e:
            raise SystemExit(f"{args.src}: {e}") from e
        save_backbone_weights(weights, args.dst, meta)
        print(f"wrote {len(weights)} tensors to {args.dst} (backbone {meta['name']}, variant {meta['variant']}, "
              f"shortcut {meta['shortcut']})")
        return 0
    ids = _category_ids(args)
    out = convert_torchvision_detection(sd, torchvision_coco_class_indices(ids) if ids else None)
    meta = {"source": os.path.basename(args.src), "kind": "detection",
            "num_classes": int(out["roi_heads.box_predictor.cls_score.weight"].shape[0]) - 1,
            "category_ids": sorted(ids) if ids else list(range(1, 91))}
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    tmp = args.dst + ".tmp"
    torch.save({"model": out, "meta": meta}, tmp)
    os.replace(tmp, args.dst)  # atomic: a crash never leaves a half-written checkpoint
    print(f"wrote {len(out)} tensors to {args.dst} (detection, {meta['num_classes']} classes)")
    return 0


if __name__ == "__main__":
    from resdet.runs.cli import run_tool  # user errors: one line, no traceback (--debug shows it)

    sys.exit(run_tool(main))
