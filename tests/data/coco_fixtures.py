"""A small hand-made COCO dataset written to disk with real JPEGs: crowd, empty image, degenerate box,
polygons (one- and two-part), compressed and uncompressed RLE, a too-short polygon, and
non-contiguous category ids (1, 5, 9)."""
import json
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 9, "name": "bird"}]


def _rle_from_box(h, w, x0, y0, x1, y1, compressed=True):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    if compressed:
        r = mask_util.encode(np.asfortranarray(m))
        return {"size": [h, w], "counts": r["counts"].decode("ascii")}
    # uncompressed RLE: column-major runs starting with zeros, as COCO stores crowd regions
    flat = m.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    return {"size": [h, w], "counts": runs}


def coco_dict():
    images = [
        {"id": 1, "file_name": "a.jpg", "height": 60, "width": 80},
        {"id": 2, "file_name": "b.jpg", "height": 64, "width": 48},
        {"id": 3, "file_name": "empty.jpg", "height": 50, "width": 50},
        {"id": 4, "file_name": "crowd_only.jpg", "height": 40, "width": 40},
    ]
    anns = [
        # polygon, one part
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400.0, "iscrowd": 0,
         "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
        # polygon, two parts
        {"id": 11, "image_id": 1, "category_id": 5, "bbox": [40, 5, 30, 40], "area": 500.0, "iscrowd": 0,
         "segmentation": [[40, 5, 50, 5, 50, 20, 40, 20], [60, 30, 70, 30, 70, 45, 60, 45]]},
        # crowd, uncompressed RLE
        {"id": 12, "image_id": 1, "category_id": 1, "bbox": [0, 40, 30, 18], "area": 540.0, "iscrowd": 1,
         "segmentation": _rle_from_box(60, 80, 0, 40, 30, 58, compressed=False)},
        # degenerate box (zero width): dropped with a count
        {"id": 13, "image_id": 1, "category_id": 9, "bbox": [5, 5, 0, 10], "area": 0.0, "iscrowd": 0,
         "segmentation": [[5, 5, 5, 5, 5, 15]]},
        # compressed RLE, non-crowd
        {"id": 20, "image_id": 2, "category_id": 9, "bbox": [4, 8, 20, 30], "area": 600.0, "iscrowd": 0,
         "segmentation": _rle_from_box(64, 48, 4, 8, 24, 38)},
        # only a polygon of 2 points: no mask, dropped with a count
        {"id": 21, "image_id": 2, "category_id": 5, "bbox": [30, 30, 10, 10], "area": 100.0, "iscrowd": 0,
         "segmentation": [[30, 30, 40, 40]]},
        # box slightly past the right border (rounding): clipped
        {"id": 22, "image_id": 2, "category_id": 1, "bbox": [30, 2, 18.4, 10], "iscrowd": 0,
         "segmentation": [[30, 2, 48, 2, 48, 12, 30, 12]]},
        # crowd alone on image 4: the image counts as empty for training
        {"id": 40, "image_id": 4, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400.0, "iscrowd": 1,
         "segmentation": _rle_from_box(40, 40, 0, 0, 20, 20)},
    ]
    return {"images": images, "annotations": anns, "categories": [dict(c) for c in CATEGORIES]}


def write_images(image_dir, data, seed=0):
    os.makedirs(image_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    for img in data["images"]:
        pixels = rng.integers(0, 256, size=(img["height"], img["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(image_dir, img["file_name"]), quality=90)


def write_case(tmp_path, data=None):
    """(json path, image folder, the dict) for the case above (or `data`), images included."""
    data = data or coco_dict()
    image_dir = os.path.join(str(tmp_path), "images")
    write_images(image_dir, data)
    json_path = os.path.join(str(tmp_path), "instances.json")
    with open(json_path, "w") as f:
        json.dump(data, f)
    return json_path, image_dir, data
