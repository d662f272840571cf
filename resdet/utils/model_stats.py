"""A model's size and cost: parameters, FLOPs (fvcore) and the shape of each output.

FLOPs are fvcore's FlopCountAnalysis, which counts one fused multiply-add as one FLOP: the convention of
the paper ("3.8 x 10^9 FLOPs" for ResNet-50) and of torchvision's model tables.
"""
from __future__ import annotations

import logging
import warnings
from typing import Dict, Tuple

import torch
import torch.nn as nn
with warnings.catch_warnings():
    # importing fvcore.nn scripts its focal loss with torch.jit.script, deprecated in newer torch
    warnings.filterwarnings("ignore", message=r".*torch\.jit", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis

__all__ = ["count_parameters", "count_flops", "output_shapes", "model_summary", "detection_model_summary"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _dummy(model: nn.Module, input_size: Tuple[int, int], batch: int = 1) -> torch.Tensor:
    p = next(model.parameters(), None)
    device = p.device if p is not None else "cpu"
    channels = getattr(model, "in_channels", 3)
    return torch.zeros(batch, channels, *input_size, device=device)


@torch.no_grad()
def count_flops(model: nn.Module, input_size: Tuple[int, int] = (224, 224)) -> int:
    """Multiply-adds of one forward pass on a single image of `input_size` (H, W), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return int(_analysis(model, (_dummy(model, input_size),)).total())
    finally:
        model.train(was_training)


def _analysis(model: nn.Module, inputs: tuple) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(model, inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    # fvcore logs every op it skips (relu, add, pooling, nms: negligible against convs); keep it quiet.
    logging.getLogger("fvcore.nn.jit_analysis").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # fvcore traces with torch.jit, which newer torch marks as deprecated; the count is unaffected.
        warnings.filterwarnings("ignore", message=r".*torch\.jit", category=FutureWarning)
        analysis.total()  # runs the trace once, inside the filter; later queries reuse it
    return analysis


class _OneImage(nn.Module):
    """GeneralizedRCNN on one image tensor, returning tensors (what torch.jit tracing can follow)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        out = self.model([image])[0]
        self.num_detections = int(out["boxes"].shape[0])  # kept from the traced run: no second forward
        # every output, masks included: the trace drops whatever does not reach an output
        return tuple(out[k] for k in ("boxes", "scores", "labels", "masks") if k in out)


@torch.no_grad()
def detection_model_summary(model: nn.Module, input_size: Tuple[int, int] = (800, 1216)) -> Dict[str, object]:
    """Parameters and inference FLOPs of a GeneralizedRCNN, per component, for one image of `input_size`.

    Backbone, FPN and RPN costs depend only on the size. The RoI heads' cost grows with the proposals
    kept (box head) and the detections (mask head), which depend on the weights: the count is for
    this model's own outputs on a blank image, and the number of detections is reported with it.
    """
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        image = torch.zeros(3, *input_size, device=p.device)
        wrapped = _OneImage(model)
        analysis = _analysis(wrapped, (image,))
        detections = wrapped.num_detections
    finally:
        model.train(was_training)
    by_module = analysis.by_module()
    parts = [n for n, _ in model.named_children()]
    return {
        "input_size": tuple(input_size),
        "parameters": {n: count_parameters(getattr(model, n)) for n in parts} | {"total": count_parameters(model)},
        "trainable_parameters": {n: count_parameters(getattr(model, n), True) for n in parts}
        | {"total": count_parameters(model, True)},
        "flops": {n: int(by_module.get(f"model.{n}", 0)) for n in parts} | {"total": int(analysis.total())},
        "detections": detections,
    }


@torch.no_grad()
def output_shapes(model: nn.Module, input_size: Tuple[int, int] = (224, 224)) -> Dict[str, Tuple[int, ...]]:
    """Shape of each named output for one image (a backbone's stages, or "logits" for a classifier)."""
    was_training = model.training
    model.eval()
    try:
        out = model(_dummy(model, input_size))
    finally:
        model.train(was_training)
    if isinstance(out, dict):
        return {k: tuple(v.shape) for k, v in out.items()}
    return {"logits": tuple(out.shape)}


def model_summary(model: nn.Module, input_size: Tuple[int, int] = (224, 224)) -> Dict[str, object]:
    return {
        "parameters": count_parameters(model),
        "trainable_parameters": count_parameters(model, trainable_only=True),
        "flops": count_flops(model, input_size),
        "input_size": tuple(input_size),
        "outputs": output_shapes(model, input_size),
    }
