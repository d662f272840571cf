"""Normalisation layers a backbone can be built with: BN, FrozenBN, SyncBN, GN.

FrozenBN is torchvision's `FrozenBatchNorm2d` (fixed statistics and affine; the same eps and buffer
names as torchvision's detection models, so converted models give the same numbers), subclassed for
two things a GPU run needs: the output keeps the input's dtype (torchvision's returns float32 for fp16 /
bf16 input, so under autocast every backbone activation would be float32 and re-cast before each
conv), and the per-channel scale and shift are computed once and cached until a buffer changes (5 ops
and 4 views fewer per layer and step: a few hundred kernel launches per ResNet-50 step). GroupNorm keeps
the input dtype too (CUDA autocast runs group_norm in float32). Turning an existing model's BatchNorms
into frozen ones walks the module tree with timm's `freeze_batch_norm_2d` and swaps in our class.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import freeze_batch_norm_2d
from torchvision.ops import FrozenBatchNorm2d as _TorchvisionFrozenBN

NORMS = ("BN", "FrozenBN", "SyncBN", "GN")

__all__ = ["NORMS", "get_norm", "freeze_norms", "FrozenBatchNorm2d", "GroupNorm", "NORM_TYPES"]


def _tracing() -> bool:
    """True under torch.compile / torch.export / jit or fx tracing, where a Python-side cache must not be used."""
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return True
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing

    return is_fx_symbolic_tracing()


class FrozenBatchNorm2d(_TorchvisionFrozenBN):
    """torchvision's FrozenBatchNorm2d (same buffers, same arithmetic in float32), keeping the input dtype
    and caching scale = weight / sqrt(running_var + eps) and shift = bias - running_mean * scale.

    The cache is keyed on the buffers' identity and version counters (bumped by any in-place change,
    e.g. load_state_dict; `.to()` makes new tensors), so it is never stale; it is not part of the
    state dict. Under torch.compile / export / tracing the two are computed in the graph instead.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__(num_features, eps)
        self._cache = None

    def _scale_shift(self):
        w, b = self.weight.reshape(1, -1, 1, 1), self.bias.reshape(1, -1, 1, 1)
        rv, rm = self.running_var.reshape(1, -1, 1, 1), self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()  # torchvision's order of operations: the same bits
        return scale, b - rm * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _tracing():
            scale, shift = self._scale_shift()
            return x * scale.to(x.dtype) + shift.to(x.dtype)
        buffers = (self.weight, self.bias, self.running_mean, self.running_var)
        key = (x.dtype, tuple(id(t) for t in buffers), tuple(t._version for t in buffers), self.eps)
        cache = self._cache
        if cache is None or cache[0] != key or any(a is not b for a, b in zip(cache[1], buffers)):
            with torch.no_grad():
                scale, shift = self._scale_shift()
                # half precision: the product is rounded to x's dtype anyway, as autocast rounds conv weights
                cache = self._cache = (key, buffers, scale.to(x.dtype), shift.to(x.dtype))
        return x * cache[2] + cache[3]

    def __getstate__(self):  # pickling / deepcopy: the cache is rebuilt on the next forward
        state = super().__getstate__().copy()
        state["_cache"] = None
        return state


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm whose output has the input's dtype (CUDA autocast computes group_norm in float32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)


# Every norm type a backbone may hold; used to tell norm parameters apart (weight decay, freezing).
NORM_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm, _TorchvisionFrozenBN)


def get_norm(norm: str, gn_groups: int = 32) -> Callable[[int], nn.Module]:
    """A factory `channels -> norm layer` for one of NORMS."""
    if norm == "BN":
        return nn.BatchNorm2d
    if norm == "FrozenBN":
        return FrozenBatchNorm2d
    if norm == "SyncBN":
        return nn.SyncBatchNorm
    if norm == "GN":

        def group_norm(channels: int) -> nn.Module:
            if channels % gn_groups != 0:
                raise ValueError(
                    f"GroupNorm with {gn_groups} groups needs channels divisible by {gn_groups}; got {channels}"
                )
            return GroupNorm(gn_groups, channels)

        return group_norm
    raise ValueError(f"Unknown norm '{norm}'; expected one of {NORMS}")


def freeze_norms(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d/SyncBatchNorm in `module` (and any torchvision FrozenBatchNorm2d) by our
    FrozenBatchNorm2d with the same buffers."""
    return _to_our_frozen_bn(freeze_batch_norm_2d(module))


def _to_our_frozen_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, _TorchvisionFrozenBN) and not isinstance(module, FrozenBatchNorm2d):
        ours = FrozenBatchNorm2d(module.weight.shape[0], module.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            setattr(ours, name, getattr(module, name))  # the same tensors: no copy
        return ours
    for name, child in module.named_children():
        new = _to_our_frozen_bn(child)
        if new is not child:
            module.add_module(name, new)
    return module
