r"""`tools/export.py`: a trained model to a deployable file, ONNX or a torch.export ExportedProgram.

    python tools/export.py configs/coco_r50.yaml --weights model_final.pth --format onnx --dynamic
    python tools/export.py configs/coco_r50_faster.yaml --weights model_final.pth --format exported-program \
        --batch 2 --size 800x1344 --output exported/
    python tools/export.py configs/cifar10_resnet20.yaml --weights model_final.pth --format onnx
    python tools/export.py configs/imagenet_r50.yaml --weights model_final.pth --format aoti --size 224

Detectors (MODEL.META_ARCHITECTURE GeneralizedRCNN: Faster / Mask R-CNN) are exported with their
post-processing inside the graph (resdet/export/detection.py: box decoding and clipping, NMS as ONNX
NonMaxSuppression or torchvision's nms, per-image top-k, 28x28 mask probabilities); classifiers
(ImageClassifier) as images -> logits. Inputs are RGB 0-255, normalised inside. Without --dynamic the
input shape is fixed at --batch x 3 x --size; with it, batch and height/width are free (detectors:
multiples of 32) except where the model fixes them (a CIFAR per-pixel mean image), which the output
and the file's metadata say. The file carries its metadata (input layout, pixel mean/std, class names,
score threshold, shapes, the resolved config): ONNX metadata_props, the .pt2's extra file
'resdet.json', and a JSON beside the file. `tools/demo.py --exported FILE` and
`tools/benchmark.py --exported FILE` run it.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import List, Tuple

from .cli import image_size

logger = logging.getLogger("resdet.export")

EXTENSIONS = {"onnx": ".onnx", "exported-program": ".pt2", "aoti": ".aoti.pt2"}


def parse_args(argv=None):
    from resdet.export.exporter import FORMATS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="the model's config (YAML)")
    p.add_argument("--weights", default="", help="checkpoint or state dict (default: MODEL.WEIGHTS)")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="onnx (onnxruntime), exported-program (torch.export .pt2), aoti (AOTInductor package)")
    p.add_argument("--output", default="", help="folder for the file (default: OUTPUT_DIR/export)")
    p.add_argument("--name", default="", help="file name without extension (default: the config's name)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the (fixed) input shape")
    p.add_argument("--size", type=image_size, default=None,
                   help="input HxW (default: detectors a square of INPUT.MAX_SIZE_TEST rounded up to 32, e.g. "
                        "1344x1344, which holds landscape and portrait images; 800x1344 for landscape only; "
                        "classifiers CLS.INPUT.CROP_SIZE)")
    p.add_argument("--dynamic", action="store_true", help="free batch and height/width where the model allows")
    p.add_argument("--no-optimize", action="store_true", help="ONNX: skip the onnxscript graph optimiser")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    args = p.parse_intermixed_args(argv)
    if args.batch < 1:
        p.error(f"--batch must be at least 1; got {args.batch}")
    return args


def build_model(cfg):
    """The config's model (detector or classifier), on the CPU in eval mode, without weights."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "GeneralizedRCNN":
        from resdet.detection.rcnn import build_detection_model

        return build_detection_model(cfg).eval()
    if arch == "ImageClassifier":
        from resdet.classification.model import build_classifier

        return build_classifier(cfg).eval()
    from resdet.export.exporter import ExportError

    raise ExportError(f"MODEL.META_ARCHITECTURE {arch!r} cannot be exported: tools/export.py knows "
                      "'GeneralizedRCNN' (Faster / Mask R-CNN) and 'ImageClassifier'")


def load_weights(model, weights: str) -> None:
    from resdet.engine.checkpoint import Checkpointer

    if not weights:
        logger.warning("No weights given (--weights or MODEL.WEIGHTS): exporting an untrained model")
        return
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"Weights file '{weights}' does not exist (--weights or MODEL.WEIGHTS)")
    Checkpointer("", model).load_model(weights, strict=True)


