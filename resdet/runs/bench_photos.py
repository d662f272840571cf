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

__all__ = ["skimage_photos", "benchmark_photos", "photo_batch", "random_crop_resized", "write_imagenet_style_folder"]

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
