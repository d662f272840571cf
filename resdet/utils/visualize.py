"""Drawing detections on images: torchvision's draw_bounding_boxes / draw_segmentation_masks."""
from __future__ import annotations

import colorsys
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

__all__ = ["class_colors", "draw_instances", "save_image", "make_grid_image"]


def class_colors(num_classes: int) -> List[Tuple[int, int, int]]:
    """One well-separated colour per label (label k uses entry k; entry 0 is background)."""
    colors = [(0, 0, 0)]
    for k in range(num_classes):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.75, 1.0)  # golden-ratio hue steps
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def draw_instances(
    image: torch.Tensor,
    instances: Dict[str, torch.Tensor],
    class_names: Optional[Sequence[str]] = None,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    mask_alpha: float = 0.45,
) -> torch.Tensor:
    """Boxes, masks, labels and scores drawn on a CHW image (uint8, or float 0-255); returns CHW uint8.

    `instances` is one image's model output (boxes xyxy, labels 1..K, optional scores and masks
    [N,1,H,W] probabilities or [N,H,W]) in this image's coordinates, or a target dict (no scores).
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"draw_instances expects a 3xHxW image, got shape {tuple(image.shape)}")
    img = image.detach().cpu()
    img = img.clamp(0, 255).round().to(torch.uint8) if img.is_floating_point() else img.to(torch.uint8)
    boxes = instances["boxes"].detach().cpu().float()
    labels = instances["labels"].detach().cpu()
    scores = instances.get("scores")
    keep = torch.ones(len(boxes), dtype=torch.bool)
    if scores is not None:
        scores = scores.detach().cpu().float()
        keep = scores >= score_threshold
    boxes, labels = boxes[keep], labels[keep]
    num_classes = max(len(class_names) if class_names else 0, int(labels.max()) if len(labels) else 0)
    palette = class_colors(num_classes)
    colors = [palette[int(l)] for l in labels]
    if "masks" in instances and keep.any():
        masks = instances["masks"].detach().cpu()
        if masks.dim() == 4:
            masks = masks[:, 0]
        masks = masks[keep]
        masks = masks > mask_threshold if masks.is_floating_point() else masks.bool()
        if masks.shape[-2:] != img.shape[-2:]:
            raise ValueError(f"masks are {tuple(masks.shape[-2:])} but the image is {tuple(img.shape[-2:])}")
        img = draw_segmentation_masks(img, masks, alpha=mask_alpha, colors=colors)
    texts = []
    for i, l in enumerate(labels.tolist()):
        name = class_names[l - 1] if class_names and 0 < l <= len(class_names) else str(l)
        texts.append(f"{name} {scores[keep][i]:.2f}" if scores is not None else name)
    if len(boxes):
        img = draw_bounding_boxes(img, boxes, labels=texts, colors=colors, width=2)
    return img


def save_image(image: torch.Tensor, path: str) -> str:
    """Write a CHW uint8 image (PNG/JPEG by extension) with torchvision.io."""
    import os

    from torchvision.io import write_jpeg, write_png

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.lower().endswith((".jpg", ".jpeg")):
        write_jpeg(image.contiguous(), path, quality=95)
    else:
        write_png(image.contiguous(), path)
    return path


def make_grid_image(images: Sequence[torch.Tensor], nrow: int = 4, pad: int = 4) -> torch.Tensor:
    """Several drawn images (different sizes allowed) side by side as one CHW uint8 picture."""
    from torchvision.utils import make_grid

    h = max(i.shape[1] for i in images)
    w = max(i.shape[2] for i in images)
    padded = [torch.nn.functional.pad(i, (0, w - i.shape[2], 0, h - i.shape[1]), value=255) for i in images]
    return make_grid(torch.stack(padded), nrow=nrow, padding=pad, pad_value=255)
