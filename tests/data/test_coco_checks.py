"""The loader's checks that name what is wrong instead of blaming something else or training on it
silently: image sizes before boxes, instances without masks, polygons past the border, boxes that
disagree with their masks, file names outside the image folder."""
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from resdet.config import load_config
from resdet.data.coco import ImageFileError, load_coco_json
from resdet.data.coco_eval_gt import scorable_ground_truth
from resdet.data.coco_validation import CocoFormatError
from resdet.data.transforms import annotations_to_masks

from .coco_fixtures import coco_dict, write_case


def _ann(data, ann_id):
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def test_a_json_size_that_differs_from_the_file_is_named_before_boxes_are_blamed(tmp_path):
    data = coco_dict()
    json_path, image_dir, _ = write_case(tmp_path, data)
    data["images"][0].update(width=40)  # a.jpg is 80 wide; its boxes now reach past the JSON's 40
    with open(json_path, "w") as f:
        json.dump(data, f)
    with pytest.raises(ImageFileError, match=r"a.jpg' is 80x60 \(width x height, EXIF orientation applied\) but "
                                             r"its annotation JSON says 40x60"):
        load_coco_json(json_path, image_dir)
    # with SKIP_BAD_IMAGES the image and its annotations are left out before the boxes are checked
    dicts, meta = load_coco_json(json_path, image_dir, filter_empty=False, skip_bad_images=True)
    assert sorted(d["image_id"] for d in dicts) == [2, 3, 4] and meta.stats["bad_images_skipped"] == 1
    # without the image checks, the boxes are what is wrong, and the message says whose size it used
    with pytest.raises(CocoFormatError, match=r"annotation 11 .*outside the 40x60 image \(width x height, as its "
                                              r"JSON entry says\)"):
        load_coco_json(json_path, image_dir, check_images="none")


@pytest.mark.parametrize("segm", ["missing", None, []])
def test_an_instance_without_a_mask_is_an_error_or_left_out_for_mask_training(tmp_path, caplog, segm):
    data = coco_dict()
    ann = _ann(data, 10)
    if segm == "missing":
        ann.pop("segmentation")
    else:
        ann["segmentation"] = segm
    json_path, image_dir, _ = write_case(tmp_path, data)
    with pytest.raises(CocoFormatError, match=r"1 non-crowd annotations have no segmentation \(missing, null or "
                                              r"\[\]\), e.g. ids \[10\], and masks are needed"):
        load_coco_json(json_path, image_dir)
    with caplog.at_level(logging.WARNING):
        dicts, meta = load_coco_json(json_path, image_dir, instances_without_mask="ignore")
    assert 10 not in [a["id"] for d in dicts for a in d["annotations"]]
    assert meta.stats["instances_without_mask_ignored"] == 1
    assert "left out 1 non-crowd instances without a segmentation (DATASETS.INSTANCES_WITHOUT_MASK ignore: they " \
           "are treated as crowd regions), e.g. annotation ids [10]" in caplog.text
    dicts, _ = load_coco_json(json_path, image_dir, instances_without_mask="keep")  # boxes-only models
    kept = {a["id"]: a for d in dicts for a in d["annotations"]}
    assert kept[10]["segmentation"] == [] and kept[10]["bbox"] == [10.0, 10.0, 30.0, 30.0]
    assert kept[21]["segmentation"] == []  # only a 2-point polygon: no mask, but its box trains a box head
    # the mapper never makes a box-shaped mask out of it
    with pytest.raises(ValueError, match="annotation 10 has no segmentation"):
        annotations_to_masks([kept[10]], 60, 80)


