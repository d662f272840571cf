"""RoIAlign on the CPU as a sparse product, with a backward that uses every core.

torchvision's CPU RoIAlign recomputes each sample's bilinear weights for every channel, and its backward
scatters them one value at a time on one thread: in the scratch recipe's training step (1000 RoIs, 128
channels, two cores) it was about a fifth of the step. Here the same operator is written as a sparse
matrix A (pooled bins x feature pixels) that is built once per call and shared by all channels:

    pooled[bin, :] = sum_k w[bin, k] * feature[pixel[bin, k], :]       (forward:  A @ F)
    grad_F[pixel, :] = sum over entries at that pixel of w * grad[bin, :] (backward: A^T @ G)

with the features as rows of channels (NHWC). Both products are `torch.nn.functional.embedding_bag`
in "sum" mode with per-sample weights (a weighted gather-and-sum over rows, parallel over bags); the
backward sorts the entries by pixel once so that each pixel's sum is a bag of its own, so no two threads
write the same row. torchvision has no such kernel and torch has no sparse product that is parallel in
both directions on the CPU (the CSR/COO products measured 3-5x slower), hence this file.

A is separable: a sample's bilinear weight is (row weight) x (column weight), and a sample counts only
when its row and its column are both inside the map, so the weights of a bin are the outer product of a
per-row vector (the bin's samples summed over the rows they touch) and a per-column one. The entries
are those products, with the all-zero ones dropped. Sample positions, clamping at the border and the
adaptive sample count (`sampling_ratio <= 0`: ceil(roi size / output size) per RoI) follow torchvision's
kernel expression for expression, so the result equals `torchvision.ops.roi_align` up to float rounding
of the sums (tests/detection/test_roi_align.py: forward and backward, aligned or not, fixed and adaptive
sampling, boxes partly or wholly outside the map, empty and inverted boxes).

On the CPU sizes come from the data (the largest sample grid and bin extent of the call): reading them
is free there (no device to wait for). Every other device uses torchvision's kernel.
"""
from __future__ import annotations

import contextlib
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align as tv_roi_align

__all__ = ["roi_align", "ROI_ALIGN_KERNELS", "force_torchvision_roi_align", "gpu_kernels_forced"]

ROI_ALIGN_KERNELS = ("resdet", "torchvision")

# Entries (bins x padded taps) built at once; more RoIs are planned in chunks, to bound memory (about
# 4 tensors of this many elements).
_CHUNK_ENTRIES = 1 << 22

# True within force_torchvision_roi_align(): torchvision's kernel on the CPU as well
_FORCE_TORCHVISION = False


@contextlib.contextmanager
def force_torchvision_roi_align(enabled: bool = True):
    """Within the block, pool with torchvision's kernel on every device, as on a GPU (and take the GPU's
    form of the mask head's deconvolution, gpu_kernels_forced()): for counting the
    GPU path's host reads and ops on a CPU (benchmarks/counts.py), where this kernel's own reads of its
    sizes would be counted although they never happen on a GPU."""
    global _FORCE_TORCHVISION
    previous, _FORCE_TORCHVISION = _FORCE_TORCHVISION, enabled
    try:
        yield
    finally:
        _FORCE_TORCHVISION = previous


def gpu_kernels_forced() -> bool:
    """True within force_torchvision_roi_align(): the models floor's CPU-only formulations (this kernel,
    the mask head's deconvolution as a GEMM) give way to the GPU's, so that counts on a CPU are the GPU
    path's."""
    return _FORCE_TORCHVISION