def default_size(cfg, model) -> Tuple[int, int]:
    from resdet.classification.model import ImageClassifier

    if isinstance(model, ImageClassifier):
        if model.pixel_mean_image is not None:
            return tuple(int(v) for v in model.pixel_mean_image.shape[-2:])
        return cfg.CLS.INPUT.CROP_SIZE, cfg.CLS.INPUT.CROP_SIZE
    # The test-time resize leaves every image within MAX_SIZE_TEST on both sides, portrait or landscape:
    # a square of it fits them all. MIN x MAX (cheaper by MIN/MAX) would refuse every portrait image.
    side = -(-int(cfg.INPUT.MAX_SIZE_TEST) // model.size_divisibility) * model.size_divisibility
    return side, side


def class_names_for(cfg) -> List[str]:
    """Detectors: the test dataset's categories; classifiers: the dataset's class folders or CIFAR's
    names. Empty when the data is not on this machine (the file then says labels are numbers)."""
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        from resdet.predictor import _dataset_class_names

        return _dataset_class_names(cfg)
    from resdet.data.folders import dataset_format, resolve_dataset_root

    root = resolve_dataset_root(cfg.CLS.DATA.NAME, cfg.CLS.DATA.ROOT)
    if not os.path.isdir(root):
        logger.warning("Class names unavailable (no data at '%s'); labels are numbers", root)
        return []
    if dataset_format(root, cfg.CLS.DATA.FORMAT) == "cifar-python":
        from resdet.classification.data import _cifar_class_names

        return _cifar_class_names(root)
    split = os.path.join(root, cfg.CLS.DATA.TRAIN_SPLIT)
    return sorted(d for d in os.listdir(split) if os.path.isdir(os.path.join(split, d))) if os.path.isdir(split) else []


def export_from_config(cfg, fmt: str, path: str, *, weights: str = "", batch: int = 1, size=None,
                       dynamic: bool = False, optimize: bool = True, class_names=None) -> dict:
    """Build, load and export the config's model; returns the metadata written (plus 'path', 'seconds')."""
    from resdet.classification.model import ImageClassifier
    from resdet.export import exporter as ex

    if fmt not in ex.FORMATS:
        raise ValueError(f"format must be one of {ex.FORMATS}; got {fmt!r}")
    if fmt == "aoti":
        reason = ex.aoti_unavailable_reason()
        if reason:
            raise ex.ExportError(f"cannot export to aoti: {reason}")
    model = build_model(cfg)
    load_weights(model, weights)
    model.to(_trace_device(cfg, fmt))
    size = tuple(size) if size else default_size(cfg, model)
    if isinstance(model, ImageClassifier):
        spec = ex.classifier_spec(model, batch=batch, size=size, dynamic=dynamic)
    else:
        spec = ex.detector_spec(model, batch=batch, size=size, dynamic=dynamic,
                                nms="onnx" if fmt == "onnx" else "torch")
    names = class_names_for(cfg) if class_names is None else list(class_names)
    meta = ex.build_metadata(spec, fmt, cfg=cfg, class_names=names, weights=weights)
    start = time.perf_counter()
    if fmt == "onnx":
        ex.export_onnx(spec, path, meta, optimize=optimize)
    elif fmt == "exported-program":
        ex.export_program(spec, path, meta)
    else:
        ex.export_aoti(spec, path, meta)
    return {**meta, "path": path, "seconds": time.perf_counter() - start}


def _trace_device(cfg, fmt: str):
    """ONNX graphs are device-free: traced on the CPU. An ExportedProgram / AOTInductor package runs on the
    device it was traced on: MODEL.DEVICE, or the CPU (with a warning) when that GPU is not here."""
    import torch

    want = cfg.MODEL.DEVICE
    if fmt == "onnx" or not want.startswith("cuda"):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %r but no GPU is visible: the %s is traced for the CPU (export on a GPU "
                       "machine for a CUDA program)", want, fmt)
        return torch.device("cpu")
    return torch.device(want)


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def describe(meta: dict) -> str:
    """What the tool prints: the file, its inputs and outputs (fixed or dynamic), what a consumer needs."""
    lines = [f"Wrote {meta['path']} ({os.path.getsize(meta['path']) / 1e6:.1f} MB, {meta['format']}"
             + (f", ONNX opset {meta['onnx_opset']}" if "onnx_opset" in meta else "")
             + f") in {meta['seconds']:.1f} s: {meta['architecture']}"
             + (f" ({meta['backbone']})" if meta.get("backbone") else "")]
    lines.append("  shapes: " + ("dynamic where named" if meta["dynamic"] else "FIXED (export with --dynamic "
                                                                            "for free batch and size)"))
    for name in meta["inputs"]:
        lines.append(f"  input  {name}: {_shape_text(meta['input_shapes'][name])}")
    for name in meta["outputs"]:
        lines.append(f"  output {name}: {_shape_text(meta['output_shapes'][name])}")
    for note in meta["notes"]:
        lines.append(f"  note: {note}")
    lines.append(f"  input layout: {meta['input_layout']}")
    mean = "a per-pixel mean image (inside the file)" if meta.get("per_pixel_mean") else f"mean {meta['pixel_mean']}"
    lines.append(f"  normalised inside: {mean}, std {meta['pixel_std']}")
    if meta["kind"] == "detector":
        lines.append(f"  score threshold {meta['score_threshold']} (applied inside), NMS {meta['nms_threshold']}, "
                     f"at most {meta['detections_per_image']} detections per image")
    names = meta["class_names"]
    lines.append(f"  {meta['num_classes']} classes: " + (", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
                                                          if names else "names unavailable (labels are numbers)"))
    if meta["device"] != "any":
        lines.append(f"  runs on: {meta['device']} (the device it was traced on)")
    if meta.get("runtime_needs"):
        lines.append(f"  runtime: {meta['runtime_needs']}")
    lines.append(f"  metadata: {'ONNX metadata_props' if meta['format'] == 'onnx' else 'extra file resdet.json'}"
                 f" and {meta['path']}.json")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from resdet.config import load_config

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("resdet").setLevel(logging.INFO)
    # --weights is MODEL.WEIGHTS: the backbone needs no weights file of its own, and VARIANT "auto" follows
    # the config the checkpoint was trained with
    cfg = load_config(args.config, args.opts + (["MODEL.WEIGHTS", args.weights] if args.weights else []))
    weights = cfg.MODEL.WEIGHTS
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "export")
    name = args.name or os.path.splitext(os.path.basename(args.config))[0]
    path = os.path.join(out_dir, name + EXTENSIONS[args.format])
    meta = export_from_config(cfg, args.format, path, weights=weights, batch=args.batch, size=args.size,
                              dynamic=args.dynamic, optimize=not args.no_optimize)
    print(describe(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
