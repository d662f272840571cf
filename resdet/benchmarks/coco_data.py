"""A COCO-format benchmark set: real photographs at COCO's image size, with generated instance polygons.

The loader benchmark (`loader_coco.py`) needs what a COCO training mapper meets: JPEGs of
photographs about 640 px on the longer side (COCO's are mostly 640x480 or 480x640, quality ~90) and about
seven instances per image whose outlines are polygons of 6-30 vertices, of every size from a few pixels to
half the image, some in two parts (occluded objects). The photos are crops of scikit-image's bundled
pictures (resdet/benchmarks/photos.py); the outlines are random star-shaped polygons (a radius per angle,
smoothly varying), written as an ordinary `annotations.json` next to an `images/` folder.
"""
from __future__ import annotations

import json
import os
from typing import List

import numpy as np

from .photos import skimage_photos

__all__ = ["coco_shaped_crop", "random_polygon", "write_coco_style_dataset"]

# COCO's image shapes: almost every image is 640 px on its longer side, about three in four are
# landscape, and the aspect ratio is mostly 4:3 (640x480) or 3:2 (640x427).
_ASPECTS = (4 / 3, 3 / 2)
_LANDSCAPE_FRACTION = 0.75


def coco_shaped_crop(photo: np.ndarray, rng: np.random.Generator, min_side: int = 640, max_side: int = 640) -> np.ndarray:
    """A random crop of `photo` with COCO's shape: 4:3 or 3:2, landscape or portrait, covering 50-100% of
    the largest such crop, scaled so that its longer side is uniform in [min_side, max_side]."""
    import cv2

    h, w = photo.shape[:2]
    aspect = float(rng.choice(_ASPECTS))
    aspect = aspect if rng.random() < _LANDSCAPE_FRACTION else 1 / aspect  # width / height
    ch = min(h, w / aspect) * rng.uniform(0.5, 1.0)
    cw = ch * aspect
    ch, cw = max(1, int(ch)), max(1, int(cw))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = photo[y:y + ch, x:x + cw]
    scale = float(rng.uniform(min_side, max_side)) / max(ch, cw)
    size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def random_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float, width: int, height: int) -> List[float]:
    """A star-shaped outline of 6-30 vertices around (cx, cy), flat [x1, y1, x2, y2, ...], inside the image.

    Radii vary smoothly with the angle (a few low-frequency harmonics), so shapes look like blobs, bodies
    or objects seen at an angle rather than noise; vertices are clipped to the image, as annotators do.
    """
    n = int(rng.integers(6, 31))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    wobble = np.zeros(n)
    for k in (1, 2, 3):
        wobble += rng.normal(0, 0.25 / k) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(1.0 + wobble, 0.3, 1.8)
    aspect = rng.uniform(0.5, 2.0)  # elongated objects (people standing, cars from the side)
    xs = np.clip(cx + r * np.cos(angles) * np.sqrt(aspect), 0, width)
    ys = np.clip(cy + r * np.sin(angles) / np.sqrt(aspect), 0, height)
    return [round(float(v), 2) for xy in zip(xs, ys) for v in xy]


def _polygon_area(poly: List[float]) -> float:
    x, y = np.asarray(poly[0::2]), np.asarray(poly[1::2])
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def write_coco_style_dataset(root: str, num_images: int, *, objects_per_image: float = 7.0, min_side: int = 640,
                             max_side: int = 640, quality: int = 90, num_classes: int = 10, seed: int = 0) -> str:
    """`root/annotations.json` + `root/images/<i>.jpg`: COCO's format and about its statistics (COCO's
    shapes, `coco_shaped_crop`: 640x480, 640x427 and their portraits by default; JPEG quality 90 4:2:0; Poisson(`objects_per_image`) instances of at least
    one, object radii log-uniform from 6 px to a third of the shorter side, 15% of them in two parts).
    Returns `root`. Needs scikit-image (the "bench" extra)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = skimage_photos()
    image_dir = os.path.join(root, "images")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        _, photo = photos[i % len(photos)]
        pixels = coco_shaped_crop(photo, rng, min_side, max_side)
        h, w = pixels.shape[:2]
        file_name = f"{i:06d}.jpg"
        Image.fromarray(pixels).save(os.path.join(image_dir, file_name), quality=quality, subsampling=2)
        images.append({"id": i + 1, "file_name": file_name, "height": h, "width": w})
        for _ in range(max(1, int(rng.poisson(objects_per_image)))):
            radius = float(np.exp(rng.uniform(np.log(6.0), np.log(min(h, w) / 3))))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            parts = [random_polygon(rng, cx, cy, radius, w, h)]
            if rng.random() < 0.15:  # an occluded object: a second part beside the first
                parts.append(random_polygon(rng, cx + rng.uniform(-2, 2) * radius, cy + rng.uniform(-2, 2) * radius,
                                            radius * rng.uniform(0.3, 0.8), w, h))
            xs = np.concatenate([p[0::2] for p in parts])
            ys = np.concatenate([p[1::2] for p in parts])
            x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue  # clipped down to a sliver at the border: not an object
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": int(rng.integers(1, num_classes + 1)),
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round(sum(_polygon_area(p) for p in parts), 2), "iscrowd": 0, "segmentation": parts,
            })
    categories = [{"id": k, "name": f"class{k}", "supercategory": "thing"} for k in range(1, num_classes + 1)]
    with open(os.path.join(root, "annotations.json"), "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return root