def test_the_training_loader_asks_for_masks_only_when_the_model_trains_them(tmp_path):
    from resdet.data.loader import build_detection_train_loader

    data = coco_dict()
    _ann(data, 20)["segmentation"] = []
    json_path, image_dir, _ = write_case(tmp_path, data)
    base = ["DATASETS.CUSTOM_NAMES", "['case']", "DATASETS.CUSTOM_JSONS", f"['{json_path}']",
            "DATASETS.CUSTOM_IMAGE_DIRS", f"['{image_dir}']", "DATASETS.TRAIN", "('case',)",
            "SOLVER.IMS_PER_BATCH", "1", "DATALOADER.NUM_WORKERS", "0"]
    with pytest.raises(CocoFormatError, match=r"ids \[20\].*DATASETS.INSTANCES_WITHOUT_MASK ignore"):
        build_detection_train_loader(load_config(None, base + ["MODEL.MASK_ON", "True"]))
    loader = build_detection_train_loader(load_config(None, base + ["MODEL.MASK_ON", "False"]))
    assert 20 in [a["id"] for r in loader.dataset.records for a in r["annotations"]]
    loader = build_detection_train_loader(load_config(None, base + ["MODEL.MASK_ON", "True",
                                                                    "DATASETS.INSTANCES_WITHOUT_MASK", "ignore"]))
    assert 20 not in [a["id"] for r in loader.dataset.records for a in r["annotations"]]


def test_polygons_a_little_past_the_border_are_cut_there_and_counted(tmp_path, caplog):
    data = coco_dict()
    # 2 px past the left and top border of the 80x60 image (tolerance: 1 px + 5% of the side)
    _ann(data, 10).update(segmentation=[[-2, -2, 30, -2, 30, 30, -2, 30]], bbox=[-2, -2, 32, 32])
    json_path, image_dir, _ = write_case(tmp_path, data)
    with caplog.at_level(logging.WARNING):
        dicts, _ = load_coco_json(json_path, image_dir)
    assert "1 annotations have a polygon reaching up to 1 px + 5% past the image; their masks are cut at the " \
           "border, e.g. ids [10]" in caplog.text
    ann = next(a for d in dicts for a in d["annotations"] if a["id"] == 10)
    mask = annotations_to_masks([ann], 60, 80)[0]
    assert mask.sum() == 30 * 30 and mask[:30, :30].all()  # the part inside the image, exactly


def test_a_box_that_disagrees_with_its_mask_is_named(tmp_path, caplog):
    data = coco_dict()
    _ann(data, 10)["bbox"] = [40, 10, 20, 20]  # the polygon is the square at x 10..30: 30 px apart
    _ann(data, 20)["bbox"] = [4, 8, 20.5, 30]  # half a pixel: rounding, not a disagreement
    json_path, image_dir, _ = write_case(tmp_path, data)
    with caplog.at_level(logging.WARNING):
        load_coco_json(json_path, image_dir)
        scorable_ground_truth(data, ("bbox", "segm"), source="case.json")  # evaluation says it too
    said = ("1 annotations have a bbox (x, y, w, h) that disagrees with the bounding box of their mask by more "
            "than 2 px + 10% of the box ({}), e.g. id 10: bbox [40.0, 10.0, 20.0, 20.0] vs mask [10.0, 10.0, 20.0, 20.0]")
    training = said.format("mask targets are cut by boxes, so these teach the wrong mask")
    evaluation = said.format("bbox evaluation scores detections against the box and segm evaluation against the "
                             "mask, so the two scores measure different regions of these objects")
    assert f"instances.json: {training}" in caplog.text and f"case.json: {evaluation}" in caplog.text


def test_a_file_name_outside_the_image_folder_is_said_once(tmp_path, caplog):
    data = coco_dict()
    json_path, image_dir, _ = write_case(tmp_path, data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("a.jpg", "b.jpg"):
        os.replace(os.path.join(image_dir, name), elsewhere / name)
    data["images"][0]["file_name"] = str(elsewhere / "a.jpg")  # absolute
    data["images"][1]["file_name"] = "../elsewhere/b.jpg"
    with open(json_path, "w") as f:
        json.dump(data, f)
    with caplog.at_level(logging.WARNING):
        dicts, _ = load_coco_json(json_path, image_dir, filter_empty=False)
    lines = [r.getMessage() for r in caplog.records if "outside the image folder" in r.getMessage()]
    assert len(lines) == 1 and "2 images have a file_name outside the image folder" in lines[0]
    assert str(elsewhere / "a.jpg") in lines[0] and "they are read from there" in lines[0]
    assert dicts[0]["file_name"] == str(elsewhere / "a.jpg")
    assert np.array(Image.open(dicts[1]["file_name"])).shape == (64, 48, 3)
