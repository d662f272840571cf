"""Real photographs for the benchmarks, made from the sample photos that scikit-image ships.

JPEG decoding cost depends on image content (noise is the worst case, flat colour the best), so loader
benchmarks must read photographs. scikit-image carries a handful inside its wheel (no download); they are
cropped at random and scaled to the sizes a benchmark needs. scikit-image is a benchmark-only extra
(`pip install -e ".[bench]"`), never needed at run time.
"""
from __future__ import annotations

import functools
import os
from typing import List, Tuple

import numpy as np

__all__ = ["skimage_photos", "benchmark_photos", "photo_batch", "random_crop_resized", "write_imagenet_style_folder",
           "write_photo_detection_dataset", "PHOTO_OBJECTS"]

# Colour photographs bundled with scikit-image (no network): people, animals, objects, a street scene
# (the motorcycle pair), a launch pad, space, a retina. Loaders that need the network are left out.
_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")


def skimage_photos() -> List[Tuple[str, np.ndarray]]:
    """[(name, HxWx3 uint8 RGB)] of the colour photographs shipped inside scikit-image."""
    try:
        from skimage import data
    except ImportError as e:
        raise ImportError("benchmark photos come from scikit-image: pip install -e \".[bench]\"") from e
    photos = [(name, getattr(data, name)()) for name in _PHOTOS]
    left, right, _ = data.stereo_motorcycle()
    photos += [("motorcycle_left", left), ("motorcycle_right", right)]
    return [(n, np.ascontiguousarray(p[..., :3])) for n, p in photos]


@functools.lru_cache(maxsize=1)
def benchmark_photos() -> List[Tuple[str, np.ndarray]]:
    """scikit-image's photographs, or where it is not installed (a bare GPU machine) the two photographs
    matplotlib ships in its sample data (a portrait and a product shot), which every resdet install has.
    Read once per process (seconds: scikit-image's import and its larger photographs)."""
    try:
        return skimage_photos()
    except ImportError:
        import matplotlib
        from PIL import Image

        folder = os.path.join(matplotlib.get_data_path(), "sample_data")
        photos = []
        for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
            with Image.open(os.path.join(folder, name)) as img:
                photos.append((os.path.splitext(name)[0], np.asarray(img.convert("RGB"))))
        return photos


