"""A generated COCO-format dataset of simple shapes, for the quick start and tests (no download).

Each image has a plain background with a little noise and 1..MAX shapes (circles, squares rotated at
random, triangles) that do not overlap, so every mask is exact: the pixels painted are the pixels of
the mask rasterised by pycocotools from the stored annotation. Circles are stored as compressed RLE,
squares and triangles as polygons, so both kinds go through the whole pipeline.

The same (seed, split, count, sizes) always gives the same files. A split is generated once into
`<root>/<split>_n<N>_seed<S>_<min>-<max>/` (`images/` + `annotations.json`) and reused afterwards; it is
built in a temporary folder and renamed into place, so concurrent processes (DDP ranks) never see half
a dataset.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = ["SHAPE_CLASSES", "generate_shapes_dataset", "shapes_split_dir"]

SHAPE_CLASSES = ("circle", "square", "triangle")
_SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}


def shapes_split_dir(root: str, split: str, num_images: int, seed: int, size_range: Sequence[int]) -> str:
    return os.path.join(root, f"{split}_n{num_images}_seed{seed}_{size_range[0]}-{size_range[1]}")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> List[float]:
    if kind == "circle":
        n, phase = 48, 0.0  # only used to rasterise the RLE; the circle is stored as RLE
    elif kind == "square":
        n, phase = 4, angle
    else:
        n, phase = 3, angle
    pts = []
    for k in range(n):
        t = phase + 2 * math.pi * k / n
        pts += [cx + r * math.cos(t), cy + r * math.sin(t)]
    return pts


def _make_image(rng: np.random.Generator, image_id: int, size_range: Sequence[int], max_shapes: int):
    from pycocotools import mask as mask_util

    h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    background = rng.integers(0, 256, size=3)
    img = np.empty((h, w, 3), np.float32)
    img[:] = background
    img += rng.normal(0, 6, size=(h, w, 1))  # a little texture so the net cannot key on flat colour
    anns, boxes = [], []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _attempt in range(20):  # place without overlap (masks stay exact); give up after 20 tries
            kind_idx = int(rng.integers(0, len(SHAPE_CLASSES)))
            r = float(rng.uniform(0.08, 0.22) * min(h, w))
            cx, cy = float(rng.uniform(r + 1, w - r - 1)), float(rng.uniform(r + 1, h - r - 1))
            box = (cx - r - 2, cy - r - 2, cx + r + 2, cy + r + 2)
            if all(box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1] for b in boxes):
                break
        else:
            continue
        boxes.append(box)
        kind = SHAPE_CLASSES[kind_idx]
        # rounded first: the stored polygon is exactly what evaluation rasterises, and what is painted
        poly = [round(v, 2) for v in _polygon(kind, cx, cy, r, float(rng.uniform(0, 2 * math.pi)))]
        rle = mask_util.merge(mask_util.frPyObjects([poly], h, w))
        mask = mask_util.decode(rle).astype(bool)
        if mask.sum() < 4:
            continue
        img[mask] = (background + rng.integers(70, 186, size=3)) % 256  # far enough from the background
        x0, y0, bw, bh = (float(v) for v in mask_util.toBbox(rle))
        if kind == "circle":
            segm = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
        else:
            segm = [poly]
        anns.append({"image_id": image_id, "category_id": kind_idx + 1, "bbox": [x0, y0, bw, bh],
                     "area": float(mask_util.area(rle)), "segmentation": segm, "iscrowd": 0})
    return np.clip(img, 0, 255).astype(np.uint8), anns


def generate_shapes_dataset(
    root: str,
    split: str = "train",
    num_images: int = 200,
    seed: int = 0,
    size_range: Tuple[int, int] = (128, 256),
    max_shapes: int = 4,
    image_format: str = "jpg",
) -> Tuple[str, str]:
    """Generate (or reuse) one split; returns (annotation JSON path, image folder)."""
    if split not in _SPLIT_INDEX:
        raise ValueError(f"split must be one of {sorted(_SPLIT_INDEX)}, got {split!r}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if not (0 < size_range[0] <= size_range[1]) or size_range[0] < 32:
        raise ValueError(f"size_range must be (min, max) with 32 <= min <= max, got {tuple(size_range)}")
    out = shapes_split_dir(root, split, num_images, seed, size_range)
    json_path, image_dir = os.path.join(out, "annotations.json"), os.path.join(out, "images")
    if os.path.isfile(json_path):
        return json_path, image_dir

    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{split}-", dir=root)
    try:
        os.makedirs(os.path.join(tmp, "images"))
        rng = np.random.default_rng([seed, _SPLIT_INDEX[split]])
        images, annotations = [], []
        for image_id in range(1, num_images + 1):
            pixels, anns = _make_image(rng, image_id, size_range, max_shapes)
            fname = f"{image_id:06d}.{image_format}"
            save_kw = {"quality": 95} if image_format == "jpg" else {}
            Image.fromarray(pixels).save(os.path.join(tmp, "images", fname), **save_kw)
            images.append({"id": image_id, "file_name": fname, "height": pixels.shape[0], "width": pixels.shape[1]})
            for a in anns:
                a["id"] = len(annotations) + 1
                annotations.append(a)
        data = {
            "info": {"description": f"resdet shapes, split {split}, seed {seed}"},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES)],
        }
        with open(os.path.join(tmp, "annotations.json"), "w", encoding="utf-8") as f:
            json.dump(data, f)
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished the same split first: theirs is identical
            if not os.path.isfile(json_path):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return json_path, image_dir
