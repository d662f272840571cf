"""Writing a model to a file: ONNX (torch.onnx.export, dynamo=True), a torch.export ExportedProgram
(`.pt2`), or an AOTInductor package, with the metadata a consumer needs inside the file.

    spec = detector_spec(model, batch=1, size=(800, 1344), dynamic=True)     # or classifier_spec(...)
    export_onnx(spec, "model.onnx", metadata)            # opset ONNX_OPSET, one self-contained file
    export_program(spec, "model.pt2", metadata)          # torch.export.load()-able; metadata in extra_files

`ExportSpec` says what is traced (the module, example inputs, names, dynamic dimensions); the metadata
(`build_metadata`) says how to feed it and read it. A failure while tracing names the innermost module
that was running and the reason (`ExportError`).
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from resdet.classification.model import ImageClassifier
from resdet.detection.cascade import CascadeROIHeads
from resdet.detection.rcnn import GeneralizedRCNN

from .detection import ExportableRCNN
from .nms import onnx_translation_table

__all__ = ["FORMATS", "ONNX_OPSET", "METADATA_KEY", "ExportError", "ExportSpec", "detector_spec", "classifier_spec",
           "export_onnx", "export_program", "export_aoti", "build_metadata", "sidecar_path", "aoti_unavailable_reason"]

FORMATS = ("onnx", "exported-program", "aoti")
# ONNX opset of the files written: RoiAlign's coordinate_transformation_mode (aligned / not aligned, as
# torchvision's roi_align) needs 16; 18 is what onnxscript's torch library is written against.
ONNX_OPSET = 18
# The JSON metadata: an ONNX metadata_props entry, and the name of the .pt2's extra file.
METADATA_KEY = "resdet"
# The largest batch / side a dynamic export promises to accept (torch.export wants bounds).
MAX_BATCH, MAX_SIDE = 256, 4096


class ExportError(RuntimeError):
    """The model (or a module inside it) cannot be exported in the asked format; says which and why."""


@dataclass
class ExportSpec:
    module: nn.Module
    example: Tuple[torch.Tensor, ...]
    input_names: List[str]
    output_names: List[str]
    dynamic_shapes: Optional[Dict[str, Dict[int, Any]]]
    # for the metadata and the tool's output: each input's shape, a name where the dimension is dynamic
    input_shapes: Dict[str, List[Any]] = field(default_factory=dict)
    output_shapes: Dict[str, List[Any]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "detector" if isinstance(self.module, ExportableRCNN) else "classifier"


def _example_images(batch: int, h: int, w: int, device="cpu") -> torch.Tensor:
    # any values do: tracing reads shapes only; a smooth ramp keeps every layer's output finite
    ramp = torch.linspace(0, 255, h * w, device=device).view(1, 1, h, w)
    return ramp.expand(batch, 3, h, w).contiguous()


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def detector_spec(model: GeneralizedRCNN, *, batch: int, size: Tuple[int, int], dynamic: bool,
                  nms: str = "torch") -> ExportSpec:
    """What to trace for a Faster / Mask R-CNN: ExportableRCNN(model) on a padded batch and its sizes."""
    div = int(model.size_divisibility)
    h, w = size
    if h % div or w % div:
        raise ValueError(f"--size {h}x{w}: a detector's input is padded to a multiple of {div}; give sides "
                         f"that are multiples of {div} (e.g. {-(-h // div) * div}x{-(-w // div) * div})")
    wrapper = ExportableRCNN(model, nms=nms)
    d = model.roi_heads.detections_per_image
    example_batch = max(batch, 2) if dynamic else batch  # a dynamic dimension must not be traced at size 1
    example = (_example_images(example_batch, h, w, _device(model)),
               torch.tensor([[h, w]] * example_batch, dtype=torch.int64, device=_device(model)))
    dyn = None
    n, hh, ww = batch, h, w
    if dynamic:
        from torch.export import Dim

        b = Dim("batch", min=1, max=MAX_BATCH)
        dyn = {"images": {0: b, 2: div * Dim("height_blocks", min=2, max=MAX_SIDE // div),
                          3: div * Dim("width_blocks", min=2, max=MAX_SIDE // div)},
               "image_sizes": {0: b}}
        n, hh, ww = "batch", f"height (multiple of {div})", f"width (multiple of {div})"
    outputs = {"boxes": [n, d, 4], "scores": [n, d], "labels": [n, d], "num_detections": [n]}
    if model.roi_heads.mask_on:
        m = 2 * model.roi_heads.mask_pooler.output_size[0]
        outputs["mask_probs"] = [n, d, 1, m, m]
    return ExportSpec(wrapper, example, ["images", "image_sizes"], list(wrapper.output_names), dyn,
                      {"images": [n, 3, hh, ww], "image_sizes": [n, 2]}, outputs)


def classifier_spec(model: ImageClassifier, *, batch: int, size: Tuple[int, int], dynamic: bool) -> ExportSpec:
    """What to trace for an ImageClassifier: uint8-or-float images in, logits out."""
    h, w = size
    notes = []
    fixed_hw = model.pixel_mean_image is not None
    if fixed_hw:
        mh, mw = (int(v) for v in model.pixel_mean_image.shape[-2:])
        if (h, w) != (mh, mw):
            raise ValueError(f"--size {h}x{w}: this classifier subtracts a {mh}x{mw} per-pixel mean image "
                             f"(CLS.DATA.PER_PIXEL_MEAN), so its input must be {mh}x{mw}")
        if dynamic:
            notes.append(f"height and width are fixed at {mh}x{mw}: ImageClassifier.pixel_mean_image is a "
                         f"{mh}x{mw} per-pixel mean (only the batch is dynamic)")
    example_batch = max(batch, 2) if dynamic else batch
    example = (_example_images(example_batch, h, w, _device(model)),)
    num_classes = _num_logits(model)
    dyn = None
    n, hh, ww = batch, h, w
    if dynamic:
        from torch.export import Dim

        b = Dim("batch", min=1, max=MAX_BATCH)
        axes = {0: b}
        n = "batch"
        if not fixed_hw:
            # at least 64: the trace treats a 1x1 last feature map (sides <= 32) as a special case
            axes.update({2: Dim("height", min=64, max=MAX_SIDE), 3: Dim("width", min=64, max=MAX_SIDE)})
            hh, ww = "height (>= 64)", "width (>= 64)"
        dyn = {"images": axes}
    return ExportSpec(model.eval(), example, ["images"], ["logits"], dyn, {"images": [n, 3, hh, ww]},
                      {"logits": [n, num_classes]}, notes)


def _num_logits(model: ImageClassifier) -> int:
    fc = getattr(model.backbone, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc.out_features
    with torch.no_grad():
        return int(model(_example_images(1, 32, 32, _device(model))).shape[1])


# ---------------------------------------------------------------------------------------------- tracing
@contextlib.contextmanager
def _module_stack(root: nn.Module):
    """Track which submodule is running (forward hooks), so a tracing failure can name it."""
    stack: List[str] = []
    names = {m: n for n, m in root.named_modules()}
    def enter(mod, _args):
        stack.append(names[mod])

    def leave(mod, _args, _out):  # returns None: the output stays as it is
        stack.pop()

    handles = []
    for m in names:
        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def _describe(root: nn.Module, name: str) -> str:
    mod = root.get_submodule(name) if name else root
    return f"'{name or '(the whole model)'}' ({type(mod).__module__}.{type(mod).__name__})"


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def trace(spec: ExportSpec, fmt: str) -> "torch.export.ExportedProgram":
    """torch.export the spec's module; a failure names the innermost module that was running."""
    with torch.no_grad(), _module_stack(spec.module) as stack:
        try:
            return torch.export.export(spec.module, spec.example, dynamic_shapes=spec.dynamic_shapes, strict=False)
        except Exception as e:
            where = _describe(spec.module, stack[-1]) if stack else _describe(spec.module, "")
            raise ExportError(f"cannot export to {fmt}: module {where} failed while tracing: {_reason(e)}") from e