def roi_align(input: Tensor, boxes: Tensor, output_size: Union[int, Sequence[int]], spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False, kernel: str = "resdet") -> Tensor:
    """torchvision.ops.roi_align's arguments and result (boxes as a [K, 5] tensor of (batch index, x1, y1,
    x2, y2)). `kernel`: "resdet" uses the sparse-product kernel on CPU tensors (torchvision's elsewhere),
    "torchvision" always torchvision's."""
    if kernel not in ROI_ALIGN_KERNELS:
        raise ValueError(f"roi_align kernel must be one of {ROI_ALIGN_KERNELS}; got {kernel!r}")
    size = _pair(output_size)
    if kernel == "torchvision" or _FORCE_TORCHVISION or input.device.type != "cpu" or not isinstance(boxes, Tensor):
        return tv_roi_align(input, boxes, size, spatial_scale, sampling_ratio, aligned)
    if input.dim() != 4 or boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f"roi_align expects input [N, C, H, W] and boxes [K, 5]; got {tuple(input.shape)} and "
                         f"{tuple(boxes.shape)}")
    if not input.is_floating_point() or boxes.dtype != input.dtype:
        raise TypeError(f"roi_align: input and boxes must share a floating dtype; got {input.dtype} and {boxes.dtype}")
    return _RoIAlignCPU.apply(input, boxes, size, float(spatial_scale), int(sampling_ratio), bool(aligned))


def _pair(size) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class _Plan:
    """The sparse matrix A of one call: `pixel` [E] (row of the NHWC feature matrix), `weight` [E] and
    `per_bin` [R * S_h * S_w] (entries of each bin, bins in order)."""

    def __init__(self, pixel: Tensor, weight: Tensor, per_bin: Tensor):
        self.pixel, self.weight, self.per_bin = pixel, weight, per_bin

    def offsets(self) -> Tensor:
        return self.per_bin.cumsum(0) - self.per_bin


