"""Instance masks made at the output size (instance_masks_at, the training mapper's fast path) against the
masks the mapper made before: every instance rasterised at full size, resized with nearest neighbour,
flipped as arrays (`annotations_to_masks` through albumentations).

Stated tolerance, on COCO-like polygons (6-30 vertices, 4-60 px radius) upscaled 1.3-1.9x:
- image, boxes and labels identical, the same flips drawn from the same seed;
- per instance IoU >= 0.8 (>= 0.9 for instances of 1,000 px and more): the masks differ at boundaries;
- at least 99% of the differing pixels lie within 2 px of the old mask's boundary;
- the old masks sit about half a pixel right of and below the new ones (OpenCV's INTER_NEAREST picks
  source pixel floor(x / s), not the one under the output pixel's centre); against a centre-exact
  nearest resize the new masks have no offset. The new masks are pycocotools' own rasterisation at the
  output size (equal to rasterising the whole image at that size: tested exactly).
"""
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

import albumentations as A
from resdet.data.coco import load_coco_json
from resdet.data.transforms import DetectionMapper, annotations_to_masks, build_augmentation, instance_masks_at
from resdet.benchmarks.coco_data import random_polygon


def _annotations(rng, h, w, n):
    anns = []
    for k in range(n):
        r = float(rng.uniform(4, 60))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        parts = [random_polygon(rng, cx, cy, r, w, h)]
        if k % 4 == 3:
            parts.append(random_polygon(rng, cx + r, cy, r / 2, w, h))
        xs = np.concatenate([p[0::2] for p in parts])
        ys = np.concatenate([p[1::2] for p in parts])
        anns.append({"id": len(anns) + 1, "category_id": k % 3 + 1, "iscrowd": 0, "segmentation": parts,
                     "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())],
                     "area": 1.0})
    return anns


def _full_image_rasterisation(anns, out_h, out_w, h, w):
    """pycocotools on the scaled polygons over the whole output image (the slow, obvious way)."""
    sx, sy = out_w / w, out_h / h
    out = []
    for a in anns:
        polys = [(np.asarray(p, np.float64).reshape(-1, 2) * (sx, sy)).ravel().tolist() for p in a["segmentation"]]
        out.append(mask_util.decode(mask_util.merge(mask_util.frPyObjects(polys, out_h, out_w))))
    return np.stack(out)


def test_block_rasterisation_equals_whole_image_rasterisation():
    rng = np.random.default_rng(0)
    for h, w, out_h, out_w in [(150, 200, 256, 341), (97, 131, 160, 216), (120, 90, 333, 250)]:
        anns = _annotations(rng, h, w, 12)
        anns.append({"segmentation": [[0, 0, w, 0, w, h, 0, h]], "bbox": [0, 0, w, h]})  # the whole image
        ref = _full_image_rasterisation(anns, out_h, out_w, h, w)
        assert np.array_equal(instance_masks_at(anns, h, w, out_h, out_w), ref)
        assert np.array_equal(instance_masks_at(anns, h, w, out_h, out_w, hflip=True), ref[:, :, ::-1])


def test_rle_instances_as_before_and_no_box_shaped_masks():
    rng = np.random.default_rng(1)
    h, w, out_h, out_w = 60, 80, 96, 128
    m = np.zeros((h, w), np.uint8)
    m[10:30, 5:50] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    anns = [{"segmentation": rle, "bbox": [5, 10, 50, 30]}] + _annotations(rng, h, w, 2)
    full = annotations_to_masks(anns, h, w)
    old = np.stack([cv2.resize(x, (out_w, out_h), interpolation=cv2.INTER_NEAREST) for x in full])
    new = instance_masks_at(anns, h, w, out_h, out_w, hflip=True)
    assert np.array_equal(new[:1], old[:1, :, ::-1])
    # an instance without a mask never becomes a box-shaped one (the loaders stop or leave it out first:
    # DATASETS.INSTANCES_WITHOUT_MASK)
    with pytest.raises(ValueError, match="annotation 7 has no segmentation"):
        instance_masks_at([{"id": 7, "segmentation": [], "bbox": [20.3, 30.6, 60.2, 55.1]}], h, w, out_h, out_w)


