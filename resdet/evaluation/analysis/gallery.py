"""The worst and best images at the deploy thresholds, drawn with what went right and wrong.

An image's errors are its false positives plus its missed objects at the deploy thresholds
(confusion.py: each detection and object counted once). The worst images have the most errors (then
the most misses); the best are images with objects and the fewest errors, the most objects found first.

Styles (the same in every picture, with a legend strip under it): a true positive is a solid green box;
a false positive a solid box in its TIDE error type's colour, labelled with the type; a missed object a
dashed magenta box labelled "missed". Labels carry the class and, for detections, the score. Masks
(segm) are filled in the same colours. Small images are enlarged so that the labels stay readable.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from .confusion import DeployResult
from .error_types import DET_ERROR_TYPES, ErrorAnalysis
from .figures import ERROR_COLORS
from .inputs import MatchInputs

__all__ = ["GalleryImage", "rank_images", "draw_gallery", "TP_COLOR", "MISS_COLOR"]

TP_COLOR = (39, 174, 96)
MISS_COLOR = ERROR_COLORS["Miss"]
DISPLAY_SIDE = 560    # pixels of a drawn picture's longer side (small images are enlarged to it): the width of a
                      # gallery cell on the page (two in its 1200-px column), which shows it at this size and never
                      # enlarges it, so the 16-pixel labels are 16 pixels on the screen in every picture
FONT_SIZE = 16
HALO_COLOR = (25, 25, 25)


@dataclass
class GalleryImage:
    index: int            # image index in MatchInputs
    image_id: int
    file_name: str
    tp: int
    fp: int
    fn: int
    path: Optional[str] = None   # the drawn picture, relative to the report folder


def rank_images(inp: MatchInputs, deploy: DeployResult, count: int):
    """(worst, best): up to `count` images each (see the module docstring)."""
    errors = deploy.image_fp + deploy.image_fn
    idx = np.arange(len(inp.image_ids))
    bad = idx[errors > 0]
    worst = bad[np.lexsort((bad, -deploy.image_fn[bad], -errors[bad]))][:count]
    has_objects = np.bincount(inp.gt_image[~inp.gt_crowd], minlength=len(idx)) > 0
    cand = idx[has_objects & ~np.isin(idx, worst)]
    best = cand[np.lexsort((cand, -deploy.image_tp[cand], errors[cand]))][:count]

    def entry(i):
        return GalleryImage(int(i), int(inp.image_ids[i]), inp.file_names[i], int(deploy.image_tp[i]),
                            int(deploy.image_fp[i]), int(deploy.image_fn[i]))

    return [entry(i) for i in worst], [entry(i) for i in best]


def _font(size: int):
    from matplotlib import font_manager
    from PIL import ImageFont

    try:  # DejaVu Sans ships with matplotlib, a dependency
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)
    except OSError:
        return ImageFont.load_default()


def _dashed_rectangle(draw, box, color, width: int, dash: int) -> None:
    x0, y0, x1, y1 = box
    for (ax, ay, bx, by) in ((x0, y0, x1, y0), (x1, y0, x1, y1), (x1, y1, x0, y1), (x0, y1, x0, y0)):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // (2 * dash)))
        for s in range(steps + 1):
            t0, t1 = min(1.0, 2 * s * dash / max(length, 1)), min(1.0, (2 * s + 1) * dash / max(length, 1))
            if t0 >= 1.0:
                break
            draw.line([(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)],
                      fill=color, width=width)


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def _label(draw, rect, text: str, color, font, bounds, placed: list) -> None:
    """The label on a filled box, at the first place around `rect` (above it, inside its top, below it,
    inside its bottom, then right-aligned) that covers no label drawn before, else the least covering."""
    from resdet.utils.visualize import text_color_for

    x0, y0, x1, y1 = rect
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    w, h = r - l + 6, b - t + 4
    spots = [(x0, y0 - h), (x0, y0), (x0, y1), (x0, y1 - h), (x1 - w, y0 - h), (x1 - w, y1)]
    best, best_cover = None, None
    for x, y in spots:
        x = min(max(0.0, x), max(0.0, bounds[0] - w))
        y = min(max(0.0, y), max(0.0, bounds[1] - h))
        box = (x, y, x + w, y + h)
        cover = sum(_overlap(box, p) for p in placed)
        if best is None or cover < best_cover:
            best, best_cover = box, cover
        if cover == 0:
            break
    x, y = best[0], best[1]
    placed.append(best)
    draw.rectangle([x, y, x + w, y + h], fill=color, outline=HALO_COLOR)
    draw.text((x + 3 - l, y + 2 - t), text, fill=text_color_for(color), font=font)


def _legend_strip(width: int, font):
    """The styles' key under a picture, in as many lines as its width needs."""
    from PIL import Image, ImageDraw

    items = [("true positive", TP_COLOR, False)] + [(t, ERROR_COLORS[t], False) for t in DET_ERROR_TYPES] + \
            [("missed object", MISS_COLOR, True)]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = font.size + 10
    places, x, y = [], 6, 4
    for name, color, dashed in items:
        w = 27 + int(measure.textlength(name, font=font)) + 14
        if x > 6 and x + w > width:
            x, y = 6, y + line_h
        places.append((x, y, name, color, dashed))
        x += w
    strip = Image.new("RGB", (width, y + line_h), (255, 255, 255))
    d = ImageDraw.Draw(strip)
    for x, y, name, color, dashed in places:
        box = (x, y + 2, x + 22, y + 2 + font.size)
        if dashed:
            _dashed_rectangle(d, box, color, 3, 4)
        else:
            d.rectangle(box, outline=color, width=3)
        d.text((x + 27, y), name, fill=(30, 30, 30), font=font)
    return strip


