"""Batched NMS in a fixed-shape layout that both export formats can hold.

The eager model's `grouped_nms` sorts candidates by group and loops over the groups in Python, reading
their sizes on the host: neither torch.export nor ONNX can keep that. Here candidates arrive as a dense
block: boxes [G, R, 4] and scores [G, R], one row per NMS group ((image, level) in the RPN, (image,
class) in the box head), with scores < 0 marking slots that are not candidates (padding, filtered).
The result has the same shape: each slot's score where NMS kept it (and it is among the
`max_per_group` best kept of its row), else -1. Downstream a top-k over the kept scores picks each
image's proposals or detections, so every shape in the graph is fixed except inside NMS.

Two formulations of the same function:
- `dense_nms_torch`: torch + torchvision.ops.nms only, for the ExportedProgram (runs without resdet).
  The rows go into one nms call, each row offset into its own region of the plane (torchvision's
  coordinate trick). The offsets are added in float64: in float32 a box shifted by a million pixels
  loses the low bits of its coordinates, enough to flip an IoU comparison; in float64 the IoU equals the
  per-group float32 computation of the eager model to ~1e-7.
- `resdet_export::dense_nms`, a custom op whose ONNX translation is one NonMaxSuppression with the rows
  as its batch dimension (no offsets, float32 as the operator requires), plus a ScatterND back into the
  dense block. Its eager and fake kernels exist only so torch.export can trace it on the way to ONNX; the
  ONNX file holds standard operators only.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dense_nms_torch", "dense_nms_onnx_op", "onnx_translation_table"]


def _cap_per_row(kept: Tensor, max_per_group: int) -> Tensor:
    """Keep only each row's `max_per_group` best kept scores (the others become -1)."""
    if max_per_group <= 0 or max_per_group >= kept.shape[1]:
        return kept
    top = kept.topk(max_per_group, dim=1).values[:, -1:]  # the row's k-th best kept score
    # ties at the k-th score could keep a few more than k: the later per-image top-k still takes exactly
    # the best ones, so the detections do not change
    return torch.where(kept >= top, kept, kept.new_full((), -1.0))


def dense_nms_torch(boxes: Tensor, scores: Tensor, iou_threshold: float, max_per_group: int = 0) -> Tensor:
    """NMS within each row of boxes [G, R, 4] / scores [G, R] (score < 0: not a candidate).
    Returns [G, R]: the score where kept, -1 elsewhere."""
    from torchvision.ops import nms

    g, r = scores.shape
    cand = scores >= 0
    # each row's boxes shifted into their own square of side `span` (exact in float64); the extent is
    # taken over the whole block with non-candidates at 0, so no size is read on the host
    block = torch.where(cand[..., None], boxes, boxes.new_zeros(())).to(torch.float64)
    lo = block.min().clamp(max=0)
    span = block.max() - lo + 1
    row, col = cand.nonzero(as_tuple=True)
    shifted = block[row, col] - lo + (row.to(torch.float64) * span)[:, None]
    keep = nms(shifted, scores[row, col].to(torch.float64), iou_threshold)
    out = scores.new_full((g * r,), -1.0)
    flat_idx = row[keep] * r + col[keep]
    out = out.index_put((flat_idx,), scores[row[keep], col[keep]])
    return _cap_per_row(out.view(g, r), max_per_group)


@torch.library.custom_op("resdet_export::dense_nms", mutates_args=())
def dense_nms_onnx_op(boxes: Tensor, scores: Tensor, iou_threshold: float, max_per_group: int) -> Tensor:
    """The ONNX formulation as a torch op: same result as `dense_nms_torch`."""
    return dense_nms_torch(boxes, scores, iou_threshold, max_per_group)


@dense_nms_onnx_op.register_fake
def _(boxes, scores, iou_threshold, max_per_group):
    return torch.empty_like(scores)


def _onnx_dense_nms(boxes, scores, iou_threshold: float, max_per_group: int):
    """onnxscript translation: NonMaxSuppression over the rows (its batch axis), then ScatterND of the
    kept scores into a block of -1. NonMaxSuppression's candidates are the scores > score_threshold;
    -0.5 separates the real scores (>= 0) from the -1 of non-candidates."""
    from onnxscript import opset18 as op

    max_out = op.Constant(value_ints=[max_per_group if max_per_group > 0 else 2**31 - 1])
    iou = op.Constant(value_floats=[float(iou_threshold)])
    score_thr = op.Constant(value_floats=[-0.5])
    selected = op.NonMaxSuppression(boxes, op.Unsqueeze(scores, op.Constant(value_ints=[1])), max_out, iou,
                                    score_thr)  # [S, 3]: (row, class 0, column)
    index = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # [S, 2]
    kept = op.GatherND(scores, index)
    block = op.Expand(op.Constant(value_floats=[-1.0]), op.Shape(scores))
    return op.ScatterND(block, index, kept)


def onnx_translation_table():
    """What `torch.onnx.export(custom_translation_table=...)` needs to write the custom op."""
    return {torch.ops.resdet_export.dense_nms.default: _onnx_dense_nms}
