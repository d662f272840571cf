"""GeneralizedRCNN: backbone -> FPN -> RPN -> RoI heads, with torchvision's model interface.

`model(images, targets)` takes a list of CHW float RGB images in 0-255 (any sizes; they are
normalised with MODEL.PIXEL_MEAN/STD, also 0-255, and zero-padded to the size divisibility) and,
in training, one target dict per image (`boxes` [N, 4] float xyxy, `labels` [N] int64 in 1..K,
`masks` [N, H, W] uint8 for Mask R-CNN). Training returns the losses; inference returns one dict per
image (`boxes`, `scores`, `labels`, and `masks` [N, 1, H, W] probabilities for Mask R-CNN).

The model does not resize: the data pipeline does (as in Detectron2). Outputs are in the frame of
the images given, or of `original_sizes` ([(h, w), ...]) when the caller resized them.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .fpn import FPN
from .postprocess import paste_masks as _paste_masks, scale_boxes
from . import cascade  # noqa: F401  (registers CascadeROIHeads)
from .roi_heads import StandardROIHeads, build_roi_heads
from .rpn import RPN
from .structures import GroundTruth, ImageBatch, padded_shape, sizes_tensor
from .checks import check_images, check_targets

__all__ = ["GeneralizedRCNN", "build_detection_model"]


class GeneralizedRCNN(nn.Module):
    def __init__(self, *, backbone: nn.Module, fpn: FPN, rpn: RPN, roi_heads: StandardROIHeads,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], size_divisibility: int = 32):
        super().__init__()
        self.backbone, self.fpn, self.rpn, self.roi_heads = backbone, fpn, rpn, roi_heads
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"pixel_mean {list(pixel_mean)} and pixel_std {list(pixel_std)} differ in length")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.size_divisibility = size_divisibility

    @classmethod
    def from_config(cls, cfg, backbone: Optional[nn.Module] = None) -> dict:
        if backbone is None:
            from resdet.backbones import backbone_from_config

            backbone = backbone_from_config(cfg)
        fpn = FPN(**FPN.from_config(cfg, backbone.output_shape()))
        rpn = RPN(**RPN.from_config(cfg, fpn.out_channels))
        roi_heads = build_roi_heads(cfg, fpn.out_channels, fpn.out_strides)
        div = max(getattr(backbone, "size_divisibility", 32), max(fpn.out_strides.values()) // 2)
        return dict(backbone=backbone, fpn=fpn, rpn=rpn, roi_heads=roi_heads, pixel_mean=cfg.MODEL.PIXEL_MEAN,
                    pixel_std=cfg.MODEL.PIXEL_STD, size_divisibility=div)

    @property
    def num_classes(self) -> int:
        return self.roi_heads.num_classes

    def preprocess(self, images: Sequence[Tensor]) -> ImageBatch:
        """Normalised images in one zero-padded tensor. The raw images are placed on a canvas filled
        with the pixel mean and the whole batch is normalised at once: (mean - mean) / std is exactly the
        zero padding, and each image's pixels get the same arithmetic as when normalised alone."""
        device = self.pixel_mean.device
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        h, w = padded_shape(sizes, self.size_divisibility)
        canvas = self.pixel_mean.expand(len(images), -1, h, w).contiguous()
        for i, im in enumerate(images):  # one copy per image (dtype and device conversion included)
            canvas[i, :, : im.shape[-2], : im.shape[-1]].copy_(im)
        tensor = (canvas - self.pixel_mean) / self.pixel_std
        if device.type == "cuda" and _is_channels_last(self.backbone):
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return ImageBatch(tensor, sizes_tensor(sizes, device), sizes)

    def forward(self, images: Sequence[Tensor], targets: Optional[Sequence[Dict[str, Tensor]]] = None,
                original_sizes: Optional[Sequence[Tuple[int, int]]] = None, paste_masks: bool = True):
        check_images(images)
        gt = None
        if self.training:
            check_targets(targets, images, self.num_classes, self.roi_heads.mask_on)  # one host read
            gt = GroundTruth.from_targets(targets, self.pixel_mean.device)
        batch = self.preprocess(images)
        features = self.fpn(self.backbone(batch.tensor))
        proposals, valid, rpn_losses = self.rpn(features, batch.padded_size, batch.image_sizes, gt)
        result, head_losses = self.roi_heads(features, proposals, valid, batch.image_sizes, gt)
        if self.training:
            return {**rpn_losses, **head_losses}
        return self.postprocess(result, batch.image_sizes, original_sizes, batch.sizes, paste_masks)

    def postprocess(self, result: Dict[str, Tensor], image_sizes: Tensor,
                    original_sizes: Optional[Sequence[Tuple[int, int]]],
                    sizes: Optional[Sequence[Tuple[int, int]]] = None,
                    paste_masks: bool = True) -> List[Dict[str, Tensor]]:
        """Per-image dicts in the original frame; masks of all images pasted in one call. The sizes and
        the detections per image are host values already (from the batch and the RoI heads).
        `paste_masks=False` leaves each detection's M x M probabilities unpasted, as `mask_probs`
        [n, 1, M, M] (the label's mask inside the box): what a results file or a drawing of a few
        detections needs, without [n, H, W] full-image masks (resdet/evaluation/rle.py encodes them)."""
        boxes = result["boxes"]
        out_sizes = [tuple(int(v) for v in s) for s in sizes] if sizes is not None else None
        if original_sizes is not None:
            if len(original_sizes) != image_sizes.shape[0]:
                raise ValueError(f"original_sizes has {len(original_sizes)} entries for {image_sizes.shape[0]} images")
            out_sizes = [(int(h), int(w)) for h, w in original_sizes]
            boxes = scale_boxes(boxes, image_sizes, sizes_tensor(out_sizes, boxes.device))
        counts = result.get("counts")
        if counts is None:
            counts = result["valid"].sum(1).tolist()
        outputs = [{"boxes": boxes[i, :c], "scores": result["scores"][i, :c], "labels": result["labels"][i, :c]}
                   for i, c in enumerate(counts)]
        if "mask_probs" in result and not paste_masks:
            for o, part in zip(outputs, result["mask_probs"].split(counts)):
                o["mask_probs"] = part
        elif "mask_probs" in result:
            if out_sizes is None:
                out_sizes = [tuple(s) for s in image_sizes.tolist()]
            canvas = (max(h for h, _ in out_sizes), max(w for _, w in out_sizes))
            pasted = _paste_masks(result["mask_probs"], boxes.reshape(-1, 4)[result["rows"]], canvas)
            for o, part, (h, w) in zip(outputs, pasted.split(counts), out_sizes):
                o["masks"] = part[:, :, :h, :w]
        return outputs


def _is_channels_last(module: nn.Module) -> bool:
    w = next((p for p in module.parameters() if p.dim() == 4), None)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


def build_detection_model(cfg, backbone: Optional[nn.Module] = None) -> GeneralizedRCNN:
    """The detection model a config describes (MODEL.META_ARCHITECTURE "GeneralizedRCNN")."""
    if cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN":
        raise ValueError(f"build_detection_model builds MODEL.META_ARCHITECTURE 'GeneralizedRCNN'; "
                         f"got {cfg.MODEL.META_ARCHITECTURE!r}")
    return GeneralizedRCNN(**GeneralizedRCNN.from_config(cfg, backbone))
