import json
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from resdet.data.coco import load_coco_json
from resdet.data.shapes import SHAPE_CLASSES, generate_shapes_dataset


def test_shapes_are_deterministic_cached_and_exact(tmp_path):
    j1, d1 = generate_shapes_dataset(str(tmp_path / "a"), "train", 6, seed=3, size_range=(64, 96), image_format="png")
    j2, d2 = generate_shapes_dataset(str(tmp_path / "b"), "train", 6, seed=3, size_range=(64, 96), image_format="png")
    a, b = json.load(open(j1)), json.load(open(j2))
    assert a["annotations"] == b["annotations"] and a["images"] == b["images"]
    for img in a["images"]:
        assert open(os.path.join(d1, img["file_name"]), "rb").read() == open(os.path.join(d2, img["file_name"]), "rb").read()
    # a different seed or split gives different data
    j3, _ = generate_shapes_dataset(str(tmp_path / "a"), "val", 6, seed=3, size_range=(64, 96), image_format="png")
    assert json.load(open(j3))["annotations"] != a["annotations"]
    # cached: asking again reuses the files
    mtime = os.path.getmtime(j1)
    assert generate_shapes_dataset(str(tmp_path / "a"), "train", 6, seed=3, size_range=(64, 96), image_format="png")[0] == j1
    assert os.path.getmtime(j1) == mtime

    assert [c["name"] for c in a["categories"]] == list(SHAPE_CLASSES)
    kinds = {type(x["segmentation"]).__name__ for x in a["annotations"]}
    assert kinds == {"dict", "list"}  # circles as RLE, the others as polygons
    for img in a["images"]:
        assert 64 <= img["height"] <= 96 and 64 <= img["width"] <= 96
        pixels = np.asarray(Image.open(os.path.join(d1, img["file_name"])))
        for ann in (x for x in a["annotations"] if x["image_id"] == img["id"]):
            segm = ann["segmentation"]
            rle = segm if isinstance(segm, dict) else mask_util.merge(mask_util.frPyObjects(segm, img["height"], img["width"]))
            mask = mask_util.decode(rle).astype(bool)
            inside = pixels[mask]
            assert (inside == inside[0]).all()  # exactly the pixels painted in one colour
            assert mask.sum() == ann["area"]
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)


def test_shapes_load_through_the_validated_path(tmp_path):
    j, d = generate_shapes_dataset(str(tmp_path), "val", 5, seed=0, size_range=(64, 80))
    dicts, meta = load_coco_json(j, d, check_images="decode", filter_empty=False)
    assert len(dicts) == 5 and meta.thing_classes == list(SHAPE_CLASSES)
    assert meta.stats["degenerate_boxes"] == 0
