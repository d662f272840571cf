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
from fvcore.nn import FlopCountAnalysis

__all__ = ["count_parameters", "count_flops", "output_shapes", "model_summary"]


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
        analysis = FlopCountAnalysis(model, _dummy(model, input_size))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        # fvcore logs every op it skips (relu, add, pooling: negligible against convs); keep it quiet.
        logging.getLogger("fvcore.nn.jit_analysis").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            # fvcore traces with torch.jit, which newer torch marks as deprecated; the count is unaffected.
            warnings.filterwarnings("ignore", message=r".*torch\.jit", category=FutureWarning)
            return int(analysis.total())
    finally:
        model.train(was_training)


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