def _axis_taps(start: Tensor, bin_size: Tensor, grid: Tensor, bins: int, size: int):
    """One axis of the separable weights: for R RoIs, the first map index each bin touches, `base` [R, bins],
    and the summed bilinear weight of its samples at base + k, `taps` [R, bins, K], as torchvision's kernel
    places the samples (positions, validity, clamping) along this axis.

    `grid` [R] is the number of samples per bin (0 or less: none). K is the most map rows (or columns) any
    bin touches, at most `size`."""
    r = start.shape[0]
    dtype = start.dtype
    most = int(grid.max()) if r else 0  # host value of a CPU tensor: no device to wait for
    g = max(most, 1)
    i = torch.arange(g, dtype=dtype)
    p = torch.arange(bins, dtype=dtype)
    # torchvision: y = roi_start + ph * bin_size + (iy + .5) * bin_size / grid, evaluated in this order
    pos = (start[:, None, None] + p[:, None] * bin_size[:, None, None]) + \
        (i + 0.5) * bin_size[:, None, None] / grid.clamp(min=1).to(dtype)[:, None, None]
    valid = (i < grid[:, None, None]) & (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = pos.to(torch.int64)  # truncation = floor for pos >= 0
    top = low >= size - 1
    low = torch.where(top, size - 1, low)
    frac = torch.where(top, 0.0, pos - low.to(dtype))
    w_low = torch.where(valid, 1.0 - frac, 0.0)
    w_high = torch.where(valid, frac, 0.0)
    base = torch.where(valid, low, size).amin(2)
    last = torch.where(valid, low, -1).amax(2)
    k = int((last - base).max()) + 2 if r else 1
    k = max(1, min(k, size))
    base = base.clamp(max=size - k)  # all taps inside the map; the touched rows stay in [base, base + k)
    taps = torch.zeros(r, bins, k + 1, dtype=dtype)  # slot k: the "high" tap of a top-clamped sample (0)
    slot = (low - base[:, :, None]).clamp(0, k - 1)
    taps.scatter_add_(2, slot, w_low)
    taps.scatter_add_(2, slot + 1, w_high)
    return base, taps[:, :, :k], k


def _plan(rois: Tensor, height: int, width: int, out_h: int, out_w: int, scale: float, sampling_ratio: int,
          aligned: bool) -> _Plan:
    """A for the RoIs [R, 5] on an [N, C, height, width] map (entries bin by bin)."""
    offset = 0.5 if aligned else 0.0
    img = rois[:, 0].to(torch.int64)
    x1, y1 = rois[:, 1] * scale - offset, rois[:, 2] * scale - offset
    roi_w, roi_h = rois[:, 3] * scale - offset - x1, rois[:, 4] * scale - offset - y1
    if not aligned:  # the original RoIAlign makes every RoI at least 1x1
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full_like(img, sampling_ratio)
        grid_w = grid_h
    else:
        grid_h = torch.ceil(roi_h / out_h).to(torch.int64)
        grid_w = torch.ceil(roi_w / out_w).to(torch.int64)
    count = (grid_h * grid_w).clamp(min=1).to(rois.dtype)
    base_y, taps_y, ky = _axis_taps(y1, roi_h / out_h, grid_h, out_h, height)
    base_x, taps_x, kx = _axis_taps(x1, roi_w / out_w, grid_w, out_w, width)
    taps_y = taps_y / count[:, None, None]  # the mean over the bin's samples
    rows_y = (img[:, None] * height + base_y)[:, :, None] + torch.arange(ky)  # [R, out_h, ky] image rows
    cols_x = base_x[:, :, None] + torch.arange(kx)                          # [R, out_w, kx]
    pixels, weights, per_bin = [], [], []
    per_roi = out_h * out_w * ky * kx
    step = max(1, _CHUNK_ENTRIES // max(per_roi, 1))
    for a in range(0, rois.shape[0], step):
        b = a + step
        w = taps_y[a:b, :, None, :, None] * taps_x[a:b, None, :, None, :]     # [r, out_h, out_w, ky, kx]
        pix = rows_y[a:b, :, None, :, None] * width + cols_x[a:b, None, :, None, :]
        keep = w != 0
        pixels.append(pix[keep])
        weights.append(w[keep])
        per_bin.append(keep.flatten(3).sum(3).reshape(-1))
    if not pixels:
        empty = torch.zeros(0, dtype=torch.int64)
        return _Plan(empty, rois.new_zeros(0), empty)
    cat = (lambda xs: torch.cat(xs) if len(xs) > 1 else xs[0])
    return _Plan(cat(pixels), cat(weights), cat(per_bin))


class _RoIAlignCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, size: Tuple[int, int], scale: float, sampling_ratio: int,
                aligned: bool) -> Tensor:
        n, c, h, w = input.shape
        out_h, out_w = size
        plan = _plan(rois.detach(), h, w, out_h, out_w, scale, sampling_ratio, aligned)
        rows = input.detach().permute(0, 2, 3, 1).reshape(n * h * w, c)  # free when channels_last
        pooled = F.embedding_bag(plan.pixel, rows, plan.offsets(), mode="sum", per_sample_weights=plan.weight)
        ctx.plan, ctx.shape = plan, (n, c, h, w)
        ctx.channels_last = input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous()
        ctx.set_materialize_grads(False)
        return pooled.view(rois.shape[0], out_h, out_w, c).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        if grad is None:
            return None, None, None, None, None, None
        n, c, h, w = ctx.shape
        plan = ctx.plan
        grad_rows = grad.permute(0, 2, 3, 1).reshape(-1, c)  # [R * S_h * S_w, C]
        # A^T G as bags per pixel: the entries sorted by pixel (stable: a fixed summation order)
        bins = torch.repeat_interleave(torch.arange(plan.per_bin.numel()), plan.per_bin,
                                       output_size=plan.pixel.numel())
        pixel, order = torch.sort(plan.pixel, stable=True)
        starts = torch.searchsorted(pixel, torch.arange(n * h * w))
        grad_input = F.embedding_bag(bins[order], grad_rows, starts, mode="sum",
                                     per_sample_weights=plan.weight[order])
        grad_input = grad_input.view(n, h, w, c).permute(0, 3, 1, 2)
        if not ctx.channels_last:
            grad_input = grad_input.contiguous()
        return grad_input, None, None, None, None, None