def _onnx_failure(program, root: nn.Module, error: BaseException) -> Tuple[str, str]:
    """(which module, why) for a failed ONNX translation: the exporter's innermost error names the
    operator and the fx node; the node's nn_module_stack names the module that called it."""
    chain = []
    e: Optional[BaseException] = error
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__
    reason = _reason(chain[-1])
    node_name = None
    for c in chain:
        text = str(c)
        if "Error when translating node %" in text:
            node_name = text.split("Error when translating node %", 1)[1].split()[0]
    op = None
    for c in chain:  # the dispatcher's message names the operator: "OpOverload(op='aten._linalg_svd', ..."
        text = str(c)
        if "OpOverload(op='" in text:
            op = text.split("OpOverload(op='", 1)[1].split("'")[0]
    def bare(name: str) -> str:  # "aten._linalg_svd.default" / "_linalg_svd_1" -> "linalg_svd"
        name = name.split(".")[1] if name.startswith("aten.") else name
        return name.lstrip("_")

    # the translated graph is the program after decompositions (linalg_svd became _linalg_svd): match
    # the node by name, else by the operator's bare name
    wanted = {bare(x) for x in (node_name, op) if x}
    if wanted:
        for node in program.graph.nodes:
            if node.name == node_name or (node.op == "call_function" and bare(str(node.target)) in wanted):
                stack = node.meta.get("nn_module_stack") or {}
                if stack:
                    path = list(stack.values())[-1][0]
                    # the exported program names modules from the traced root, e.g. "backbone.layer1"
                    path = path.replace("L['self'].", "").replace("L__self___", "")
                    try:
                        return _describe(root, path), f"{reason} (operator {node.target})"
                    except AttributeError:
                        return f"'{path}'", f"{reason} (operator {node.target})"
                return _describe(root, ""), f"{reason} (operator {node.target})"
    return _describe(root, ""), reason


