"""Anchors: one set of sizes and aspect ratios per feature level, tiled over the padded image."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ["AnchorGenerator"]


class AnchorGenerator(nn.Module):
    """Anchors for each level, laid out as (y, x, anchor) to match the RPN head's output order.

    `sizes[i]` and `aspect_ratios[i]` are level i's (FPN: one size per level, 32..512, ratios
    0.5/1/2). Cell anchors are rounded to whole pixels and the grid stride of a level is
    (padded image size // feature size), exactly as torchvision computes them, so its weights see
    the same anchors (for P6 on an image whose P5 has odd size this stride is not a power of two).
    """

    def __init__(self, *, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]]):
        super().__init__()
        if len(aspect_ratios) == 1 and len(sizes) > 1:
            aspect_ratios = list(aspect_ratios) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"AnchorGenerator: {len(sizes)} levels of sizes but {len(aspect_ratios)} of "
                             "aspect ratios; give one list per level (or a single list for all)")
        cells = [self._cell_anchors(s, r) for s, r in zip(sizes, aspect_ratios)]
        self.num_anchors_per_location = [c.shape[0] for c in cells]
        for i, c in enumerate(cells):
            self.register_buffer(f"cell_anchors_{i}", c, persistent=False)
        self._cache: Dict[Tuple, List[Tensor]] = {}

    @staticmethod
    def _cell_anchors(sizes: Sequence[float], ratios: Sequence[float]) -> Tensor:
        sizes_t = torch.as_tensor(sizes, dtype=torch.float32)
        ratios_t = torch.as_tensor(ratios, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios_t)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * sizes_t[None, :]).view(-1)
        hs = (h_ratios[:, None] * sizes_t[None, :]).view(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    @property
    def num_levels(self) -> int:
        return len(self.num_anchors_per_location)

    def forward(self, padded_size: Tuple[int, int], grid_sizes: Sequence[Tuple[int, int]]) -> List[Tensor]:
        """Anchors [H_i * W_i * A_i, 4] per level for a batch padded to `padded_size`."""
        if len(grid_sizes) != self.num_levels:
            raise ValueError(f"AnchorGenerator has {self.num_levels} levels but got {len(grid_sizes)} feature maps")
        cell0 = self.cell_anchors_0
        key = (tuple(padded_size), tuple(map(tuple, grid_sizes)), cell0.device, cell0.dtype)
        if key not in self._cache:
            if len(self._cache) > 64:  # shapes vary with the batch; keep the cache small
                self._cache.clear()
            self._cache[key] = [self._grid(padded_size, g, getattr(self, f"cell_anchors_{i}"))
                                for i, g in enumerate(grid_sizes)]
        return self._cache[key]

    @staticmethod
    def _grid(padded_size: Tuple[int, int], grid: Tuple[int, int], cell: Tensor) -> Tensor:
        gh, gw = int(grid[0]), int(grid[1])
        stride_h, stride_w = padded_size[0] // gh, padded_size[1] // gw
        shifts_x = torch.arange(0, gw, dtype=torch.int32, device=cell.device) * stride_w
        shifts_y = torch.arange(0, gh, dtype=torch.int32, device=cell.device) * stride_h
        sy, sx = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        sx, sy = sx.reshape(-1), sy.reshape(-1)
        shifts = torch.stack((sx, sy, sx, sy), dim=1)
        return (shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)
