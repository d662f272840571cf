"""RoI heads of Faster / Mask R-CNN: proposal sampling, the two-FC box head with class-specific
regression, and the four-conv mask head. Sampling, box targets and mask targets are computed for
the whole batch at once (padded [N, P] blocks, one roi_align call for all mask targets)."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from fvcore.common.registry import Registry
from torchvision.ops import roi_align

from resdet.utils.counting import declared_sync

from .box_ops import BoxCoder, aligned_iou, match_boxes, sample_slots
from .layers import conv_norm, conv_of, head_norm, run_conv
from .poolers import ROIPooler
from .roi_align import ROI_ALIGN_KERNELS, gpu_kernels_forced
from .postprocess import select_detections
from .structures import GroundTruth, host_tensor

__all__ = ["BoxHead", "BoxPredictor", "MaskHead", "StandardROIHeads", "ROI_HEADS_REGISTRY", "build_roi_heads"]

ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = "RoI heads by MODEL.ROI_HEADS.NAME: classes with from_config(cfg, channels, strides)."


class BoxHead(nn.Module):
    """`num_conv` 3x3 convs (each with `norm` and ReLU), then flatten and `num_fc` fully connected layers
    with ReLU: the 2fc head (num_conv 0, num_fc 2) or Detectron2's 4conv1fc (num_conv 4, num_fc 1)."""

    def __init__(self, *, in_channels: int, resolution: int, fc_dim: int = 1024, num_fc: int = 2,
                 num_conv: int = 0, conv_dim: int = 256, norm: Optional[Callable[[int], nn.Module]] = None):
        super().__init__()
        self.convs = nn.ModuleList(conv_norm(in_channels if i == 0 else conv_dim, conv_dim, 3, norm)
                                   for i in range(num_conv))
        channels = conv_dim if num_conv else in_channels
        dims = [channels * resolution * resolution] + [fc_dim] * num_fc
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        for fc in self.fcs:  # Detectron2's c2_xavier_fill
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.constant_(fc.bias, 0)
        self.out_dim = dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = run_conv(conv, x)
        x = x.flatten(1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return x


class BoxPredictor(nn.Module):
    """Class scores (K + 1, background at index 0) and box deltas: class-specific (4 (K + 1)) or, with
    `cls_agnostic`, one box for all classes (4; what the cascade's stages regress)."""

    def __init__(self, *, in_dim: int, num_classes: int, cls_agnostic: bool = False):
        super().__init__()
        self.cls_score = nn.Linear(in_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(in_dim, 4 if cls_agnostic else 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.cls_score.bias, 0)
        nn.init.constant_(self.bbox_pred.bias, 0)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class MaskHead(nn.Module):
    """`num_conv` 3x3 convs (each with `norm`, if any, and ReLU), a 2x transposed conv with ReLU, and
    per-class 1x1 mask logits (K + 1 channels like torchvision, so its weights load as they are; channel 0
    is never used)."""

    def __init__(self, *, in_channels: int, num_classes: int, conv_dim: int = 256, num_conv: int = 4,
                 norm: Optional[Callable[[int], nn.Module]] = None):
        super().__init__()
        dims = [in_channels] + [conv_dim] * num_conv
        self.convs = nn.ModuleList(conv_norm(a, b, 3, norm, init=None) for a, b in zip(dims[:-1], dims[1:]))
        self.deconv = nn.ConvTranspose2d(dims[-1], conv_dim, 2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, num_classes + 1, 1)
        for m in [conv_of(c) for c in self.convs] + [self.deconv]:  # the draws in their order before norms
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    def forward(self, x: Tensor, classes: Optional[Tensor] = None) -> Tensor:
        """Mask logits [R, K + 1, 2S, 2S] of pooled features [R, C, S, S]; with `classes` [R] (int64) only
        each RoI's own class, [R, 1, 2S, 2S] (what the loss and inference use: the K other channels of the
        1x1 predictor and their backward are never computed)."""
        for conv in self.convs:
            x = run_conv(conv, x)
        if classes is None:
            return self.predictor(F.relu(self.deconv(x)))
        return self._class_logits(x, classes)

    def _class_logits(self, x: Tensor, classes: Tensor) -> Tensor:
        """The deconvolution and the chosen class's 1x1 logits as matrix products, the same numbers as
        forward(x) picked at `classes` up to float rounding. A 2x2 stride-2 transposed convolution maps each
        input pixel to its own 2x2 output block, so it is one GEMM of the pixels [R*S*S, C] by the weight
        [C, 2*2*C'] (torch's CPU ConvTranspose2d takes a slow path: 8x slower at 200 RoIs), and the
        class-specific 1x1 conv is a batched product with each RoI's row of the predictor's weight."""
        r, c, h, w = x.shape
        if x.device.type != "cpu" or gpu_kernels_forced():
            # On a GPU cuDNN's transposed convolution is one tuned kernel, and the class's logits one batched
            # product: 36 aten ops forward and backward where the GEMM form below makes 64 (kernel launches:
            # the training step's op budget, tests/detection/test_host_reads.py).
            y = F.relu(self.deconv(x))
            pred_w = self.predictor.weight.view(self.predictor.weight.shape[0], -1)[classes]  # [R, C']
            logits = torch.baddbmm(self.predictor.bias[classes].view(r, 1, 1), pred_w.unsqueeze(1), y.flatten(2))
            return logits.view(r, 1, 2 * h, 2 * w)
        weight = self.deconv.weight  # [C, C', 2, 2]
        out_c = weight.shape[1]
        pixels = x.permute(0, 2, 3, 1).reshape(r * h * w, c)
        blocks = torch.addmm(self.deconv.bias.repeat(4), pixels, weight.permute(0, 2, 3, 1).reshape(c, 4 * out_c))
        blocks = F.relu(blocks).view(r, h * w * 4, out_c)  # rows (i, j, a, b): output pixel (2i + a, 2j + b)
        pred_w = self.predictor.weight[:, :, 0, 0][classes]  # [R, C']
        logits = torch.baddbmm(self.predictor.bias[classes][:, None, None], blocks, pred_w[:, :, None])
        return logits.view(r, h, w, 2, 2).permute(0, 1, 3, 2, 4).reshape(r, 1, 2 * h, 2 * w)


def _pad_replicate(x: Tensor, h: int, w: int) -> Tensor:
    """Pad [G, 1, h', w'] at the bottom/right to [G, 1, h, w] by repeating the last row/column."""
    if x.shape[-2:] == (h, w):
        return x
    if x.shape[0] == 0:
        return x.new_zeros((0, 1, h, w))
    return F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]), mode="replicate")


