"""Region Proposal Network: a shared conv head over the pyramid, anchor matching and sampling for the
whole batch at once, and per-level top-k + NMS proposal selection (also batched: nms.grouped_nms over
all (image, level) groups, on CUDA one declared read whatever the batch)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anchors import AnchorGenerator
from .box_ops import BoxCoder, aligned_iou, box_sizes_ok, clip_boxes, match_boxes, sample_slots
from .nms import grouped_nms
from .structures import GroundTruth, top_k_per_image

__all__ = ["RPNHead", "RPN"]


class RPNHead(nn.Module):
    """3x3 conv + ReLU (`num_conv` of them: 2 in Detectron2's new baselines, after the TPU detection
    models), then 1x1 convs for A objectness logits and 4A box deltas, shared by all levels."""

    def __init__(self, *, in_channels: int, num_anchors: int, num_conv: int = 1):
        super().__init__()
        if num_conv < 1:
            raise ValueError(f"MODEL.RPN.NUM_CONV must be at least 1; got {num_conv}")
        convs = [nn.Conv2d(in_channels, in_channels, 3, padding=1) for _ in range(num_conv)]
        # one conv keeps the name `conv` (torchvision's and older checkpoints' layout); more are a Sequential
        # with the ReLUs between them (the last ReLU is applied in forward)
        self.conv = convs[0] if num_conv == 1 else nn.Sequential(
            *[m for c in convs[:-1] for m in (c, nn.ReLU())], convs[-1])
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for m in convs + [self.objectness_logits, self.anchor_deltas]:
            nn.init.normal_(m.weight, std=0.01)
            nn.init.constant_(m.bias, 0)

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


class RPN(nn.Module):
    """Proposals [N, P, 4] (+ a validity mask) from pyramid features; in training also the two losses."""

    def __init__(self, *, in_features: Sequence[str], head: RPNHead, anchor_generator: AnchorGenerator,
                 iou_thresholds: Sequence[float] = (0.3, 0.7), batch_size_per_image: int = 256,
                 positive_fraction: float = 0.5, bbox_reg_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 smooth_l1_beta: float = 1.0 / 9, pre_nms_topk: Tuple[int, int] = (2000, 1000),
                 post_nms_topk: Tuple[int, int] = (2000, 1000), nms_thresh: float = 0.7,
                 min_box_size: float = 1e-3, score_thresh: float = 0.0, loss_weight: float = 1.0):
        super().__init__()
        self.in_features = list(in_features)
        self.head = head
        self.anchor_generator = anchor_generator
        self.bg_iou, self.fg_iou = float(iou_thresholds[0]), float(iou_thresholds[1])
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.smooth_l1_beta = smooth_l1_beta
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.score_thresh = score_thresh
        self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg, channels: int) -> dict:
        r, a = cfg.MODEL.RPN, cfg.MODEL.ANCHOR_GENERATOR
        anchors = AnchorGenerator(sizes=a.SIZES, aspect_ratios=a.ASPECT_RATIOS)
        if len(set(anchors.num_anchors_per_location)) != 1:
            raise ValueError("MODEL.ANCHOR_GENERATOR: the shared RPN head needs the same number of anchors "
                             f"on every level; got {anchors.num_anchors_per_location}")
        if len(r.IN_FEATURES) != anchors.num_levels:
            raise ValueError(f"MODEL.RPN.IN_FEATURES has {len(r.IN_FEATURES)} levels but "
                             f"MODEL.ANCHOR_GENERATOR.SIZES has {anchors.num_levels}")
        return dict(in_features=r.IN_FEATURES, anchor_generator=anchors,
                    head=RPNHead(in_channels=channels, num_anchors=anchors.num_anchors_per_location[0],
                                 num_conv=r.NUM_CONV),
                    iou_thresholds=r.IOU_THRESHOLDS, batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
                    positive_fraction=r.POSITIVE_FRACTION, bbox_reg_weights=r.BBOX_REG_WEIGHTS,
                    smooth_l1_beta=r.SMOOTH_L1_BETA, pre_nms_topk=(r.PRE_NMS_TOPK_TRAIN, r.PRE_NMS_TOPK_TEST),
                    post_nms_topk=(r.POST_NMS_TOPK_TRAIN, r.POST_NMS_TOPK_TEST), nms_thresh=r.NMS_THRESH,
                    min_box_size=r.MIN_BOX_SIZE, score_thresh=r.SCORE_THRESH, loss_weight=r.LOSS_WEIGHT)

    def forward(self, features: Dict[str, Tensor], padded_size: Tuple[int, int], image_sizes: Tensor,
                gt: Optional[GroundTruth] = None) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
        feats = [features[f] for f in self.in_features]
        n = feats[0].shape[0]
        logits, deltas = self.head(feats)
        anchors = self.anchor_generator(padded_size, [x.shape[-2:] for x in feats])
        # [N, A, H, W] -> [N, H*W*A]: the (y, x, anchor) order of the anchors
        logits = [x.permute(0, 2, 3, 1).reshape(n, -1) for x in logits]
        deltas = [x.view(n, -1, 4, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
                  for x in deltas]
        proposals, valid = self._select_proposals(
            [x.detach() for x in logits], [x.detach() for x in deltas], anchors, image_sizes)
        losses = {}
        if self.training:
            if gt is None:
                raise ValueError("RPN: training needs ground truth")
            losses = self._losses(torch.cat(logits, 1), torch.cat(deltas, 1), torch.cat(anchors, 0), gt)
        return proposals, valid, losses

    def _select_proposals(self, logits: List[Tensor], deltas: List[Tensor], anchors: List[Tensor],
                          image_sizes: Tensor) -> Tuple[Tensor, Tensor]:
        """Per level top-k by objectness, decode, clip, drop small boxes, NMS per (image, level), then each
        image's best post_nms_topk: proposals [N, P, 4] and their validity [N, P], P = post_nms_topk.

        Nothing is read to the host: every (image, level) group has a known size (its top-k), boxes that
        fail the size or score test stay in place as zero-area boxes (whose IoU with anything is 0, so
        in NMS they neither suppress nor are suppressed, as if removed first) and are marked invalid.
        """
        n = logits[0].shape[0]
        rows = torch.arange(n, device=logits[0].device)[:, None]
        scores, boxes, level_sizes = [], [], []
        for lg, dl, an in zip(logits, deltas, anchors):
            k = min(self.pre_nms_topk[self.training], lg.shape[1])
            # rank in float32: under autocast the logits may be half precision, and ties there are not
            # the float32 model's ties
            top, idx = lg.float().topk(k, dim=1)
            decoded = self.box_coder.decode(dl[rows, idx].reshape(-1, 4).float(), an[idx].reshape(-1, 4))
            scores.append(top)
            boxes.append(decoded.view(n, k, 4))
            level_sizes.append(k)
        scores = torch.sigmoid(torch.cat(scores, 1))  # [N, K]
        boxes = torch.cat(boxes, 1)
        boxes = clip_boxes(boxes, image_sizes[:, 0, None].to(boxes.dtype), image_sizes[:, 1, None].to(boxes.dtype))
        keep = box_sizes_ok(boxes, self.min_box_size) & (scores >= self.score_thresh)
        num_levels, per_image = len(level_sizes), boxes.shape[1]
        level_of = torch.cat([torch.full((k,), lvl, dtype=torch.int64, device=boxes.device)
                              for lvl, k in enumerate(level_sizes)])
        groups = (rows * num_levels + level_of[None, :]).reshape(-1)  # (image, level): contiguous, sizes known
        flat_boxes, flat_scores, flat_keep = boxes.reshape(-1, 4), scores.reshape(-1), keep.reshape(-1)
        kept = grouped_nms(flat_boxes.masked_fill(~flat_keep[:, None], 0.0), flat_scores, groups, self.nms_thresh,
                           group_sizes=level_sizes * n)
        return top_k_per_image(flat_boxes[kept], kept // per_image, n, self.post_nms_topk[self.training],
                               valid=flat_keep[kept])

    def _losses(self, logits: Tensor, deltas: Tensor, anchors: Tensor, gt: GroundTruth) -> Dict[str, Tensor]:
        """Objectness (BCE) and box (smooth L1) losses over a balanced sample of anchors per image, both
        normalised by the number sampled, as torchvision's. The sample is `per_image` fixed slots per image
        (box_ops.sample_slots), so the losses are gathers and weighted sums: no host reads."""
        iou = aligned_iou(anchors[None, None], gt.boxes[:, :, None])  # [N, G, A]
        matched, labels = match_boxes(iou, gt.valid, self.fg_iou, self.bg_iou, allow_low_quality=True)
        del iou
        idx, is_pos, valid = sample_slots(labels, self.batch_size_per_image, self.positive_fraction)
        pos = is_pos & valid
        num_sampled = valid.sum().clamp(min=1).to(torch.float32)
        loss_obj = F.binary_cross_entropy_with_logits(logits.gather(1, idx).float(), pos.float(),
                                                      weight=valid.float(), reduction="sum") / num_sampled
        gt_boxes = gt.boxes.gather(1, matched.gather(1, idx)[..., None].expand(-1, -1, 4))  # [N, S, 4]
        targets = self.box_coder.encode(gt_boxes, anchors[idx])
        # negative slots: their "targets" can be inf (zero-size padding); keep them out of the sum
        targets = torch.where(pos[..., None], targets, 0.0)
        pred = deltas.gather(1, idx[..., None].expand(-1, -1, 4)).float()
        per_slot = F.smooth_l1_loss(pred, targets, beta=self.smooth_l1_beta, reduction="none")
        loss_box = torch.where(pos[..., None], per_slot, 0.0).sum() / num_sampled
        return {"loss_objectness": loss_obj * self.loss_weight, "loss_rpn_box_reg": loss_box * self.loss_weight}