def _write_record(tmp_path, rng, h, w, n):
    pixels = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
    Image.fromarray(pixels).save(tmp_path / "im.jpg", quality=90)
    anns = _annotations(rng, h, w, n)
    for a in anns:
        a["image_id"] = 1
    data = {"images": [{"id": 1, "file_name": "im.jpg", "height": h, "width": w}], "annotations": anns,
            "categories": [{"id": k, "name": str(k)} for k in (1, 2, 3)]}
    with open(tmp_path / "a.json", "w") as f:
        json.dump(data, f)
    return load_coco_json(str(tmp_path / "a.json"), str(tmp_path))[0][0]


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_mapper_masks_match_the_full_size_path(tmp_path, flip):
    rng = np.random.default_rng(2)
    record = _write_record(tmp_path, rng, 150, 200, 40)
    kwargs = dict(min_size_train=(200, 232, 256, 288), max_size=1333, flip_prob=flip)
    new = DetectionMapper(is_train=True, **kwargs)
    aug = build_augmentation(True, **kwargs)  # the same ops, without applied params: the full-size path
    old = DetectionMapper(is_train=True, augmentation=A.Compose(aug.transforms, bbox_params=aug.processors["bboxes"].params))
    assert new.masks_after_augmentation and not old.masks_after_augmentation
    ious, areas, near, total, shifts, exact_shifts = [], [], 0, 0, [], []
    for seed in range(4):
        new.augmentation.set_random_seed(seed)
        old.augmentation.set_random_seed(seed)
        (img_n, t_n), (img_o, t_o) = new(record), old(record)
        assert torch.equal(img_n, img_o) and torch.equal(t_n["boxes"], t_o["boxes"])
        assert torch.equal(t_n["labels"], t_o["labels"])
        assert t_n["masks"].dtype == torch.uint8 and t_n["masks"].shape == t_o["masks"].shape
        assert t_n["masks"].shape[1:] == img_n.shape[1:]
        out_h, out_w = img_n.shape[1:]
        exact = np.stack([cv2.resize(m, (out_w, out_h), interpolation=cv2.INTER_NEAREST_EXACT)
                          for m in annotations_to_masks(record["annotations"], 150, 200)])
        if flip:
            exact = exact[:, :, ::-1]
        for a, b, c in zip(t_n["masks"].numpy(), t_o["masks"].numpy(), exact):
            ious.append((a & b).sum() / (a | b).sum())
            areas.append(b.sum())
            kernel = np.ones((3, 3), np.uint8)
            band = cv2.dilate(b, kernel, iterations=2) - cv2.erode(b, kernel, iterations=2)
            diff = a ^ b
            near += int((diff & band).sum())
            total += int(diff.sum())
            centroid = lambda m: np.array([np.nonzero(m)[1].mean(), np.nonzero(m)[0].mean()])  # noqa: E731
            shifts.append(centroid(b) - centroid(a))
            exact_shifts.append(centroid(c) - centroid(a))
    ious, areas = np.array(ious), np.array(areas)
    assert len(ious) >= 100 and areas.min() < 1000 < areas.max()
    assert ious.min() >= 0.8 and ious[areas >= 1000].min() >= 0.9, (ious.min(), ious[areas >= 1000].min())
    assert total > 0 and near / total >= 0.99, (near, total)
    shift = np.mean(shifts, axis=0)
    assert 0.25 < abs(shift[0]) < 0.75 and 0.25 < shift[1] < 0.75, shift  # x mirrored with the flip
    assert np.abs(np.mean(exact_shifts, axis=0)).max() < 0.1, np.mean(exact_shifts, axis=0)


def test_lsj_keeps_the_full_size_path(tmp_path):
    rng = np.random.default_rng(3)
    record = _write_record(tmp_path, rng, 60, 80, 5)
    mapper = DetectionMapper(is_train=True, lsj=True, lsj_size=96, lsj_scale=(0.5, 2.0))
    assert not mapper.masks_after_augmentation
    img, t = mapper(record)
    assert t["masks"].shape == (len(t["boxes"]), 96, 96)