def _atomic(path: str, write) -> str:
    """Write through `write(tmp_path)` and rename into place, so a half-written file never has the name."""
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{os.getpid()}{ext}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def sidecar_path(path: str) -> str:
    """The metadata JSON written beside an exported file (model.pt2 -> model.pt2.json)."""
    return path + ".json"


def _write_sidecar(path: str, metadata: Dict[str, Any]) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=1)

    _atomic(sidecar_path(path), write)


def export_onnx(spec: ExportSpec, path: str, metadata: Dict[str, Any], opset: int = ONNX_OPSET,
                optimize: bool = True) -> str:
    """One self-contained .onnx file (weights inside) with the metadata in metadata_props."""
    if spec.kind == "detector" and spec.module.nms != "onnx":
        raise ValueError("an ONNX detector needs ExportableRCNN(nms='onnx') (NonMaxSuppression); "
                         "build the spec with detector_spec(..., nms='onnx')")
    program = trace(spec, "onnx")
    try:
        onnx_program = torch.onnx.export(program, spec.example, dynamo=True, opset_version=opset,
                                         input_names=spec.input_names, output_names=spec.output_names,
                                         custom_translation_table=onnx_translation_table(), optimize=optimize,
                                         verbose=False)
    except Exception as e:
        where, reason = _onnx_failure(program, spec.module, e)
        raise ExportError(f"cannot export to onnx: module {where} did not translate to ONNX opset {opset}: "
                          f"{reason}") from e
    props = onnx_program.model.metadata_props
    props.update(_flat_metadata(metadata))
    _atomic(path, lambda tmp: onnx_program.save(tmp, external_data=False))
    _write_sidecar(path, metadata)
    return path


def export_program(spec: ExportSpec, path: str, metadata: Dict[str, Any]) -> str:
    """A torch.export ExportedProgram (.pt2), metadata in its extra file 'resdet.json' and beside it."""
    program = trace(spec, "exported-program")
    blob = json.dumps(metadata)
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: the archive's folder is not named after the temporary file
            torch.export.save(program, f, extra_files={f"{METADATA_KEY}.json": blob})

    _atomic(path, write)
    _write_sidecar(path, metadata)
    return path


def aoti_unavailable_reason() -> Optional[str]:
    """Why AOTInductor cannot compile here (None when it can)."""
    import shutil

    try:
        from torch._inductor import aoti_compile_and_package  # noqa: F401
    except ImportError as e:
        return f"this torch ({torch.__version__}) has no AOTInductor packaging ({e})"
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None and shutil.which("c++") is None:
        return f"AOTInductor compiles C++ and no compiler was found ({cxx!r}, 'c++'); install g++ or set CXX"
    return None


def export_aoti(spec: ExportSpec, path: str, metadata: Dict[str, Any]) -> str:
    """An AOTInductor package (.pt2, torch._inductor.aoti_load_package), compiled for this machine's CPU."""
    reason = aoti_unavailable_reason()
    if reason:
        raise ExportError(f"cannot export to aoti: {reason}")
    from torch._inductor import aoti_compile_and_package

    program = trace(spec, "aoti")
    try:
        _atomic(path, lambda tmp: aoti_compile_and_package(program, package_path=tmp))
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"cannot export to aoti: AOTInductor did not compile the traced "
                          f"{type(spec.module).__name__}: {_reason(e)}") from e
    _write_sidecar(path, metadata)
    return path


# --------------------------------------------------------------------------------------------- metadata
def _flat_metadata(metadata: Dict[str, Any]) -> Dict[str, str]:
    """ONNX metadata_props are strings: the whole JSON under METADATA_KEY, and the fields a consumer
    reads first as their own entries."""
    flat = {METADATA_KEY: json.dumps(metadata)}
    for key in ("kind", "input_layout", "normalizes_inside", "pixel_mean", "pixel_std", "class_names",
                "score_threshold", "size_divisibility", "input_shapes", "output_shapes", "outputs"):
        if key in metadata:
            v = metadata[key]
            flat[key] = v if isinstance(v, str) else json.dumps(v)
    return flat


