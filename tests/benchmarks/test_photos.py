"""Benchmark photographs: real pictures from scikit-image, ImageNet-like sizes, an ImageFolder layout."""
import os

import numpy as np
import pytest

pytest.importorskip("skimage", reason="benchmark photos need scikit-image (pip install -e '.[bench]')")

from resdet.benchmarks.photos import skimage_photos, write_imagenet_style_folder  # noqa: E402


def test_photos_are_colour_photographs_not_flat_or_noise():
    photos = skimage_photos()
    assert len(photos) >= 8
    for name, p in photos:
        assert p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3, name
        # photographs: neighbouring pixels correlate strongly (noise would not), and they are not flat
        g = p.astype(np.float32).mean(2)
        a, b = g[:, :-1].ravel(), g[:, 1:].ravel()
        assert g.std() > 10 and np.corrcoef(a, b)[0, 1] > 0.8, name


def test_folder_has_imagenet_layout_and_sizes(tmp_path):
    from PIL import Image

    root = write_imagenet_style_folder(str(tmp_path / "imgs"), 12, seed=1)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    assert len(files) == 12 and len({os.path.dirname(f) for f in files}) >= 8
    for f in files:
        with Image.open(f) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and 350 <= max(im.size) <= 500, (f, im.size)


def test_photo_detection_dataset_is_valid_coco_with_polygons_and_rle(tmp_path):
    import json

    import pycocotools.mask as mask_util

    from resdet.data.coco import load_coco_json
    from resdet.benchmarks.photos import write_photo_detection_dataset

    json_path, image_dir = write_photo_detection_dataset(str(tmp_path / "d"), "val", 4, min_side=96, max_side=128, seed=3)
    data = json.load(open(json_path))
    kinds = {type(a["segmentation"]).__name__ for a in data["annotations"]}
    assert kinds == {"list", "dict"} and [c["name"] for c in data["categories"]] == ["cat", "cup"]
    records, meta = load_coco_json(json_path, image_dir, check_images="decode")  # validated, every image decoded
    assert len(records) == 4 and meta.thing_classes == ["cat", "cup"]
    for a in data["annotations"]:
        img = data["images"][a["image_id"] - 1]
        seg = a["segmentation"]
        rle = (mask_util.merge(mask_util.frPyObjects(seg, img["height"], img["width"])) if isinstance(seg, list)
               else {"size": seg["size"], "counts": seg["counts"].encode()})
        assert mask_util.area(rle) == a["area"] > 0  # box and area follow the mask
        assert np.allclose(mask_util.toBbox(rle), a["bbox"], atol=0.01)
