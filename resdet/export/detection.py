"""Faster / Mask R-CNN (standard or cascade RoI heads) re-expressed for export: the model's own submodules, with inference
post-processing in fixed shapes and without host reads.

`ExportableRCNN(model, nms="torch"|"onnx")` wraps a `GeneralizedRCNN` in eval mode and computes what
its inference does, but in tensors whose shapes do not depend on the data:

    boxes, scores, labels, num_detections[, mask_probs] = wrapper(images, image_sizes)

- images [N, 3, H, W] float RGB in 0-255, padded bottom/right to a multiple of `size_divisibility`
  (what is in the padding does not matter: normalisation happens inside and the padding is then set
  to zero, as the eager model pads after normalising); image_sizes [N, 2] int64, each image's (h, w)
  inside the batch.
- boxes [N, D, 4] (xyxy, in the frame of the images given), scores [N, D], labels [N, D] (1..K),
  num_detections [N]: each image's detections are its first num_detections rows, best first; the
  rest are zeros. D = TEST.DETECTIONS_PER_IMAGE. mask_probs [N, D, 1, M, M] (M = 28): probabilities of
  the detection's own class in its box, to be pasted into the image by the consumer
  (resdet.export.runtime.paste_detections does it with resdet's paste_masks).

What differs from the eager modules is only how the same numbers are arranged (anchors computed from
the feature shapes, per-level top-k padded to a fixed k, NMS over a dense (group, candidate) block, a
top-k instead of compaction, every proposal slot pooled with padding slots masked), so the detections
equal the eager model's; tests/export/test_detection_export.py checks it.
"""
from __future__ import annotations

import inspect
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from resdet.detection.box_ops import box_sizes_ok, clip_boxes
from resdet.detection.cascade import CascadeROIHeads
from resdet.detection.poolers import ROIPooler, assign_levels
from resdet.detection.postprocess import select_detections
from resdet.detection.rcnn import GeneralizedRCNN

from .nms import dense_nms_onnx_op, dense_nms_torch

__all__ = ["ExportableRCNN", "NMS_IMPLEMENTATIONS"]

NMS_IMPLEMENTATIONS = ("torch", "onnx")
# the smallest detection side the eager heads keep: select_detections' default (the heads do not pass one)
_DETECTION_MIN_SIZE = inspect.signature(select_detections).parameters["min_box_size"].default


def _anchors(cell: Tensor, padded_h, padded_w, grid_h, grid_w) -> Tensor:
    """The AnchorGenerator's grid for one level, from (possibly symbolic) sizes: stride = padded size //
    feature size, shifts in (y, x, anchor) order. All values are whole numbers, exact in float32."""
    stride_h, stride_w = padded_h // grid_h, padded_w // grid_w
    xs = torch.arange(grid_w, device=cell.device, dtype=torch.float32) * stride_w
    ys = torch.arange(grid_h, device=cell.device, dtype=torch.float32) * stride_h
    sy, sx = torch.meshgrid(ys, xs, indexing="ij")
    sx, sy = sx.reshape(-1), sy.reshape(-1)
    shifts = torch.stack((sx, sy, sx, sy), dim=1)
    return (shifts[:, None, :] + cell[None, :, :].to(torch.float32)).reshape(-1, 4)


def _pool(pooler: ROIPooler, features: List[Tensor], boxes: Tensor, batch_idx: Tensor) -> Tensor:
    """ROIPooler's multi-level RoIAlign without the host-side `if idx.numel()` (an empty level pools
    nothing): each level pools the boxes assigned to it, scattered back in place."""
    rois = torch.cat([batch_idx[:, None].to(boxes.dtype), boxes], dim=1)
    if len(features) == 1:
        return roi_align(features[0], rois, pooler.output_size, pooler.scales[0], pooler.sampling_ratio,
                         pooler.aligned)
    levels = assign_levels(boxes, pooler.min_level, pooler.max_level, pooler.canonical_box_size,
                           pooler.canonical_level)
    out = features[0].new_zeros((boxes.shape[0], features[0].shape[1]) + pooler.output_size)
    for lvl, (feat, scale) in enumerate(zip(features, pooler.scales)):
        idx = torch.nonzero(levels == lvl).squeeze(1)
        pooled = roi_align(feat, rois[idx], pooler.output_size, scale, pooler.sampling_ratio, pooler.aligned)
        out = out.index_put((idx,), pooled)
    return out


