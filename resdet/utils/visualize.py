"""Drawing detections on images: torchvision's draw_bounding_boxes / draw_segmentation_masks.

Labels are drawn on a box filled with the class colour, in black or white (whichever contrasts more
with that colour), in a TrueType font sized to the image (DejaVu Sans, which matplotlib ships), so they
stay readable on any photo; grids of pictures size each cell to its picture.
"""
from __future__ import annotations

import colorsys
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

__all__ = ["class_colors", "text_color_for", "label_font_size", "draw_instances", "save_image", "make_grid_image"]


def class_colors(num_classes: int) -> List[Tuple[int, int, int]]:
    """One well-separated colour per label (label k uses entry k; entry 0 is background)."""
    colors = [(0, 0, 0)]
    for k in range(num_classes):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.75, 1.0)  # golden-ratio hue steps
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def text_color_for(background: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """Black or white, whichever contrasts more with `background` (sRGB relative luminance, WCAG)."""
    def linear(c: int) -> float:
        c = c / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in background)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    # contrast ratio with black is (L + 0.05) / 0.05, with white 1.05 / (L + 0.05): equal at L = 0.179
    return (0, 0, 0) if luminance > 0.179 else (255, 255, 255)


def label_font_size(height: int, width: int) -> int:
    """Text height for labels: 1/32 of the image's geometric-mean side, at least 11 px (so images of one
    height get about the same text, wide or narrow)."""
    return max(11, round((height * width) ** 0.5 / 32))


def _label_font() -> Optional[str]:
    # torchvision needs a TrueType file to draw text larger than PIL's 11 px bitmap font; matplotlib (a
    # dependency) ships DejaVu Sans. None falls back to the bitmap font.
    import os

    try:
        import matplotlib
    except ImportError:
        return None
    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    return path if os.path.isfile(path) else None


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
        font = _label_font()
        size = label_font_size(img.shape[1], img.shape[2])
        img = draw_bounding_boxes(img, boxes, labels=texts, colors=colors, width=max(2, size // 8),
                                  font=font, font_size=size if font else None, fill_labels=True,
                                  label_background_colors=colors, label_colors=[text_color_for(c) for c in colors])
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


def make_grid_image(images: Sequence[torch.Tensor], nrow: int = 4, pad: int = 4, fill: int = 255) -> torch.Tensor:
    """Several drawn CHW uint8 images in rows of up to `nrow`, each cell the size of its own image (no
    padding every cell to the largest image): a row is as high as its highest image, the picture as
    wide as its widest row, rows balanced in width. Images of one height (see
    predictor.save_prediction_pictures) leave blank space only at the ends of rows."""
    if not len(images):
        raise ValueError("make_grid_image needs at least one image")
    # rows of at most nrow pictures, broken where the row's width comes closest to an even share of the
    # total width (greedy line breaking), so that rows end near the same width
    target = sum(im.shape[2] for im in images) / -(-len(images) // nrow)
    rows, width = [[]], 0
    for im in images:
        w = im.shape[2]
        if rows[-1] and (len(rows[-1]) == nrow or width + w - target > target - width):
            rows.append([])
            width = 0
        rows[-1].append(im)
        width += w
    row_h = [max(im.shape[1] for im in row) for row in rows]
    row_w = [sum(im.shape[2] for im in row) + pad * (len(row) + 1) for row in rows]
    canvas = torch.full((3, sum(row_h) + pad * (len(rows) + 1), max(row_w)), fill, dtype=torch.uint8)
    y = pad
    for row, h in zip(rows, row_h):
        x = pad
        for im in row:
            canvas[:, y:y + im.shape[1], x:x + im.shape[2]] = im
            x += im.shape[2] + pad
        y += h + pad
    return canvas