@ROI_HEADS_REGISTRY.register()
class StandardROIHeads(nn.Module):
    """Sample RoIs from the proposals (+ ground truth), pool, classify and regress; optionally masks."""

    def __init__(self, *, in_features: Sequence[str], box_pooler: ROIPooler, box_head: Optional[BoxHead],
                 box_predictor: Optional[BoxPredictor], num_classes: int, iou_threshold: float = 0.5,
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

        if cfg.MODEL.POOLER_CPU_KERNEL not in ROI_ALIGN_KERNELS:
            raise ValueError(f"MODEL.POOLER_CPU_KERNEL must be one of {ROI_ALIGN_KERNELS}; got "
                             f"{cfg.MODEL.POOLER_CPU_KERNEL!r}")

        def pooler(head, name):
            if head.POOLER_TYPE not in ("ROIAlign", "ROIAlignV2"):
                raise ValueError(f"MODEL.{name}.POOLER_TYPE must be 'ROIAlign' or 'ROIAlignV2'; got {head.POOLER_TYPE!r}")
            return ROIPooler(output_size=head.POOLER_RESOLUTION, strides=level_strides,
                             sampling_ratio=head.POOLER_SAMPLING_RATIO, aligned=head.POOLER_TYPE == "ROIAlignV2",
                             kernel=cfg.MODEL.POOLER_CPU_KERNEL)

        box_head = build_box_head(cfg, channels)
        kwargs = dict(
            in_features=feats, box_pooler=pooler(bh, "ROI_BOX_HEAD"), box_head=box_head,
            box_predictor=BoxPredictor(in_dim=box_head.out_dim, num_classes=rh.NUM_CLASSES,
                                       cls_agnostic=bh.CLS_AGNOSTIC_BBOX_REG),
            num_classes=rh.NUM_CLASSES, iou_threshold=rh.IOU_THRESHOLDS[0],
            batch_size_per_image=rh.BATCH_SIZE_PER_IMAGE, positive_fraction=rh.POSITIVE_FRACTION,
            bbox_reg_weights=bh.BBOX_REG_WEIGHTS, smooth_l1_beta=bh.SMOOTH_L1_BETA,
            proposal_append_gt=rh.PROPOSAL_APPEND_GT, score_thresh=rh.SCORE_THRESH_TEST,
            nms_thresh=rh.NMS_THRESH_TEST, detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)
        if cfg.MODEL.MASK_ON:
            kwargs["mask_pooler"] = pooler(mh, "ROI_MASK_HEAD")
            kwargs["mask_head"] = MaskHead(in_channels=channels, num_classes=rh.NUM_CLASSES,
                                           conv_dim=mh.CONV_DIM, num_conv=mh.NUM_CONV,
                                           norm=head_norm(mh.NORM, cfg.MODEL.BACKBONE.GN_GROUPS,
                                                          "MODEL.ROI_MASK_HEAD.NORM"))
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
        pred = _class_deltas(deltas, cls).float()
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
        with declared_sync(proposals.device, "RoIs per level"):
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
            losses["loss_mask"] = self._mask_loss(feats, b, img, c, gi, f, mask_levels[rows], fg_counts, gt)
        return losses

    def _mask_loss(self, feats: List[Tensor], boxes: Tensor, img: Tensor, cls: Tensor, gt_idx: Tensor, fg: Tensor,
                   levels: Tensor, fg_counts: Sequence[int], gt: GroundTruth) -> Tensor:
        """Mask loss of the fg rows among the sampled RoIs (boxes [R, 4] of images img [R]), pooled by
        level (`levels` of those rows, `fg_counts` fg RoIs per level, read on the host already)."""
        num_fg = sum(fg_counts)
        fg_rows = torch.argsort(~fg, stable=True)[:num_fg]  # fg rows of the compacted RoIs
        fb, fimg, fcls = boxes[fg_rows], img[fg_rows], cls[fg_rows]
        picked = self.mask_head(self.mask_pooler(feats, fb, fimg, levels[fg_rows], fg_counts),
                                fcls)[:, 0]  # each RoI's own class only
        if num_fg == 0:
            return picked.sum() * 0
        targets = self._mask_targets(fb, fimg, gt_idx[fg_rows], gt, picked.shape[-1])
        return F.binary_cross_entropy_with_logits(picked, targets.to(picked.dtype))

    # ------------------------------------------------------------------ inference
    def detect(self, feats: List[Tensor], proposals: Tensor, valid: Tensor,
               image_sizes: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The box branch at test time: padded detections (boxes [N, D, 4] in the frame of image_sizes,
        scores [N, D], labels [N, D], valid [N, D]) from proposals [N, P, 4] with valid [N, P]. One host
        read (proposals per level), plus select_detections' one."""
        p = valid.shape[1]
        flat = proposals.reshape(-1, 4)
        levels = self.box_pooler.levels(flat)
        with declared_sync(proposals.device, "proposals per level"):
            counts = self.box_pooler.count_levels(levels, valid.reshape(-1)).tolist()
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
        picked = self.mask_head(self.mask_pooler(feats, boxes, img, levels, level_counts), labels)  # own class only
        return torch.sigmoid(picked.float())  # [R, 1, M, M]

    # ------------------------------------------------------------------ forward
    def forward(self, features: Dict[str, Tensor], proposals: Tensor, valid: Tensor, image_sizes: Tensor,
                gt: Optional[GroundTruth] = None):
        feats = [features[f] for f in self.in_features]
        if self.training:
            if gt is None:
                raise ValueError("StandardROIHeads: training needs ground truth")
            return None, self._training_forward(feats, proposals, valid, gt)

        return self._inference_result(feats, *self.detect(feats, proposals, valid, image_sizes)), {}

    def _inference_result(self, feats: List[Tensor], det_boxes: Tensor, scores: Tensor, labels: Tensor,
                          det_valid: Tensor) -> Dict[str, object]:
        """The detections [N, D] as the model's postprocess takes them, with the mask probabilities of the
        valid ones (one read: detections per image and, for the mask pooler, per level)."""
        n, d = det_valid.shape
        flat_valid = det_valid.reshape(-1)
        wanted = [det_valid.sum(1)]
        if self.mask_on:
            mask_levels = self.mask_pooler.levels(det_boxes.reshape(-1, 4))
            wanted.append(self.mask_pooler.count_levels(mask_levels, flat_valid))
        # read: detections per image (and per level, for the mask pooler)
        with declared_sync(det_boxes.device, "detections per image and level"):
            got = torch.cat(wanted).tolist()
        per_image = got[:n]
        rows = torch.argsort(~flat_valid, stable=True)[: sum(per_image)]  # the detections, image by image
        result = {"boxes": det_boxes, "scores": scores, "labels": labels, "valid": det_valid,
                  "counts": per_image, "rows": rows}
        if self.mask_on:
            result["mask_probs"] = self.predict_masks(feats, det_boxes.reshape(-1, 4)[rows], rows // d,
                                                      labels.reshape(-1)[rows], mask_levels[rows], got[n:])
        return result


def _class_deltas(deltas: Tensor, cls: Tensor) -> Tensor:
    """Each row's deltas [R, 4] for its class cls [R] from class-specific deltas [R, 4 (K + 1)], or the
    deltas themselves when they are class-agnostic ([R, 4])."""
    if deltas.shape[1] == 4:
        return deltas
    return deltas.view(deltas.shape[0], -1, 4).gather(1, cls[:, None, None].expand(-1, 1, 4))[:, 0]


def build_box_head(cfg, channels: int) -> BoxHead:
    """The box head MODEL.ROI_BOX_HEAD describes (2fc, or convs with a norm and fc layers)."""
    bh = cfg.MODEL.ROI_BOX_HEAD
    return BoxHead(in_channels=channels, resolution=bh.POOLER_RESOLUTION, fc_dim=bh.FC_DIM, num_fc=bh.NUM_FC,
                   num_conv=bh.NUM_CONV, conv_dim=bh.CONV_DIM,
                   norm=head_norm(bh.NORM, cfg.MODEL.BACKBONE.GN_GROUPS, "MODEL.ROI_BOX_HEAD.NORM"))


def build_roi_heads(cfg, channels: int, strides: Dict[str, int]) -> nn.Module:
    """The RoI heads MODEL.ROI_HEADS.NAME names, built from the config."""
    name = cfg.MODEL.ROI_HEADS.NAME
    if name not in ROI_HEADS_REGISTRY:
        raise ValueError(f"MODEL.ROI_HEADS.NAME must be one of {sorted(ROI_HEADS_REGISTRY._obj_map)}; got {name!r}")
    heads = ROI_HEADS_REGISTRY.get(name)
    return heads(**heads.from_config(cfg, channels, strides))