def photo_batch(n: int, height: int, width: int, seed: int = 0):
    """uint8 [n, 3, height, width] (torch): random crops of real photographs with the batch's aspect ratio
    (each side at least half the photo's), scaled to the size (benchmark inputs are photographs, never noise)."""
    import cv2
    import torch

    rng = np.random.default_rng(seed)
    photos = benchmark_photos()
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        photo = photos[i % len(photos)][1]
        h, w = photo.shape[:2]
        ch = min(h, w * height / width) * rng.uniform(0.5, 1.0)  # the largest crop of this aspect, shrunk
        ch, cw = max(1, int(ch)), max(1, int(ch * width / height))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        out[i] = cv2.resize(photo[y:y + ch, x:x + cw], (width, height),
                            interpolation=cv2.INTER_AREA if ch > height else cv2.INTER_CUBIC)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def random_crop_resized(photo: np.ndarray, rng: np.random.Generator, min_side: int, max_side: int,
                        min_crop: float = 0.5) -> np.ndarray:
    """A random crop (each side at least `min_crop` of the photo's), scaled so that its longer side is
    uniform in [min_side, max_side] (aspect ratio kept). OpenCV's area/cubic resize, as photo tools do."""
    import cv2

    h, w = photo.shape[:2]
    ch = int(rng.integers(int(h * min_crop), h + 1))
    cw = int(rng.integers(int(w * min_crop), w + 1))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = photo[y:y + ch, x:x + cw]
    scale = float(rng.uniform(min_side, max_side)) / max(ch, cw)
    size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def write_imagenet_style_folder(root: str, num_images: int, *, min_side: int = 350, max_side: int = 500,
                                quality: int = 90, seed: int = 0) -> str:
    """`root/<photo name>/<i>.jpg`: ImageNet's layout (class folders of JPEGs) and about its image sizes
    (longer side 350-500 px, quality 90, 4:2:0), each image a different random crop of a photograph."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = skimage_photos()
    for i in range(num_images):
        name, photo = photos[i % len(photos)]
        os.makedirs(os.path.join(root, name), exist_ok=True)
        img = random_crop_resized(photo, rng, min_side, max_side)
        Image.fromarray(img).save(os.path.join(root, name, f"{i:06d}.jpg"), quality=quality, subsampling=2)
    return root


# Objects for a photo detection dataset: (category, photo, crop rows, crop columns) of scikit-image's
# photos, chosen so that each crop is mostly the object (the cat's head and body, the cup of coffee).
PHOTO_OBJECTS = (("cat", "chelsea", (20, 290), (90, 380)), ("cup", "coffee", (30, 360), (90, 500)))
_BACKGROUNDS = ("astronaut", "rocket", "hubble_deep_field", "retina", "immunohistochemistry", "motorcycle_left",
                "motorcycle_right")


def _ellipse_polygon(x0: float, y0: float, w: float, h: float, points: int = 32) -> List[float]:
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    xs, ys = x0 + w / 2 * (1 + np.cos(t)), y0 + h / 2 * (1 + np.sin(t))
    return [round(float(v), 2) for xy in zip(xs, ys) for v in xy]


def write_photo_detection_dataset(root: str, split: str, num_images: int, *, min_side: int = 256,
                                  max_side: int = 384, objects: Tuple[int, int] = (1, 3), quality: int = 90,
                                  seed: int = 0) -> Tuple[str, str]:
    """A small COCO-format instance segmentation set of photographs, as a user's own data would be:
    `root/images/<split>_<i>.jpg` (random crops of scikit-image's photos, longer side in [min_side,
    max_side], JPEG) with 1-3 objects each (`PHOTO_OBJECTS`: crops of the cat and coffee-cup photos
    scaled to 20-50% of the shorter side, pasted inside an ellipse, never overlapping), and
    `root/annotations/<split>.json` whose masks alternate between polygons and RLE, with boxes and
    areas computed from the masks by pycocotools. Returns (json path, image folder)."""
    import json

    import pycocotools.mask as mask_util
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = dict(skimage_photos())
    image_dir, ann_dir = os.path.join(root, "images"), os.path.join(root, "annotations")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(1, num_images + 1):
        canvas = random_crop_resized(photos[_BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]], rng, min_side, max_side)
        canvas = np.ascontiguousarray(canvas)
        H, W = canvas.shape[:2]
        placed: List[Tuple[float, float, float, float]] = []
        for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
            cat = int(rng.integers(len(PHOTO_OBJECTS)))
            _, photo, (r0, r1), (c0, c1) = PHOTO_OBJECTS[cat]
            crop = photos[photo][r0:r1, c0:c1]
            scale = float(rng.uniform(0.2, 0.5)) * min(H, W) / max(crop.shape[:2])
            w, h = max(8, round(crop.shape[1] * scale)), max(8, round(crop.shape[0] * scale))
            for _try in range(20):  # a place that overlaps no earlier object
                x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
                if all(x + w <= a or a + c <= x or y + h <= b or b + d <= y for a, b, c, d in placed):
                    break
            else:
                continue
            placed.append((x, y, w, h))
            polygon = _ellipse_polygon(x, y, w, h)
            rle = mask_util.merge(mask_util.frPyObjects([polygon], H, W))
            inside = mask_util.decode(rle).astype(bool)  # the pixels the annotation covers, exactly
            canvas[inside] = _paste(canvas, crop, x, y, w, h)[inside]
            ann_id = len(annotations) + 1
            if ann_id % 2:
                segmentation = [polygon]
            else:
                segmentation = {"size": [H, W], "counts": rle["counts"].decode("ascii")}
            annotations.append({"id": ann_id, "image_id": i, "category_id": cat + 1, "iscrowd": 0,
                                "segmentation": segmentation, "area": float(mask_util.area(rle)),
                                "bbox": [round(float(v), 2) for v in mask_util.toBbox(rle)]})
        name = f"{split}_{i:06d}.jpg"
        Image.fromarray(canvas).save(os.path.join(image_dir, name), quality=quality, subsampling=2)
        images.append({"id": i, "file_name": name, "height": H, "width": W})
    categories = [{"id": k + 1, "name": o[0], "supercategory": "thing"} for k, o in enumerate(PHOTO_OBJECTS)]
    json_path = os.path.join(ann_dir, f"{split}.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return json_path, image_dir


def _paste(canvas: np.ndarray, crop: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """`canvas` with `crop` resized into the rectangle (x, y, w, h) (a copy; the caller keeps the mask's pixels)."""
    import cv2

    out = canvas.copy()
    out[y:y + h, x:x + w] = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_AREA)
    return out
