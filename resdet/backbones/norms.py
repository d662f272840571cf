"""Normalisation layers a backbone can be built with: BN, FrozenBN, SyncBN, GN.

FrozenBN is torchvision's `FrozenBatchNorm2d` (fixed statistics and affine; the same eps as torchvision's
detection models, so converted models give the same numbers). Turning an existing model's BatchNorms into
frozen ones uses timm's `freeze_batch_norm_2d`, which walks a module tree, copies the buffers and
produces that same torchvision class.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn
from timm.layers import freeze_batch_norm_2d
from torchvision.ops import FrozenBatchNorm2d

NORMS = ("BN", "FrozenBN", "SyncBN", "GN")

__all__ = ["NORMS", "get_norm", "freeze_norms", "FrozenBatchNorm2d", "NORM_TYPES"]

# Every norm type a backbone may hold; used to tell norm parameters apart (weight decay, freezing).
NORM_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm, FrozenBatchNorm2d)


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
            return nn.GroupNorm(gn_groups, channels)

        return group_norm
    raise ValueError(f"Unknown norm '{norm}'; expected one of {NORMS}")


def freeze_norms(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d/SyncBatchNorm in `module` by a FrozenBatchNorm2d with the same buffers."""
    return freeze_batch_norm_2d(module)
