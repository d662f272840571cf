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
from .postprocess import paste_masks, scale_boxes
from .roi_heads import StandardROIHeads
from .rpn import RPN
from .structures import GroundTruth, ImageBatch, pad_images
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
        roi_heads = StandardROIHeads(**StandardROIHeads.from_config(cfg, fpn.out_channels, fpn.out_strides))
        div = max(getattr(backbone, "size_divisibility", 32), max(fpn.out_strides.values()) // 2)
        return dict(backbone=backbone, fpn=fpn, rpn=rpn, roi_heads=roi_heads, pixel_mean=cfg.MODEL.PIXEL_MEAN,
                    pixel_std=cfg.MODEL.PIXEL_STD, size_divisibility=div)

    @property
    def num_classes(self) -> int:
        return self.roi_heads.num_classes

    def preprocess(self, images: Sequence[Tensor]) -> ImageBatch:
        device = self.pixel_mean.device
        normed = [(im.to(device, torch.float32) - self.pixel_mean) / self.pixel_std for im in images]
        batch = pad_images(normed, self.size_divisibility)
        if self.pixel_mean.device.type == "cuda" and _is_channels_last(self.backbone):
            batch.tensor = batch.tensor.contiguous(memory_format=torch.channels_last)
        return batch

    def forward(self, images: Sequence[Tensor], targets: Optional[Sequence[Dict[str, Tensor]]] = None,
                original_sizes: Optional[Sequence[Tuple[int, int]]] = None):
        check_images(images)
        gt = None
        if self.training:
            check_targets(targets, images, self.num_classes, self.roi_heads.mask_on)
            gt = GroundTruth.from_targets(targets, self.pixel_mean.device)
        batch = self.preprocess(images)
        features = self.fpn(self.backbone(batch.tensor))
        proposals, valid, rpn_losses = self.rpn(features, batch.padded_size, batch.image_sizes, gt)
        result, head_losses = self.roi_heads(features, proposals, valid, batch.image_sizes, gt)
        if self.training:
            return {**rpn_losses, **head_losses}
        return self.postprocess(result, batch.image_sizes, original_sizes)

    def postprocess(self, result: Dict[str, Tensor], image_sizes: Tensor,
                    original_sizes: Optional[Sequence[Tuple[int, int]]]) -> List[Dict[str, Tensor]]:
        """Per-image dicts in the original frame; masks of all images pasted in one call."""
        out_sizes = image_sizes
        boxes = result["boxes"]
        if original_sizes is not None:
            if len(original_sizes) != image_sizes.shape[0]:
                raise ValueError(f"original_sizes has {len(original_sizes)} entries for {image_sizes.shape[0]} images")
            out_sizes = torch.as_tensor([list(s) for s in original_sizes], dtype=torch.int64, device=boxes.device)
            boxes = scale_boxes(boxes, image_sizes, out_sizes)
        counts = result["valid"].sum(1).tolist()
        outputs = [{"boxes": boxes[i, :c], "scores": result["scores"][i, :c], "labels": result["labels"][i, :c]}
                   for i, c in enumerate(counts)]
        if "mask_probs" in result:
            valid = result["valid"]
            img, idx = valid.nonzero(as_tuple=True)
            canvas = out_sizes.max(dim=0).values.tolist()
            pasted = paste_masks(result["mask_probs"][img, idx], boxes[img, idx], canvas)
            for i, (o, part) in enumerate(zip(outputs, pasted.split(counts))):
                h, w = out_sizes[i].tolist()
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
