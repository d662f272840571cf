"""Tiny classification datasets written to disk as real JPEG/PNG files (shared by the cls tests)."""
import os
import pickle

import numpy as np
from PIL import Image

# Each class is a coloured pattern a small network separates within a few dozen steps.
_COLORS = [(220, 40, 40), (40, 200, 60), (50, 60, 230), (230, 220, 40), (200, 60, 220)]


def class_image(cls: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    img = rng.normal(0, 25, (size, size, 3)) + np.array(_COLORS[cls % len(_COLORS)])
    if cls % 2:  # a bright stripe on odd classes so shape matters as well as colour
        img[:, size // 3: size // 2] += 60
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image_tree(root, counts=None, num_classes: int = 3, size: int = 32, seed: int = 0, ext: str = "jpg"):
    """<root>/<split>/class_<k>/<i>.<ext>; counts = {split: images per class}."""
    counts = counts or {"train": 16, "test": 6}
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for c in range(num_classes):
            d = os.path.join(root, split, f"class_{c}")
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                Image.fromarray(class_image(c, rng, size)).save(os.path.join(d, f"{i:04d}.{ext}"), quality=95)
    return str(root)


def make_cifar_batches(root, per_batch: int = 6, num_classes: int = 10, seed: int = 0, protocol: int = 2):
    """A miniature cifar-10-batches-py/ (5 training batches + test_batch + batches.meta) in the real format:
    the official files' keys and types, pickled with `protocol` (the official files use protocol 2)."""
    rng = np.random.default_rng(seed)
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d, exist_ok=True)
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(x) for x in rng.integers(0, num_classes, per_batch)]
        imgs = np.stack([class_image(c, rng) for c in labels])                  # N, 32, 32, 3
        data = imgs.transpose(0, 3, 1, 2).reshape(per_batch, -1)                # CIFAR's row layout
        with open(os.path.join(d, name), "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode(),
                         b"filenames": [f"{name}_{i:05d}.png".encode() for i in range(per_batch)]}, f, protocol=protocol)
        expected[name] = (imgs.transpose(0, 3, 1, 2), labels)
    with open(os.path.join(d, "batches.meta"), "wb") as f:
        pickle.dump({b"num_cases_per_batch": per_batch, b"label_names": [f"c{i}".encode() for i in range(num_classes)],
                     b"num_vis": 3072}, f, protocol=protocol)
    return str(root), expected
