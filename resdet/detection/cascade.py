"""Cascade R-CNN (Cai and Vasconcelos 2018): box stages at rising IoU thresholds, each refining the boxes
of the one before, as Detectron2's CascadeROIHeads does, batched like the standard heads.

Training. Stage 0 samples RoIs exactly as StandardROIHeads (IoU_0 = MODEL.ROI_HEADS.IOU_THRESHOLDS[0],
BATCH_SIZE_PER_IMAGE slots, the ground truth appended). Stage k > 0 takes stage k-1's class-agnostic
regression of those same RoIs (detached: no gradient flows through a box into the stage before), clipped to
the image, and labels every one of them against the ground truth at IoU_k, with no new sampling; boxes
that clipping leaves empty are left out of its losses (Detectron2 drops them; here they keep their slot,
masked, so nothing is read to the host). Each stage has its own box head, predictor and box-delta weights,
its own losses (`loss_classifier_stage<k>`, `loss_box_reg_stage<k>`: cross-entropy over its RoIs, L1 of
its foreground RoIs' deltas summed and divided by its RoIs), and the gradient each stage sends into the
shared pooled features is scaled by 1 / stages (the paper averages the stages' losses but keeps each
head's gradient whole; scaling only the features' gradient does both). The mask head trains on stage 0's
foreground RoIs, as Detectron2's Cascade Mask R-CNN does.

Inference. Every proposal goes through every stage (stage k pools stage k-1's boxes); a detection's class
scores are the mean of the stages' softmax scores, its box the last stage's regression; NMS and the top-k
are the standard heads' (`postprocess.detections_from_scores`), and the mask head runs on the final
detections.

Host reads: one more per extra stage than the standard heads (the RoIs per pyramid level of the new
boxes, which plan the pooler's calls), in training and in inference: 5 per training step and per
inference call with three stages (tests/detection/test_cascade.py).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resdet.config.node import ConfigError
from resdet.utils.counting import declared_sync

from .box_ops import BoxCoder, aligned_iou, clip_boxes, match_boxes
from .poolers import ROIPooler
from .postprocess import decode_clipped, detections_from_scores
from .roi_heads import ROI_HEADS_REGISTRY, BoxHead, BoxPredictor, MaskHead, StandardROIHeads, build_box_head
from .structures import GroundTruth

__all__ = ["CascadeROIHeads", "scale_gradient"]


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """`x` in the forward pass; its gradient multiplied by `scale` in the backward pass."""
    return _ScaleGradient.apply(x, scale)


@ROI_HEADS_REGISTRY.register()
class CascadeROIHeads(StandardROIHeads):
    """Cascade box stages (one BoxHead + class-agnostic BoxPredictor + BoxCoder each) on top of the standard
    heads' sampling, pooling, post-processing and mask head (see the module's docstring)."""

    def __init__(self, *, in_features: Sequence[str], box_pooler: ROIPooler, box_heads: Sequence[BoxHead],
                 box_predictors: Sequence[BoxPredictor], stage_ious: Sequence[float],
                 stage_reg_weights: Sequence[Sequence[float]], num_classes: int, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, smooth_l1_beta: float = 0.0, proposal_append_gt: bool = True,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_image: int = 100,
                 mask_pooler: Optional[ROIPooler] = None, mask_head: Optional[MaskHead] = None):
        stages = len(stage_ious)
        if not stages or not (len(box_heads) == len(box_predictors) == len(stage_reg_weights) == stages):
            raise ValueError(f"CascadeROIHeads needs one box head, predictor and weight tuple per stage: got "
                             f"{len(box_heads)} heads, {len(box_predictors)} predictors, {len(stage_reg_weights)} "
                             f"weight tuples for {stages} IoU thresholds {list(stage_ious)}")
        if any(p.bbox_pred.out_features != 4 for p in box_predictors):
            raise ValueError("CascadeROIHeads: every stage regresses one class-agnostic box "
                             "(MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True)")
        super().__init__(in_features=in_features, box_pooler=box_pooler, box_head=None, box_predictor=None,
                         num_classes=num_classes, iou_threshold=stage_ious[0],
                         batch_size_per_image=batch_size_per_image, positive_fraction=positive_fraction,
                         bbox_reg_weights=stage_reg_weights[0], smooth_l1_beta=smooth_l1_beta,
                         proposal_append_gt=proposal_append_gt, score_thresh=score_thresh, nms_thresh=nms_thresh,
                         detections_per_image=detections_per_image, mask_pooler=mask_pooler, mask_head=mask_head)
        self.box_heads = nn.ModuleList(box_heads)
        self.box_predictors = nn.ModuleList(box_predictors)
        self.stage_ious = tuple(float(t) for t in stage_ious)
        self.box_coders = [BoxCoder(w) for w in stage_reg_weights]

    @property
    def num_stages(self) -> int:
        return len(self.box_heads)

    @classmethod
    def from_config(cls, cfg, channels: int, strides: Dict[str, int]) -> dict:
        kwargs = super().from_config(cfg, channels, strides)
        ch, bh = cfg.MODEL.ROI_BOX_CASCADE_HEAD, cfg.MODEL.ROI_BOX_HEAD
        ious, weights = [float(t) for t in ch.IOUS], [tuple(w) for w in ch.BBOX_REG_WEIGHTS]
        if not bh.CLS_AGNOSTIC_BBOX_REG:
            raise ConfigError("MODEL.ROI_HEADS.NAME 'CascadeROIHeads' regresses class-agnostic boxes: set "
                              "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True")
        if len(weights) != len(ious) or any(len(w) != 4 for w in weights):
            raise ConfigError(f"MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS needs one (wx, wy, ww, wh) per stage of "
                              f"MODEL.ROI_BOX_CASCADE_HEAD.IOUS {ious}; got {ch.BBOX_REG_WEIGHTS}")
        if ious[0] != float(cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS[0]):
            raise ConfigError(f"MODEL.ROI_BOX_CASCADE_HEAD.IOUS[0] ({ious[0]}) must equal "
                              f"MODEL.ROI_HEADS.IOU_THRESHOLDS[0] ({cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS[0]}): the first "
                              "stage samples its RoIs at that threshold")
        heads = [build_box_head(cfg, channels) for _ in ious]
        for drop in ("box_head", "box_predictor", "iou_threshold", "bbox_reg_weights"):
            del kwargs[drop]
        return dict(kwargs, box_heads=heads, stage_ious=ious, stage_reg_weights=weights,
                    box_predictors=[BoxPredictor(in_dim=h.out_dim, num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
                                                 cls_agnostic=True) for h in heads])

    # ------------------------------------------------------------------ stages
    def _run_stage(self, k: int, feats: List[Tensor], boxes: Tensor, img: Tensor, levels: Tensor,
                   level_counts: Sequence[int]) -> Tuple[Tensor, Tensor]:
        pooled = self.box_pooler(feats, boxes, img, levels, level_counts)
        if self.training:
            pooled = scale_gradient(pooled, 1.0 / self.num_stages)
        return self.box_predictors[k](self.box_heads[k](pooled))

    def _refined(self, k: int, deltas: Tensor, boxes: Tensor, img: Tensor, image_sizes: Tensor) -> Tensor:
        """Stage k's boxes [R, 4] applied to its input boxes, detached and clipped to each row's image."""
        out = self.box_coders[k].decode(deltas.detach().float(), boxes)[:, 0]
        return clip_boxes(out, image_sizes[img, 0].to(out.dtype), image_sizes[img, 1].to(out.dtype))

    def _levels(self, boxes: Tensor) -> Tuple[Tensor, List[int]]:
        levels = self.box_pooler.levels(boxes)
        with declared_sync(boxes.device, "a cascade stage's RoIs per level"):
            return levels, self.box_pooler.count_levels(levels).tolist()

    def _label(self, k: int, boxes: Tensor, img: Tensor, live: Tensor, gt: GroundTruth):
        """Class [R] (0 = background), matched gt [R] and fg [R] of boxes [R, 4] at stage k's IoU threshold."""
        iou = aligned_iou(boxes[:, None, :], gt.boxes[img])  # [R, G]: each box against its own image's gt
        matched, labels = match_boxes(iou[:, :, None], gt.valid[img], self.stage_ious[k], self.stage_ious[k], False)
        matched, fg = matched[:, 0], (labels[:, 0] == 1) & live
        return torch.where(fg, gt.labels[img, matched], 0), matched, fg

    def _stage_losses(self, k: int, logits: Tensor, deltas: Tensor, boxes: Tensor, img: Tensor, cls: Tensor,
                      gt_idx: Tensor, fg: Tensor, live: Optional[Tensor], gt: GroundTruth) -> Dict[str, Tensor]:
        """Cross-entropy over the stage's RoIs and L1 (smooth L1) of its fg RoIs' deltas, summed and divided
        by its RoIs; `live` (None: all) marks the RoIs that count (boxes that clipping left non-empty)."""
        if live is None:
            loss_cls = F.cross_entropy(logits, cls)
            count = max(cls.numel(), 1)
        else:
            count = live.sum().clamp(min=1).to(torch.float32)
            loss_cls = torch.where(live, F.cross_entropy(logits, cls, reduction="none"), 0.0).sum() / count
        targets = self.box_coders[k].encode(gt.boxes[img, gt_idx], boxes)
        targets = torch.where(fg[:, None], targets, 0.0)  # bg rows may match zero-size padding: inf
        per_row = F.smooth_l1_loss(deltas.float(), targets, beta=self.smooth_l1_beta, reduction="none")
        loss_box = torch.where(fg[:, None], per_row, 0.0).sum() / count
        return {f"loss_classifier_stage{k}": loss_cls, f"loss_box_reg_stage{k}": loss_box}

    # ------------------------------------------------------------------ forward
    def forward(self, features: Dict[str, Tensor], proposals: Tensor, valid: Tensor, image_sizes: Tensor,
                gt: Optional[GroundTruth] = None):
        feats = [features[f] for f in self.in_features]
        if self.training:
            if gt is None:
                raise ValueError("CascadeROIHeads: training needs ground truth")
            return None, self._training_forward_cascade(feats, proposals, valid, image_sizes, gt)
        return self._inference_result(feats, *self.detect(feats, proposals, valid, image_sizes)), {}

    def detect(self, feats: List[Tensor], proposals: Tensor, valid: Tensor,
               image_sizes: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The cascade's box branch at test time (StandardROIHeads.detect's contract; test-time augmentation
        calls it per view): every proposal through every stage, the stages' mean scores, the last stage's
        boxes. One host read for the proposals per level, one per extra stage, plus the NMS's."""
        n, p = valid.shape
        flat = proposals.reshape(-1, 4)
        levels = self.box_pooler.levels(flat)
        with declared_sync(proposals.device, "proposals per level"):
            counts = self.box_pooler.count_levels(levels, valid.reshape(-1)).tolist()
        rows = torch.argsort(~valid.reshape(-1), stable=True)[: sum(counts)]
        boxes, img, levels = flat[rows], rows // p, levels[rows]
        total = deltas = None
        for k in range(self.num_stages):
            if k > 0:
                boxes = self._refined(k - 1, deltas, boxes, img, image_sizes)
                levels, counts = self._levels(boxes)
            logits, deltas = self._run_stage(k, feats, boxes, img, levels, counts)
            probs = F.softmax(logits.float(), -1)
            total = probs if total is None else total + probs
        scores = total * (1.0 / self.num_stages)  # the stages' mean, as Detectron2 computes it
        final = decode_clipped(deltas, boxes, img, image_sizes, self.box_coders[-1], scores.shape[1])
        return detections_from_scores(final, scores, img, n, self.score_thresh, self.nms_thresh,
                                      self.detections_per_image)

    def _training_forward_cascade(self, feats: List[Tensor], proposals: Tensor, valid: Tensor, image_sizes: Tensor,
                                  gt: GroundTruth) -> Dict[str, Tensor]:
        boxes, cls, gt_idx, fg, ok = self._sample(proposals, valid, gt)
        n, s = ok.shape
        flat_boxes = boxes.reshape(-1, 4)
        box_levels = self.box_pooler.levels(flat_boxes)
        counts = [self.box_pooler.count_levels(box_levels, ok.reshape(-1))]
        if self.mask_on:
            mask_levels = self.mask_pooler.levels(flat_boxes)
            counts.append(self.mask_pooler.count_levels(mask_levels, fg.reshape(-1)))
        # stage 0's read of data-dependent sizes: RoIs (and fg RoIs) per pyramid level
        with declared_sync(flat_boxes.device, "RoIs per level"):
            counts = torch.cat(counts).tolist()
        box_counts, fg_counts = counts[: self.box_pooler.num_levels], counts[self.box_pooler.num_levels:]
        rows = torch.argsort(~ok.reshape(-1), stable=True)[: sum(box_counts)]  # valid slots, (image, slot) order
        img = rows // s
        b0, c0, gi0, f0 = flat_boxes[rows], cls.reshape(-1)[rows], gt_idx.reshape(-1)[rows], fg.reshape(-1)[rows]
        b, c, gi, f, live = b0, c0, gi0, f0, None
        levels, level_counts = box_levels[rows], box_counts
        losses: Dict[str, Tensor] = {}
        deltas = None
        for k in range(self.num_stages):
            if k > 0:
                b = self._refined(k - 1, deltas, b, img, image_sizes)
                live = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
                levels, level_counts = self._levels(b)
                c, gi, f = self._label(k, b, img, live, gt)
            logits, deltas = self._run_stage(k, feats, b, img, levels, level_counts)
            losses.update(self._stage_losses(k, logits, deltas, b, img, c, gi, f, live, gt))
        if self.mask_on:
            losses["loss_mask"] = self._mask_loss(feats, b0, img, c0, gi0, f0, mask_levels[rows], fg_counts, gt)
        return losses
