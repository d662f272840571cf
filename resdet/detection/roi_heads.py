"""RoI heads of Faster / Mask R-CNN: proposal sampling, the two-FC box head with class-specific
regression, and the four-conv mask head. Sampling, box targets and mask targets are computed for
the whole batch at once (padded [N, P] blocks, one roi_align call for all mask targets)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from .box_ops import BoxCoder, aligned_iou, match_boxes, sample_slots
from .poolers import ROIPooler
from .postprocess import select_detections
from .structures import GroundTruth, host_tensor

__all__ = ["BoxHead", "BoxPredictor", "MaskHead", "StandardROIHeads"]


class BoxHead(nn.Module):
    """Flatten the pooled RoI features and apply `num_fc` fully connected layers with ReLU."""

    def __init__(self, *, in_channels: int, resolution: int, fc_dim: int = 1024, num_fc: int = 2):
        super().__init__()
        dims = [in_channels * resolution * resolution] + [fc_dim] * num_fc
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        for fc in self.fcs:  # Detectron2's c2_xavier_fill
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.constant_(fc.bias, 0)
        self.out_dim = dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return x


class BoxPredictor(nn.Module):
    """Class scores (K + 1, background at index 0) and class-specific box deltas (4 (K + 1))."""

    def __init__(self, *, in_dim: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(in_dim, 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.cls_score.bias, 0)
        nn.init.constant_(self.bbox_pred.bias, 0)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class MaskHead(nn.Module):
    """`num_conv` 3x3 convs with ReLU, a 2x transposed conv with ReLU, and per-class 1x1 mask logits
    (K + 1 channels like torchvision, so its weights load as they are; channel 0 is never used)."""

    def __init__(self, *, in_channels: int, num_classes: int, conv_dim: int = 256, num_conv: int = 4):
        super().__init__()
        dims = [in_channels] + [conv_dim] * num_conv
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(dims[:-1], dims[1:]))
        self.deconv = nn.ConvTranspose2d(dims[-1], conv_dim, 2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, num_classes + 1, 1)
        for m in list(self.convs) + [self.deconv]:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.predictor(F.relu(self.deconv(x)))


def _pad_replicate(x: Tensor, h: int, w: int) -> Tensor:
    """Pad [G, 1, h', w'] at the bottom/right to [G, 1, h, w] by repeating the last row/column."""
    if x.shape[-2:] == (h, w):
        return x
    if x.shape[0] == 0:
        return x.new_zeros((0, 1, h, w))
    return F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]), mode="replicate")


class StandardROIHeads(nn.Module):
    """Sample RoIs from the proposals (+ ground truth), pool, classify and regress; optionally masks."""

    def __init__(self, *, in_features: Sequence[str], box_pooler: ROIPooler, box_head: BoxHead,
                 box_predictor: BoxPredictor, num_classes: int, iou_threshold: float = 0.5,
                 batch_size_per_image: int = 512, positive_fraction: float = 0.25,
                 bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0), smooth_l1_beta: float = 1.0 / 9,
                 proposal_append_gt: bool = True, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                 detections_per_image: int = 100, mask_pooler: Optional[ROIPooler] = None,
                 mask_head: Optional[MaskHead] = None):
        super().__init__()
        self.in_features = list(in_features)
        self.box_pooler, self.box_head, self.box_predictor = box_pooler, box_head, box_predictor
        self.mask_pooler, self.mask_head = mask_pooler, mask_head
        self.num_classes = num_classes
        self.iou_threshold = iou_threshold
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.smooth_l1_beta = smooth_l1_beta
        self.proposal_append_gt = proposal_append_gt
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_image = detections_per_image

    @property
    def mask_on(self) -> bool:
        return self.mask_head is not None

    @classmethod
    def from_config(cls, cfg, channels: int, strides: Dict[str, int]) -> dict:
        rh, bh, mh = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_MASK_HEAD
        feats = list(rh.IN_FEATURES)
        missing = [f for f in feats if f not in strides]
        if missing:
            raise ValueError(f"MODEL.ROI_HEADS.IN_FEATURES names {missing}, not among the FPN's outputs {list(strides)}")
        level_strides = [strides[f] for f in feats]

        def pooler(head, name):
            if head.POOLER_TYPE not in ("ROIAlign", "ROIAlignV2"):
                raise ValueError(f"MODEL.{name}.POOLER_TYPE must be 'ROIAlign' or 'ROIAlignV2'; got {head.POOLER_TYPE!r}")
            return ROIPooler(output_size=head.POOLER_RESOLUTION, strides=level_strides,
                             sampling_ratio=head.POOLER_SAMPLING_RATIO, aligned=head.POOLER_TYPE == "ROIAlignV2")

        box_head = BoxHead(in_channels=channels, resolution=bh.POOLER_RESOLUTION, fc_dim=bh.FC_DIM, num_fc=bh.NUM_FC)
        kwargs = dict(
            in_features=feats, box_pooler=pooler(bh, "ROI_BOX_HEAD"), box_head=box_head,
            box_predictor=BoxPredictor(in_dim=box_head.out_dim, num_classes=rh.NUM_CLASSES),
            num_classes=rh.NUM_CLASSES, iou_threshold=rh.IOU_THRESHOLDS[0],
            batch_size_per_image=rh.BATCH_SIZE_PER_IMAGE, positive_fraction=rh.POSITIVE_FRACTION,
            bbox_reg_weights=bh.BBOX_REG_WEIGHTS, smooth_l1_beta=bh.SMOOTH_L1_BETA,
            proposal_append_gt=rh.PROPOSAL_APPEND_GT, score_thresh=rh.SCORE_THRESH_TEST,
            nms_thresh=rh.NMS_THRESH_TEST, detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)
        if cfg.MODEL.MASK_ON:
            kwargs["mask_pooler"] = pooler(mh, "ROI_MASK_HEAD")
            kwargs["mask_head"] = MaskHead(in_channels=channels, num_classes=rh.NUM_CLASSES,
                                           conv_dim=mh.CONV_DIM, num_conv=mh.NUM_CONV)
        return kwargs

    # ------------------------------------------------------------------ training
    def _sample(self, proposals: Tensor, valid: Tensor, gt: GroundTruth):
        """Sampled RoIs as fixed slots [N, S] (S = batch_size_per_image): (boxes [N, S, 4], class label
        [N, S] (0 = bg), matched gt index [N, S], is_fg [N, S], valid [N, S]); no host reads."""
        if self.proposal_append_gt:
            proposals = torch.cat([proposals, gt.boxes], 1)
            valid = torch.cat([valid, gt.valid], 1)
        iou = aligned_iou(proposals[:, None], gt.boxes[:, :, None])  # [N, G, P]
        matched, labels = match_boxes(iou, gt.valid, self.iou_threshold, self.iou_threshold, False)
        labels = labels.masked_fill(~valid, -1)
        idx, is_pos, ok = sample_slots(labels, self.batch_size_per_image, self.positive_fraction)
        boxes = proposals.gather(1, idx[..., None].expand(-1, -1, 4))
        gt_idx = matched.gather(1, idx)
        fg = is_pos & ok
        cls = torch.where(fg, gt.labels.gather(1, gt_idx), 0)
        return boxes, cls, gt_idx, fg, ok

    def _box_loss(self, logits: Tensor, deltas: Tensor, boxes: Tensor, img: Tensor, cls: Tensor,
                  gt_idx: Tensor, fg: Tensor, gt: GroundTruth) -> Dict[str, Tensor]:
        """Cross-entropy over all sampled RoIs; smooth L1 of the fg RoIs' class deltas, summed and divided
        by the number sampled (torchvision's normalisation), without selecting the fg rows on the host."""
        loss_cls = F.cross_entropy(logits, cls)
        targets = self.box_coder.encode(gt.boxes[img, gt_idx], boxes)
        targets = torch.where(fg[:, None], targets, 0.0)  # bg rows may match zero-size padding: inf
        pred = deltas.view(deltas.shape[0], -1, 4).gather(1, cls[:, None, None].expand(-1, 1, 4))[:, 0].float()
        per_row = F.smooth_l1_loss(pred, targets, beta=self.smooth_l1_beta, reduction="none")
        loss_box = torch.where(fg[:, None], per_row, 0.0).sum() / max(cls.numel(), 1)
        return {"loss_classifier": loss_cls, "loss_box_reg": loss_box}

    def _mask_targets(self, boxes: Tensor, img: Tensor, gt_idx: Tensor, gt: GroundTruth, size: int) -> Tensor:
        """Cut each fg RoI's ground-truth mask out with RoIAlign, in one call for the whole batch.

        The masks of all images are stacked into one tensor padded to the largest image by edge
        replication: inside an image this gives exactly the values of cutting from that image's own
        mask (roi_align clamps samples at the border to the edge pixel, as the replicated pad does).
        """
        masks = [m.to(boxes.device) for m in gt.masks]
        counts = [m.shape[0] for m in masks]
        first = host_tensor([sum(counts[:i]) for i in range(len(counts))], boxes.device)
        h = max(m.shape[-2] for m in masks)
        w = max(m.shape[-1] for m in masks)
        stacked = torch.cat([_pad_replicate(m[:, None].float(), h, w) for m in masks])
        rois = torch.cat([(first[img] + gt_idx)[:, None].to(boxes.dtype), boxes], 1)
        aligned = self.mask_pooler.aligned
        return roi_align(stacked, rois, (size, size), 1.0, 0, aligned)[:, 0]

    def _training_forward(self, feats: List[Tensor], proposals: Tensor, valid: Tensor,
                          gt: GroundTruth) -> Dict[str, Tensor]:
        boxes, cls, gt_idx, fg, ok = self._sample(proposals, valid, gt)
        n, s = ok.shape
        flat_boxes = boxes.reshape(-1, 4)
        box_levels = self.box_pooler.levels(flat_boxes)
        counts = [self.box_pooler.count_levels(box_levels, ok.reshape(-1))]
        if self.mask_on:
            mask_levels = self.mask_pooler.levels(flat_boxes)
            counts.append(self.mask_pooler.count_levels(mask_levels, fg.reshape(-1)))
        # The step's one read of data-dependent sizes: RoIs (and fg RoIs) per pyramid level.
        counts = torch.cat(counts).tolist()
        box_counts, fg_counts = counts[: self.box_pooler.num_levels], counts[self.box_pooler.num_levels:]
        # the valid slots first, in (image, slot) order, then cut: a compaction with no read
        rows = torch.argsort(~ok.reshape(-1), stable=True)[: sum(box_counts)]
        img = rows // s
        b, c, gi, f = flat_boxes[rows], cls.reshape(-1)[rows], gt_idx.reshape(-1)[rows], fg.reshape(-1)[rows]
        pooled = self.box_pooler(feats, b, img, box_levels[rows], box_counts)
        logits, deltas = self.box_predictor(self.box_head(pooled))
        losses = self._box_loss(logits, deltas, b, img, c, gi, f, gt)
        if self.mask_on:
            num_fg = sum(fg_counts)
            fg_rows = torch.argsort(~f, stable=True)[:num_fg]  # fg rows of the compacted RoIs
            fb, fimg, fcls = b[fg_rows], img[fg_rows], c[fg_rows]
            mask_logits = self.mask_head(self.mask_pooler(feats, fb, fimg, mask_levels[rows[fg_rows]], fg_counts))
            if num_fg == 0:
                losses["loss_mask"] = mask_logits.sum() * 0
            else:
                m = mask_logits.shape[-1]
                targets = self._mask_targets(fb, fimg, gi[fg_rows], gt, m)
                picked = mask_logits.gather(1, fcls[:, None, None, None].expand(-1, 1, m, m))[:, 0]
                losses["loss_mask"] = F.binary_cross_entropy_with_logits(picked, targets.to(picked.dtype))
        return losses

    # ------------------------------------------------------------------ inference
    def detect(self, feats: List[Tensor], proposals: Tensor, valid: Tensor,
               image_sizes: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The box branch at test time: padded detections (boxes [N, D, 4] in the frame of image_sizes,
        scores [N, D], labels [N, D], valid [N, D]) from proposals [N, P, 4] with valid [N, P]. One host
        read (proposals per level), plus select_detections' one."""
        p = valid.shape[1]
        flat = proposals.reshape(-1, 4)
        levels = self.box_pooler.levels(flat)
        counts = self.box_pooler.count_levels(levels, valid.reshape(-1)).tolist()  # read: proposals per level
        rows = torch.argsort(~valid.reshape(-1), stable=True)[: sum(counts)]
        boxes, img = flat[rows], rows // p
        logits, deltas = self.box_predictor(self.box_head(self.box_pooler(feats, boxes, img, levels[rows], counts)))
        return select_detections(logits.float(), deltas.float(), boxes, img, image_sizes, self.box_coder,
                                 self.score_thresh, self.nms_thresh, self.detections_per_image)

    def predict_masks(self, feats: List[Tensor], boxes: Tensor, img: Tensor, labels: Tensor,
                      levels: Optional[Tensor] = None, level_counts: Optional[Sequence[int]] = None) -> Tensor:
        """The mask branch for given boxes [R, 4] of images img [R]: the probabilities [R, 1, M, M] of each
        box's label inside the box (float32). `levels` / `level_counts` as ROIPooler.forward takes them
        (computed there, with one host read, when not given). Test-time augmentation calls it with boxes
        merged over several views (resdet/detection/tta.py)."""
        m = 2 * self.mask_pooler.output_size[0]
        if boxes.shape[0] == 0:
            return boxes.new_zeros((0, 1, m, m))
        mask_logits = self.mask_head(self.mask_pooler(feats, boxes, img, levels, level_counts))
        picked = mask_logits.gather(1, labels[:, None, None, None].expand(-1, 1, m, m))
        return torch.sigmoid(picked.float())  # [R, 1, M, M]

    # ------------------------------------------------------------------ forward
    def forward(self, features: Dict[str, Tensor], proposals: Tensor, valid: Tensor, image_sizes: Tensor,
                gt: Optional[GroundTruth] = None):
        feats = [features[f] for f in self.in_features]
        if self.training:
            if gt is None:
                raise ValueError("StandardROIHeads: training needs ground truth")
            return None, self._training_forward(feats, proposals, valid, gt)

        n = valid.shape[0]
        det_boxes, scores, labels, det_valid = self.detect(feats, proposals, valid, image_sizes)
        d = det_valid.shape[1]
        flat_valid = det_valid.reshape(-1)
        wanted = [det_valid.sum(1)]
        if self.mask_on:
            mask_levels = self.mask_pooler.levels(det_boxes.reshape(-1, 4))
            wanted.append(self.mask_pooler.count_levels(mask_levels, flat_valid))
        # read: detections per image (and per level, for the mask pooler)
        got = torch.cat(wanted).tolist()
        per_image = got[:n]
        rows = torch.argsort(~flat_valid, stable=True)[: sum(per_image)]  # the detections, image by image
        result = {"boxes": det_boxes, "scores": scores, "labels": labels, "valid": det_valid,
                  "counts": per_image, "rows": rows}
        if self.mask_on:
            result["mask_probs"] = self.predict_masks(feats, det_boxes.reshape(-1, 4)[rows], rows // d,
                                                      labels.reshape(-1)[rows], mask_levels[rows], got[n:])
        return result, {}
