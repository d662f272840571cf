"""Test-time augmentation around a GeneralizedRCNN: several views of every image, their detections merged.

    model = with_test_time_augmentation(cfg, build_detection_model(cfg))   # a TTADetector if TEST.AUG.ENABLED
    outs = model(images, original_sizes=[(h0, w0), ...])                    # GeneralizedRCNN's interface

Each image is seen at every shorter side of `min_sizes` (the longer side capped at `max_size`, the
rounding of INPUT.RESIZE_ROUNDING) and, with `flip`, mirrored too. A view is resized (bilinear, as cv2's
INTER_LINEAR samples) from the image given, which is the test-time resize of the original as
evaluation and the predictor make it (Detectron2 starts its views from that image as well); a view of
the given size is the given image itself, so one view of INPUT.MIN_SIZE_TEST without flip is the
plain model, exactly (tested). Per view the model runs its backbone, FPN, RPN and box head on the
whole batch; the boxes are flipped back, scaled to the original frame and merged per image and class:
"nms" keeps the best of overlapping boxes at the model's NMS threshold (Detectron2's merge), "vote"
then replaces each kept box by the score-weighted mean of the boxes of its class that overlap it by
`vote_iou` or more (box voting, Gidaris & Komodakis 2015; the kept box's score is kept). For Mask R-CNN
the mask head runs again on the merged boxes in every view (mapped into it) and the views' mask
probabilities are averaged, the mirrored views' flipped back first, before pasting (Detectron2's
scheme). Default views follow training: INPUT.MIN_SIZE_TRAIN and INPUT.MAX_SIZE_TRAIN.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from .box_ops import grouped_nms
from .checks import check_images
from .postprocess import scale_boxes
from .structures import sizes_tensor, top_k_per_image

__all__ = ["TTADetector", "with_test_time_augmentation", "MERGE_METHODS"]

MERGE_METHODS = ("nms", "vote")


def _view_size(h: int, w: int, short: int, max_size: int, rounding: str) -> Tuple[int, int]:
    # the test-time resize's rule (resdet/data/transforms.ResizeShortestEdge)
    scale = min(short / min(h, w), max_size / max(h, w))
    r = math.floor if rounding == "floor" else round
    return max(1, int(r(h * scale))), max(1, int(r(w * scale)))


def _flip_boxes(boxes: Tensor, widths: Tensor) -> Tensor:
    """Boxes [..., 4] mirrored in images of widths broadcast against boxes[..., 0]."""
    return torch.stack((widths - boxes[..., 2], boxes[..., 1], widths - boxes[..., 0], boxes[..., 3]), -1)


class TTADetector(nn.Module):
    """A GeneralizedRCNN seen through several views of each image (inference only)."""

    def __init__(self, model: nn.Module, *, min_sizes: Sequence[int], max_size: int, flip: bool = True,
                 merge: str = "nms", vote_iou: float = 0.8, rounding: str = "round"):
        super().__init__()
        if not min_sizes or min(int(s) for s in min_sizes) <= 0:
            raise ValueError(f"TEST.AUG.MIN_SIZES must be positive sizes; got {list(min_sizes)}")
        if max_size <= 0:
            raise ValueError(f"TEST.AUG.MAX_SIZE must be positive; got {max_size}")
        if merge not in MERGE_METHODS:
            raise ValueError(f"TEST.AUG.MERGE must be one of {MERGE_METHODS}; got {merge!r}")
        if not 0.0 < vote_iou <= 1.0:
            raise ValueError(f"TEST.AUG.VOTE_IOU must be in (0, 1]; got {vote_iou}")
        self.model = model
        self.views = [(int(s), f) for s in min_sizes for f in ((False, True) if flip else (False,))]
        self.max_size, self.merge, self.vote_iou, self.rounding = int(max_size), merge, float(vote_iou), rounding
        super().train(False)  # inference only, from the start (callers that restore a mode restore eval)

    @classmethod
    def from_config(cls, cfg) -> dict:
        aug = cfg.TEST.AUG
        return dict(min_sizes=list(aug.MIN_SIZES) or list(cfg.INPUT.MIN_SIZE_TRAIN),
                    max_size=aug.MAX_SIZE or cfg.INPUT.MAX_SIZE_TRAIN, flip=aug.FLIP, merge=aug.MERGE,
                    vote_iou=aug.VOTE_IOU, rounding=cfg.INPUT.RESIZE_ROUNDING)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def train(self, mode: bool = True) -> "TTADetector":
        if mode:
            raise RuntimeError("TTADetector is for inference only; train the model it wraps")
        return super().train(False)

    # ------------------------------------------------------------------ views
    def _view_images(self, images: Sequence[Tensor], original: List[Tuple[int, int]], short: int,
                     flip: bool) -> List[Tensor]:
        out = []
        for im, (h0, w0) in zip(images, original):  # one resize per image: sizes differ
            size = _view_size(h0, w0, short, self.max_size, self.rounding)
            if tuple(im.shape[-2:]) != size:
                im = F.interpolate(im[None].float(), size=size, mode="bilinear", align_corners=False)[0]
            out.append(im.flip(-1) if flip else im)
        return out

    def _detect(self, images: List[Tensor]):
        """Backbone to box head on one view of the batch: (RoI features, image sizes [N, 2], boxes
        [N, D, 4] in the view's frame, scores, labels, valid)."""
        m = self.model
        batch = m.preprocess(images)
        features = m.fpn(m.backbone(batch.tensor))
        proposals, valid, _ = m.rpn(features, batch.padded_size, batch.image_sizes, None)
        feats = [features[f] for f in m.roi_heads.in_features]
        boxes, scores, labels, ok = m.roi_heads.detect(feats, proposals, valid, batch.image_sizes)
        return feats, batch.image_sizes, boxes, scores, labels, ok

    # ------------------------------------------------------------------ merging
    def _merge(self, boxes: Tensor, scores: Tensor, labels: Tensor, ok: Tensor):
        """Per-image, per-class NMS over every view's detections [N, C, ...], then each image's best
        DETECTIONS_PER_IMAGE: padded (boxes [N, D, 4], scores, labels, valid). One host read (the
        candidates per group), as the model's own detection NMS."""
        heads = self.model.roi_heads
        n, c = ok.shape
        k = heads.num_classes + 1
        img = torch.arange(n, device=ok.device)[:, None].expand(n, c).reshape(-1)
        flat_boxes, flat_scores, flat_labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
        groups = img * k + flat_labels
        keep = ok.reshape(-1)
        per_group = torch.zeros(n * k, dtype=torch.int64, device=ok.device).index_add_(
            0, groups, keep.to(torch.int64)).tolist()
        cand = torch.argsort(~keep, stable=True)[: sum(per_group)]
        cand = cand[torch.argsort(groups[cand], stable=True)]
        kept = cand[grouped_nms(flat_boxes[cand], flat_scores[cand], groups[cand], heads.nms_thresh,
                                group_sizes=[g for g in per_group if g])]
        out_boxes, valid, out_scores, out_labels = top_k_per_image(
            flat_boxes[kept], img[kept], n, heads.detections_per_image, extra=(flat_scores[kept], flat_labels[kept]))
        if self.merge == "vote":
            out_boxes = self._vote(out_boxes, out_labels, valid, flat_boxes[cand], flat_scores[cand], groups[cand], k)
        return out_boxes, out_scores, out_labels, valid

    def _vote(self, boxes: Tensor, labels: Tensor, valid: Tensor, cand_boxes: Tensor, cand_scores: Tensor,
              cand_groups: Tensor, k: int) -> Tensor:
        """Each kept box [N, D, 4] as the score-weighted mean of the candidates of its image and class
        overlapping it by vote_iou or more (itself among them)."""
        n, d = valid.shape
        img = torch.arange(n, device=boxes.device)[:, None].expand(n, d)
        groups = (img * k + labels).reshape(-1)
        flat = boxes.reshape(-1, 4)
        same = groups[:, None] == cand_groups[None, :]
        weights = torch.where(same & (box_iou(flat, cand_boxes) >= self.vote_iou), cand_scores[None, :], 0.0)
        total = weights.sum(1, keepdim=True)
        voted = torch.where(total > 0, weights @ cand_boxes / total.clamp(min=1e-12), flat)
        return torch.where(valid.reshape(-1, 1), voted, flat).reshape(n, d, 4)

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def forward(self, images: Sequence[Tensor], original_sizes: Optional[Sequence[Tuple[int, int]]] = None,
                paste_masks: bool = True) -> List[Dict[str, Tensor]]:
        check_images(images)
        m = self.model
        if m.training:
            raise RuntimeError("TTADetector runs the model in eval mode; call .eval() first")
        given = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        original = [(int(h), int(w)) for h, w in original_sizes] if original_sizes is not None else given
        if len(original) != len(images):
            raise ValueError(f"original_sizes has {len(original)} entries for {len(images)} images")
        device = m.pixel_mean.device
        orig_t = sizes_tensor(original, device)
        views, parts = [], []
        for short, flip in self.views:
            feats, sizes, boxes, scores, labels, ok = self._detect(self._view_images(images, original, short, flip))
            if flip:
                boxes = _flip_boxes(boxes, sizes[:, None, 1].to(boxes.dtype))
            views.append((feats, sizes, flip))
            parts.append((scale_boxes(boxes, sizes, orig_t), scores, labels, ok))
        boxes, scores, labels, valid = self._merge(*(torch.cat([p[j] for p in parts], 1) for j in range(4)))
        counts = valid.sum(1).tolist()  # read: detections per image
        rows = torch.argsort(~valid.reshape(-1), stable=True)[: sum(counts)]
        result = {"boxes": boxes, "scores": scores, "labels": labels, "valid": valid, "counts": counts, "rows": rows}
        if m.roi_heads.mask_on:
            result["mask_probs"] = self._masks(views, boxes.reshape(-1, 4)[rows], rows // valid.shape[1],
                                               labels.reshape(-1)[rows], orig_t)
        # boxes are in the original frame already: postprocess keeps them and pastes there
        return m.postprocess(result, orig_t, None, original, paste_masks)

    def _masks(self, views, boxes: Tensor, img: Tensor, labels: Tensor, orig_t: Tensor) -> Tensor:
        """The mask head on the merged boxes [R, 4] (original frame) in every view, probabilities
        averaged ([R, 1, M, M]; mirrored views flipped back)."""
        heads = self.model.roi_heads
        total = None
        for feats, sizes, flip in views:
            ratio = sizes[img].to(boxes.dtype) / orig_t[img].to(boxes.dtype)  # (h, w) per box
            in_view = boxes * torch.stack((ratio[:, 1], ratio[:, 0], ratio[:, 1], ratio[:, 0]), 1)
            if flip:
                in_view = _flip_boxes(in_view, sizes[img, 1].to(boxes.dtype))
            probs = heads.predict_masks(feats, in_view, img, labels)
            probs = probs.flip(-1) if flip else probs
            total = probs if total is None else total + probs
        return total / len(views)


def with_test_time_augmentation(cfg, model: nn.Module) -> nn.Module:
    """`model` wrapped in a TTADetector when TEST.AUG.ENABLED, else `model` itself."""
    if not cfg.TEST.AUG.ENABLED:
        return model
    return TTADetector(model, **TTADetector.from_config(cfg))