class ExportableRCNN(nn.Module):
    def __init__(self, model: GeneralizedRCNN, nms: str = "torch"):
        super().__init__()
        if not isinstance(model, GeneralizedRCNN):
            raise TypeError(f"ExportableRCNN wraps a resdet GeneralizedRCNN; got {type(model).__name__}")
        if nms not in NMS_IMPLEMENTATIONS:
            raise ValueError(f"nms must be one of {NMS_IMPLEMENTATIONS}; got {nms!r}")
        self.model = model.eval()
        self.nms = nms
        self.mask_on = model.roi_heads.mask_on

    @property
    def output_names(self) -> Tuple[str, ...]:
        return ("boxes", "scores", "labels", "num_detections") + (("mask_probs",) if self.mask_on else ())

    def _nms(self, boxes: Tensor, scores: Tensor, iou: float, cap: int) -> Tensor:
        if self.nms == "onnx":
            return dense_nms_onnx_op(boxes, scores, iou, cap)
        return dense_nms_torch(boxes, scores, iou, cap)

    # ------------------------------------------------------------------ stages
    def _normalise(self, images: Tensor, image_sizes: Tensor) -> Tensor:
        m = self.model
        x = (images.to(torch.float32) - m.pixel_mean[None]) / m.pixel_std[None]
        h, w = x.shape[-2], x.shape[-1]
        ys = torch.arange(h, device=x.device)[None, :, None] < image_sizes[:, 0, None, None]
        xs = torch.arange(w, device=x.device)[None, None, :] < image_sizes[:, 1, None, None]
        return x * (ys & xs)[:, None].to(x.dtype)

    def _proposals(self, feats: List[Tensor], padded_h, padded_w, image_sizes: Tensor) -> Tuple[Tensor, Tensor]:
        """The RPN's proposals [N, P, 4] and their objectness [N, P] (-1 for empty slots), best first."""
        rpn = self.model.rpn
        n = feats[0].shape[0]
        k = rpn.pre_nms_topk[False]
        logits, deltas = rpn.head(feats)
        rows = torch.arange(n, device=feats[0].device)[:, None]
        level_boxes, level_scores = [], []
        for lvl, (lg, dl, x) in enumerate(zip(logits, deltas, feats)):
            gh, gw = x.shape[-2], x.shape[-1]
            anchors = _anchors(getattr(rpn.anchor_generator, f"cell_anchors_{lvl}"), padded_h, padded_w, gh, gw)
            lg = lg.permute(0, 2, 3, 1).reshape(n, -1)
            dl = dl.view(n, -1, 4, gh, gw).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
            # the eager RPN takes min(k, A) per level; padding with k entries of -inf makes it always k
            padded = torch.cat([lg.float(), lg.new_full((n, k), float("-inf"), dtype=torch.float32)], 1)
            top, idx = padded.topk(k, dim=1)
            real = idx < lg.shape[1]
            idx = idx.clamp(max=lg.shape[1] - 1)
            boxes = rpn.box_coder.decode(dl[rows, idx].reshape(-1, 4).float(), anchors[idx].reshape(-1, 4))
            level_boxes.append(boxes.view(n, k, 4))
            level_scores.append(torch.where(real, torch.sigmoid(top), top.new_full((), -1.0)))
        boxes = torch.stack(level_boxes, 1)  # [N, L, k, 4]
        scores = torch.stack(level_scores, 1)  # [N, L, k]
        hs = image_sizes[:, 0, None, None].to(boxes.dtype)
        ws = image_sizes[:, 1, None, None].to(boxes.dtype)
        boxes = clip_boxes(boxes, hs, ws)
        ok = box_sizes_ok(boxes, rpn.min_box_size) & (scores >= rpn.score_thresh) & (scores >= 0)
        scores = torch.where(ok, scores, scores.new_full((), -1.0))
        num_levels = boxes.shape[1]
        post = rpn.post_nms_topk[False]
        kept = self._nms(boxes.reshape(n * num_levels, k, 4), scores.reshape(n * num_levels, k), rpn.nms_thresh, post)
        kept = kept.view(n, num_levels * k)
        top, idx = kept.topk(min(post, num_levels * k), dim=1)
        proposals = boxes.view(n, num_levels * k, 4).gather(1, idx[:, :, None].expand(-1, -1, 4))
        return proposals, top

    def _cascade_scores(self, feats: List[Tensor], flat: Tensor, img: Tensor, image_sizes: Tensor):
        """CascadeROIHeads' stages on every proposal slot: the last stage's boxes [N*P, 1, 4] (class-agnostic,
        clipped) and the stages' mean class probabilities [N*P, K+1], in the eager heads' arithmetic."""
        heads = self.model.roi_heads
        hs, ws = image_sizes[img, 0].to(torch.float32), image_sizes[img, 1].to(torch.float32)
        boxes, total, deltas = flat, None, None
        for k, (head, predictor) in enumerate(zip(heads.box_heads, heads.box_predictors)):
            if k > 0:  # the previous stage's regression of the same slots, clipped (CascadeROIHeads._refined)
                boxes = clip_boxes(heads.box_coders[k - 1].decode(deltas.float(), boxes)[:, 0], hs, ws)
            logits, deltas = predictor(head(_pool(heads.box_pooler, feats, boxes, img)))
            probs = F.softmax(logits.float(), -1)
            total = probs if total is None else total + probs
        final = heads.box_coders[-1].decode(deltas.float(), boxes)
        return clip_boxes(final, hs[:, None], ws[:, None]), total * (1.0 / len(heads.box_heads))

    def _detections(self, feats: List[Tensor], proposals: Tensor, objectness: Tensor, image_sizes: Tensor):
        heads = self.model.roi_heads
        n, p = proposals.shape[:2]
        img = torch.arange(n, device=proposals.device).repeat_interleave(p)
        flat = proposals.reshape(-1, 4)
        if isinstance(heads, CascadeROIHeads):
            boxes, scores = self._cascade_scores(feats, flat, img, image_sizes)
        else:
            logits, deltas = heads.box_predictor(heads.box_head(_pool(heads.box_pooler, feats, flat, img)))
            boxes = heads.box_coder.decode(deltas.float(), flat)  # [N*P, K+1, 4], or [N*P, 1, 4] class-agnostic
            boxes = clip_boxes(boxes, image_sizes[img, 0, None].to(boxes.dtype),
                               image_sizes[img, 1, None].to(boxes.dtype))
            scores = F.softmax(logits.float(), -1)
        num_classes = scores.shape[1] - 1
        if boxes.shape[1] == 1:  # class-agnostic regression: every class takes the one box
            boxes = boxes.expand(-1, num_classes + 1, -1)
        boxes = boxes[:, 1:]
        scores = scores[:, 1:]
        ok = (scores > heads.score_thresh) & box_sizes_ok(boxes, _DETECTION_MIN_SIZE) & (objectness.reshape(-1, 1) >= 0)
        scores = torch.where(ok, scores, scores.new_full((), -1.0))
        # NMS rows are (image, class): [N, K, P]
        boxes = boxes.reshape(n, p, num_classes, 4).permute(0, 2, 1, 3)
        scores = scores.view(n, p, num_classes).permute(0, 2, 1)
        d = heads.detections_per_image
        kept = self._nms(boxes.reshape(n * num_classes, p, 4), scores.reshape(n * num_classes, p),
                         heads.nms_thresh, d)
        top, idx = kept.reshape(n, num_classes * p).topk(min(d, num_classes * p), dim=1)
        valid = top >= 0
        det_boxes = boxes.reshape(n, num_classes * p, 4).gather(1, idx[:, :, None].expand(-1, -1, 4))
        det_boxes = det_boxes * valid[:, :, None].to(det_boxes.dtype)
        labels = torch.where(valid, idx // p + 1, torch.zeros_like(idx))
        det_scores = torch.where(valid, top, torch.zeros_like(top))
        return det_boxes, det_scores, labels, valid.sum(1)

    def _masks(self, feats: List[Tensor], boxes: Tensor, labels: Tensor) -> Tensor:
        heads = self.model.roi_heads
        n, d = labels.shape
        img = torch.arange(n, device=boxes.device).repeat_interleave(d)
        logits = heads.mask_head(_pool(heads.mask_pooler, feats, boxes.reshape(-1, 4), img))  # [N*D, K+1, M, M]
        m = logits.shape[-1]
        picked = logits.gather(1, labels.reshape(-1, 1, 1, 1).expand(-1, 1, m, m))
        probs = torch.sigmoid(picked.float()) * (labels.reshape(-1, 1, 1, 1) > 0).to(torch.float32)
        return probs.view(n, d, 1, m, m)

    def forward(self, images: Tensor, image_sizes: Tensor):
        m = self.model
        x = self._normalise(images, image_sizes)
        features = m.fpn(m.backbone(x))
        rpn_feats = [features[f] for f in m.rpn.in_features]
        proposals, objectness = self._proposals(rpn_feats, x.shape[-2], x.shape[-1], image_sizes)
        roi_feats = [features[f] for f in m.roi_heads.in_features]
        boxes, scores, labels, count = self._detections(roi_feats, proposals, objectness, image_sizes)
        if not self.mask_on:
            return boxes, scores, labels, count
        return boxes, scores, labels, count, self._masks(roi_feats, boxes, labels)