def build_metadata(spec: ExportSpec, fmt: str, *, cfg=None, class_names: Sequence[str] = (),
                   weights: str = "", model: Optional[nn.Module] = None) -> Dict[str, Any]:
    """Everything a consumer needs to feed the file and read its outputs, as plain JSON values."""
    meta: Dict[str, Any] = {
        "format_version": 1,
        "producer": "resdet",
        "kind": spec.kind,
        "format": fmt,
        "torch_version": torch.__version__,
        "inputs": spec.input_names,
        "outputs": spec.output_names,
        "input_shapes": spec.input_shapes,
        "output_shapes": spec.output_shapes,
        "dynamic": spec.dynamic_shapes is not None,
        "notes": list(spec.notes),
        "class_names": list(class_names),
        "weights": os.path.abspath(weights) if weights else "",
        # ONNX graphs are device-free; an ExportedProgram / AOTInductor package runs on the device it was traced on
        "device": "any" if fmt == "onnx" else _device(spec.module).type,
    }
    if fmt == "onnx":
        meta["onnx_opset"] = ONNX_OPSET
    if fmt in ("exported-program", "aoti") and spec.kind == "detector":
        meta["runtime_needs"] = "torch and torchvision (import torchvision before loading: its nms and roi_align ops)"
    if spec.kind == "detector":
        m = spec.module.model
        heads = m.roi_heads
        meta.update({
            "architecture": ("Cascade " if isinstance(heads, CascadeROIHeads) else "") + (
                "Mask R-CNN" if heads.mask_on else "Faster R-CNN"),
            "input_layout": (f"images: float32 [N, 3, H, W], RGB, 0-255, not normalised; H and W multiples of "
                             f"{m.size_divisibility} (pad bottom/right; padding content is ignored); "
                             "image_sizes: int64 [N, 2], each image's (height, width) inside the padded batch"),
            "normalizes_inside": True,
            "pixel_mean": [round(float(v), 4) for v in m.pixel_mean.flatten()],
            "pixel_std": [round(float(v), 4) for v in m.pixel_std.flatten()],
            "size_divisibility": int(m.size_divisibility),
            "num_classes": int(heads.num_classes),
            "label_offset": 1,
            "score_threshold": float(heads.score_thresh),
            "nms_threshold": float(heads.nms_thresh),
            "detections_per_image": int(heads.detections_per_image),
            "output_layout": ("boxes [N, D, 4] xyxy in the input frame, scores [N, D], labels [N, D] in 1..K "
                              "(class_names[label - 1]), num_detections [N]: the first num_detections rows of "
                              "each image are its detections, best first, the rest zeros"
                              + ("; mask_probs [N, D, 1, M, M]: the label's mask probabilities inside the box, "
                                 "to be resized into it (resdet.export.runtime.paste_detections)" if heads.mask_on
                                 else "")),
        })
        if heads.mask_on:
            meta["mask_size"] = int(2 * heads.mask_pooler.output_size[0])
    else:
        model = spec.module
        meta.update({
            "architecture": "ImageClassifier",
            "input_layout": "images: float32 [N, 3, H, W], RGB, 0-255, not normalised",
            "normalizes_inside": True,
            "pixel_mean": [round(float(v), 4) for v in model.pixel_mean.flatten()],
            "pixel_std": [round(float(v), 4) for v in model.pixel_std.flatten()],
            "per_pixel_mean": model.pixel_mean_image is not None,
            "num_classes": int(spec.output_shapes["logits"][1]),
            "output_layout": "logits [N, num_classes] (softmax not applied)",
        })
    if cfg is not None:
        meta["backbone"] = cfg.MODEL.BACKBONE.NAME
        if spec.kind == "detector":
            meta["test_resize"] = {"min_size": int(cfg.INPUT.MIN_SIZE_TEST), "max_size": int(cfg.INPUT.MAX_SIZE_TEST),
                                   "rounding": cfg.INPUT.RESIZE_ROUNDING, "backend": cfg.INPUT.RESIZE_BACKEND}
            meta["vis_score_threshold"] = float(cfg.TEST.VIS_SCORE_THRESHOLD)
            # per label 1..K (TEST.SCORE_THRESH_PER_CLASS), or None: vis_score_threshold for every class
            meta["score_thresholds_per_class"] = [float(v) for v in cfg.TEST.SCORE_THRESH_PER_CLASS] or None
            meta["mask_threshold"] = float(cfg.TEST.MASK_THRESHOLD)
        meta["config"] = cfg.dump()
    return meta
