"""The coco loader benchmark: its generated COCO-style set (real photographs, COCO's shapes, ~7 polygons
of 6-30 vertices per image), torchvision's reference pipeline doing the real work, and the timing
function on a tiny set (per core and with a worker)."""
import json
import math
import os

import pytest
import torch

pytest.importorskip("skimage", reason="benchmark photos need scikit-image (pip install -e '.[bench]')")

from resdet.data.coco import load_coco_json  # noqa: E402
from resdet.benchmarks.coco_data import write_coco_style_dataset  # noqa: E402
from resdet.benchmarks.loader_coco import TorchvisionCocoReference, time_coco_loaders  # noqa: E402


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    return write_coco_style_dataset(str(tmp_path_factory.mktemp("bench_coco")), 12, seed=0)


def test_generated_set_looks_like_coco(coco_set):
    with open(os.path.join(coco_set, "annotations.json")) as f:
        data = json.load(f)
    assert len(data["images"]) == 12
    shapes = {(im["width"], im["height"]) for im in data["images"]}
    assert all(max(s) == 640 and 420 <= min(s) <= 480 for s in shapes), shapes
    assert any(w > h for w, h in shapes) and any(w < h for w, h in shapes) or len(shapes) == 1
    per_image = len(data["annotations"]) / len(data["images"])
    assert 5 <= per_image <= 9, per_image
    vertices = [len(p) // 2 for a in data["annotations"] for p in a["segmentation"]]
    assert min(vertices) >= 6 and max(vertices) <= 30
    assert any(len(a["segmentation"]) == 2 for a in data["annotations"])  # occluded, two-part objects
    records, meta = load_coco_json(os.path.join(coco_set, "annotations.json"), os.path.join(coco_set, "images"))
    assert len(records) == 12 and sum(meta.stats.values()) == 0  # nothing to repair or drop


def test_torchvision_reference_resizes_image_boxes_and_masks(coco_set):
    ref = TorchvisionCocoReference(os.path.join(coco_set, "images"), os.path.join(coco_set, "annotations.json"))
    torch.manual_seed(0)
    for i in range(2):
        image, target = ref[i]
        h, w = image.shape[1:]
        assert image.dtype == torch.float32 and 0 <= float(image.min()) and float(image.max()) <= 1
        assert 640 <= min(h, w) <= 800 and max(h, w) <= 1333
        n = len(target["boxes"])
        assert n > 0 and target["masks"].shape == (n, h, w) and target["masks"].dtype == torch.uint8
        assert target["labels"].shape == (n,)
        boxes = target["boxes"]
        assert (boxes[:, 2:] > boxes[:, :2]).all() and float(boxes[:, 2].max()) <= w + 1e-3
        for box, mask in zip(boxes, target["masks"]):  # masks lie in their boxes (both resized and flipped)
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert xs.min() >= box[0] - 2 and xs.max() <= box[2] + 2 and ys.min() >= box[1] - 2


@pytest.mark.parametrize("workers", [0, 1])
def test_time_coco_loaders_runs(coco_set, workers):
    import cv2

    threads = torch.get_num_threads(), cv2.getNumThreads()
    out = time_coco_loaders(None if workers == 0 else coco_set, n=4, workers=workers)
    assert set(out) == {"resdet", "torchvision"}
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in out.values()), out
    assert (torch.get_num_threads(), cv2.getNumThreads()) == threads  # per-core settings undone


def test_time_coco_loaders_names_a_folder_without_annotations(tmp_path):
    with pytest.raises(FileNotFoundError, match="no annotations.json"):
        time_coco_loaders(str(tmp_path), n=2, workers=0)