def draw_image(inp: MatchInputs, errors: ErrorAnalysis, deploy: DeployResult, i: int, image: np.ndarray,
               class_names: Sequence[str]):
    """One picture (PIL image) of image index `i`: its kept detections and missed objects."""
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    scale = DISPLAY_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pil = Image.fromarray(image).resize(size, Image.BILINEAR if scale > 1 else Image.LANCZOS)
    dets = np.flatnonzero((inp.det_image == i) & deploy.kept)
    gts = np.flatnonzero((inp.gt_image == i) & ~inp.gt_crowd & ~deploy.gt_found)
    items = []  # (area, box, color, dashed, label, rle)
    for d in dets:
        if deploy.det_tp[d]:
            color, label = TP_COLOR, f"{class_names[inp.det_cat[d]]} {inp.det_score[d]:.2f}"
        else:
            t = DET_ERROR_TYPES[errors.det_type[d]] if errors.det_type[d] >= 0 else "Bkg"
            color, label = ERROR_COLORS[t], f"{t}: {class_names[inp.det_cat[d]]} {inp.det_score[d]:.2f}"
        items.append((inp.det_box[d], color, False, label, inp.det_rles[d] if inp.det_rles is not None else None))
    for g in gts:
        items.append((inp.gt_box[g], MISS_COLOR, True, f"missed: {class_names[inp.gt_cat[g]]}",
                      inp.gt_rles[g] if inp.gt_rles is not None else None))
    items.sort(key=lambda it: -float(it[0][2] * it[0][3]))  # large first: small ones' labels stay on top
    if any(it[4] is not None for it in items):
        pil = _paint_masks(pil, items, size)
    draw = ImageDraw.Draw(pil)
    font = _font(FONT_SIZE)
    width = 3
    rects = []
    for box, color, dashed, _, _ in items:
        x, y, bw, bh = (float(v) * scale for v in box)
        rects.append((x, y, x + bw, y + bh))
        # a dark line either side of each box: a green box on green grass (or any colour on its own colour)
        # stays visible, found looking at the quick start's report
        if dashed:
            _dashed_rectangle(draw, rects[-1], HALO_COLOR, width + 2, 7)  # lines: centred on the edge
            _dashed_rectangle(draw, rects[-1], color, width, 7)
        else:  # rectangles: drawn inward from the edge
            draw.rectangle((x - 1, y - 1, x + bw + 1, y + bh + 1), outline=HALO_COLOR, width=width + 2)
            draw.rectangle(rects[-1], outline=color, width=width)
    placed: list = []
    for rect, (_, color, _, label, _) in zip(rects, items):
        _label(draw, rect, label, color, font, size, placed)
    legend = _legend_strip(size[0], _font(13))
    out = Image.new("RGB", (size[0], size[1] + legend.size[1]), (255, 255, 255))
    out.paste(pil, (0, 0))
    out.paste(legend, (0, size[1]))
    return out


def _paint_masks(pil, items, size):
    import cv2
    from pycocotools import mask as mask_util

    canvas = np.asarray(pil).astype(np.float32)
    for _, color, dashed, _, rle in items:
        if rle is None:
            continue
        m = mask_util.decode(rle)
        m = cv2.resize(m, size, interpolation=cv2.INTER_NEAREST).astype(bool)
        alpha = 0.2 if dashed else 0.3
        canvas[m] = canvas[m] * (1 - alpha) + np.array(color, np.float32) * alpha
        # the mask's outline too: where fills of overlapping detections mix, each one's shape stays readable
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, tuple(float(c) for c in color), 2 if dashed else 1)
    from PIL import Image

    return Image.fromarray(canvas.clip(0, 255).astype(np.uint8))


def draw_gallery(inp: MatchInputs, errors: ErrorAnalysis, deploy: DeployResult, entries: List[GalleryImage],
                 image_root: str, out_dir: str, prefix: str, class_names: Sequence[str]) -> Dict[str, str]:
    """Draw each entry into `out_dir`/<prefix>_<n>.jpg (its `path`, relative to out_dir's parent).
    Returns {file_name: problem} for images that could not be read (they are left out, not fatal)."""
    from resdet.data.coco import read_image

    os.makedirs(out_dir, exist_ok=True)
    problems: Dict[str, str] = {}
    for n, e in enumerate(entries):
        path = os.path.join(image_root, e.file_name)
        try:
            h, w = (int(v) for v in inp.image_sizes[e.index])
            pixels = read_image(path, width=w, height=h)  # the size the boxes are in, or an error naming the file
        except Exception as exc:  # a report without one picture is still a report; say which and why
            problems[e.file_name] = f"{type(exc).__name__}: {exc}"
            continue
        picture = draw_image(inp, errors, deploy, e.index, pixels, class_names)
        name = f"{prefix}_{n + 1:02d}.jpg"
        picture.save(os.path.join(out_dir, name), quality=90)
        e.path = os.path.join(os.path.basename(out_dir), name)
    return problems
