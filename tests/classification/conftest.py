"""Photographs on disk for the classification input tests (scikit-image's bundled photos, no download)."""
import os
from types import SimpleNamespace

import pytest


def _jpegs(root):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".jpg"))


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """`small`: a folder of 18 ImageNet-sized JPEGs (<root>/<photo name>/<i>.jpg, longer side 350-500 px,
    q90) and `big`: 6 of 900-1200 px, large enough for reduced-size decoding at the 224 crop; with
    `small_paths` / `big_paths` the files."""
    pytest.importorskip("skimage", reason="benchmark photos come from scikit-image (pip install -e '.[dev]')")
    from resdet.benchmarks.photos import write_imagenet_style_folder

    base = str(tmp_path_factory.mktemp("photos"))
    small = write_imagenet_style_folder(os.path.join(base, "small"), 18, seed=1)
    big = write_imagenet_style_folder(os.path.join(base, "big"), 6, min_side=900, max_side=1200, seed=2)
    return SimpleNamespace(small=small, big=big, small_paths=_jpegs(small), big_paths=_jpegs(big))
