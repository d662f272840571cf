"""What every backbone promises: named multi-scale outputs with known channels and strides."""
from __future__ import annotations

from typing import Dict, NamedTuple

import torch.nn as nn


class ShapeSpec(NamedTuple):
    """Channels and stride (relative to the input image) of one backbone output."""

    channels: int
    stride: int


class Backbone(nn.Module):
    """Base class: `forward(images) -> {name: tensor}` for each name in `out_features`.

    Subclasses fill `self._out_shapes` (every feature they can produce) and `self.out_features`.
    """

    def __init__(self):
        super().__init__()
        self._out_shapes: Dict[str, ShapeSpec] = {}
        self.out_features = None

    def output_shape(self) -> Dict[str, ShapeSpec]:
        names = self.out_features or []
        return {name: self._out_shapes[name] for name in names}

    @property
    def size_divisibility(self) -> int:
        """Input sizes should be multiples of this so every stage's feature map aligns (FPN needs it)."""
        return max((s.stride for s in self._out_shapes.values()), default=1)
