import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from resdet.data.coco import ImageFileError, load_coco_json, read_image
from resdet.data.coco_validation import CocoFormatError, validate_coco_dict

from .coco_fixtures import coco_dict, write_case


def _by_id(dicts):
    return {d["image_id"]: d for d in dicts}


def test_loads_crowd_empty_degenerate_and_both_mask_kinds(tmp_path, caplog):
    json_path, image_dir, _ = write_case(tmp_path)
    with caplog.at_level(logging.INFO, logger="resdet.data.coco"):
        dicts, meta = load_coco_json(json_path, image_dir, "case", filter_empty=True, check_images="decode")
    # empty image 3 and crowd-only image 4 are skipped for training
    assert sorted(_by_id(dicts)) == [1, 2]
    assert meta.stats == {"degenerate_boxes": 1, "short_polygon_instances": 1, "clipped_boxes": 1,
                          "empty_images_skipped": 2, "filled_area": 1, "bad_images_skipped": 0,
                          "instances_without_mask_ignored": 0}
    assert "left out 1 annotations whose box has no area after clipping to the image, e.g. ids [13]" in caplog.text
    assert "left out 1 instances whose polygons all have fewer than 3 points (no mask), e.g. annotation ids [21]" \
        in caplog.text
    # non-contiguous ids 1, 5, 9 -> labels 1, 2, 3, and back
    assert meta.dataset_id_to_contiguous == {1: 1, 5: 2, 9: 3}
    assert meta.contiguous_to_dataset_id == {1: 1, 2: 5, 3: 9}
    assert meta.thing_classes == ["cat", "dog", "bird"]

    img1 = _by_id(dicts)[1]
    anns = {a["id"]: a for a in img1["annotations"]}
    assert sorted(anns) == [10, 11, 12]  # 13 (degenerate) dropped, crowd 12 kept for the evaluator
    assert anns[10]["bbox"] == [10.0, 10.0, 30.0, 30.0]  # xywh -> xyxy
    assert anns[11]["category_id"] == 2 and len(anns[11]["segmentation"]) == 2
    assert anns[12]["iscrowd"] == 1 and isinstance(anns[12]["segmentation"]["counts"], list)
    img2 = _by_id(dicts)[2]
    anns2 = {a["id"]: a for a in img2["annotations"]}
    assert sorted(anns2) == [20, 22]  # 21 had only a 2-point polygon
    assert isinstance(anns2[20]["segmentation"]["counts"], str)
    assert anns2[22]["bbox"][2] == 48.0  # clipped to the 48-px-wide image
    assert img2["file_name"] == os.path.join(image_dir, "b.jpg")


def test_keeps_empty_images_when_asked(tmp_path):
    json_path, image_dir, _ = write_case(tmp_path)
    dicts, meta = load_coco_json(json_path, image_dir, filter_empty=False)
    assert sorted(_by_id(dicts)) == [1, 2, 3, 4]
    assert _by_id(dicts)[3]["annotations"] == []
    assert meta.stats["empty_images_skipped"] == 0


def test_corrupt_image_is_an_error_naming_it(tmp_path):
    json_path, image_dir, _ = write_case(tmp_path)
    path = os.path.join(image_dir, "b.jpg")
    with open(path, "rb") as f:
        head = f.read()
    with open(path, "wb") as f:
        f.write(head[: len(head) // 2])  # a truncated JPEG: the header is fine, the pixels are not
    # the header check passes (size is in the header); decoding catches it, and so does reading
    load_coco_json(json_path, image_dir, check_images="header")
    with pytest.raises(ImageFileError, match="b.jpg"):
        load_coco_json(json_path, image_dir, check_images="decode")
    with pytest.raises(ImageFileError, match="Cannot decode image .*b.jpg"):
        read_image(path)


def test_bad_images_are_skipped_and_reported_only_when_asked(tmp_path, caplog):
    json_path, image_dir, _ = write_case(tmp_path)
    path = os.path.join(image_dir, "b.jpg")
    with open(path, "rb") as f:
        head = f.read()
    with open(path, "wb") as f:
        f.write(head[: len(head) // 2])
    os.remove(os.path.join(image_dir, "empty.jpg"))
    every, _ = load_coco_json(json_path, image_dir, filter_empty=False, check_images="none",
                              skip_bad_images=True)  # only the missing file is known at this level
    with caplog.at_level(logging.WARNING, logger="resdet.data.coco"):
        kept, meta = load_coco_json(json_path, image_dir, filter_empty=False, check_images="decode",
                                    skip_bad_images=True)
    names = {os.path.basename(d["file_name"]) for d in kept}
    assert "b.jpg" not in names and "empty.jpg" not in names and len(kept) == len(every) - 1
    assert meta.stats["bad_images_skipped"] == 2
    assert "b.jpg" in caplog.text and "empty.jpg" in caplog.text and "Left out 2 unreadable images" in caplog.text
    with pytest.raises(ImageFileError):
        load_coco_json(json_path, image_dir, filter_empty=False, check_images="decode")


def test_a_training_image_that_breaks_mid_run_is_replaced_only_when_asked(tmp_path, caplog):
    import torch

    from resdet.data.loader import MappedDataset
    from resdet.data.transforms import DetectionMapper

    json_path, image_dir, _ = write_case(tmp_path)
    dicts, _ = load_coco_json(json_path, image_dir, filter_empty=True)
    mapper = DetectionMapper(True, mask_on=True, min_size_train=(64,), max_size=128)
    with open(dicts[0]["file_name"], "wb") as f:
        f.write(b"overwritten after the dataset was checked")
    strict = MappedDataset(dicts, mapper)
    with pytest.raises(ImageFileError, match=os.path.basename(dicts[0]["file_name"])):
        strict[0]
    lenient = MappedDataset(dicts, mapper, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="resdet.data.loader"):
        image, target = lenient[0]
    assert int(target["image_id"]) == dicts[1]["image_id"] and isinstance(image, torch.Tensor)
    assert os.path.basename(dicts[0]["file_name"]) in caplog.text


def test_missing_image_is_an_error_naming_it(tmp_path):
    json_path, image_dir, _ = write_case(tmp_path)
    os.remove(os.path.join(image_dir, "empty.jpg"))
    for mode in ("none", "header"):
        with pytest.raises(ImageFileError, match="not found.*empty.jpg"):
            load_coco_json(json_path, image_dir, check_images=mode)


def test_image_size_differing_from_json_is_an_error(tmp_path):
    data = coco_dict()
    data["images"][1]["width"] = 50
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]
    json_path, image_dir, _ = write_case(tmp_path, data)
    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(os.path.join(image_dir, "b.jpg"))
    with pytest.raises(ImageFileError, match=r"b.jpg' is 48x64 .* says 50x64"):
        load_coco_json(json_path, image_dir)


def test_exif_orientation_is_applied_and_checked(tmp_path):
    data = {"images": [{"id": 1, "file_name": "rot.jpg", "height": 40, "width": 30}], "annotations": [],
            "categories": [{"id": 1, "name": "x"}]}
    json_path, image_dir, _ = write_case(tmp_path, data)
    # stored pixels are 40 wide x 30 high, with the tag "rotate 90 degrees clockwise" (6)
    pixels = np.zeros((30, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(os.path.join(image_dir, "rot.jpg"), exif=exif, quality=95)
    dicts, _ = load_coco_json(json_path, image_dir, filter_empty=False, check_images="decode")
    arr = read_image(dicts[0]["file_name"], width=30, height=40)
    assert arr.shape == (40, 30, 3)
    assert arr[:15].mean() > 200 and arr[25:].mean() < 50  # the white left half is now on top
    # a JSON that states the stored (unrotated) size is an error that says why
    data["images"][0].update(height=30, width=40)
    with open(json_path, "w") as f:
        json.dump(data, f)
    with pytest.raises(ImageFileError, match="before the EXIF orientation tag is applied"):
        load_coco_json(json_path, image_dir, filter_empty=False)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["annotations"][0].update(image_id=999),
         r"annotation 10 points at image_id 999, which is not in 'images'"),
        (lambda d: d["annotations"][0].update(category_id=7), r"annotation 10 .* category_id 7"),
        (lambda d: d["annotations"][1].update(id=10), r"annotation id 10 appears more than once"),
        (lambda d: d["images"][1].update(id=1), r"image id 1 appears more than once"),
        (lambda d: d["images"][0].update(id=True), r"image entry #0 has id True of type bool"),
        (lambda d: d["annotations"][0].update(id="10"), r"annotation entry #0 has id '10' of type str"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 4]), r"annotation 10 .*non-finite"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), r"annotation 10 .*negative width"),
        (lambda d: d["annotations"][0].update(bbox=[70, 2, 40, 4]), r"annotation 10 .*outside the 80x60 image"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, 4, 5]]), r"annotation 10 .*odd number"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, "x", 5, 6]]), r"annotation 10 .*non-numeric"),
        (lambda d: d["annotations"][4].update(segmentation={"size": [10, 10], "counts": "abc"}),
         r"annotation 20 .*RLE size \[10, 10\] does not match"),
        (lambda d: d["annotations"][2]["segmentation"]["counts"].append(5),
         r"annotation 12 .*RLE runs add up to 4805 pixels"),
        (lambda d: d["annotations"][0].update(area=float("inf")), r"annotation 10 .* has area inf"),
        (lambda d: d["annotations"][0].update(iscrowd=2), r"annotation 10 .*iscrowd 2"),
        (lambda d: d["images"][0].update(height=0), r"image 1 \(a.jpg\) has height 0"),
        (lambda d: d.pop("categories"), r"missing the top-level key 'categories'"),
    ],
)
def test_validation_errors_name_the_item(mutate, message):
    data = coco_dict()
    mutate(data)
    with pytest.raises(CocoFormatError, match=message):
        validate_coco_dict(data, source="case.json")


def test_validation_lists_every_problem():
    data = coco_dict()
    data["annotations"][0]["image_id"] = 998
    data["annotations"][1]["image_id"] = 999
    with pytest.raises(CocoFormatError) as e:
        validate_coco_dict(data, source="case.json")
    assert "2 problem(s) in case.json" in str(e.value) and "998" in str(e.value) and "999" in str(e.value)


def test_dangling_annotation_error_names_the_file(tmp_path):
    data = coco_dict()
    data["annotations"][3]["image_id"] = 12345
    json_path, image_dir, _ = write_case(tmp_path, data)
    with pytest.raises(CocoFormatError, match=r"instances.json.*\n.*annotation 13 points at image_id 12345"):
        load_coco_json(json_path, image_dir)


def test_a_wrong_image_folder_names_the_config_key(tmp_path):
    """The first missing image checks the folder: missing, holding none of the JSON's files, or some."""
    from resdet.config import load_config
    from resdet.data.catalog import get_detection_dataset, register_from_config
    from resdet.data.folders import MissingDatasetError

    json_path, image_dir, _ = write_case(tmp_path)

    def dataset(folder, skip=False):
        cfg = load_config(None, ["DATASETS.CUSTOM_NAMES", "('mine_train', 'mine_val')",
                                 "DATASETS.CUSTOM_JSONS", f"('{json_path}', '{json_path}')",
                                 "DATASETS.CUSTOM_IMAGE_DIRS", f"('{image_dir}', '{folder}')"])
        register_from_config(cfg)
        return get_detection_dataset("mine_val", filter_empty=False, check_images="none", skip_bad_images=skip)

    typo = os.path.join(str(tmp_path), "imgaes")
    with pytest.raises(MissingDatasetError, match=r"DATASETS.CUSTOM_IMAGE_DIRS\[1\] of 'mine_val': image folder "
                                                  rf"'{typo}' does not exist"):
        dataset(typo)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.jpg").write_bytes(b"")
    # a folder without the JSON's files is an error even when bad images may be skipped
    with pytest.raises(MissingDatasetError, match=r"DATASETS.CUSTOM_IMAGE_DIRS\[1\] of 'mine_val': 0 of 4 files .*"
                                                  r"found in image folder .*other.*holds \['x.jpg'\]"):
        dataset(str(other), skip=True)
    os.remove(os.path.join(image_dir, "b.jpg"))
    with pytest.raises(ImageFileError, match=r"not found: .*b.jpg.*; DATASETS.CUSTOM_IMAGE_DIRS\[1\] of 'mine_val': "
                                             r"3 of 4 files .* found"):
        dataset(image_dir)
    records, _ = dataset(image_dir, skip=True)  # some missing, skipping asked for: left out with a warning
    assert [r["image_id"] for r in records] == [1, 3, 4]
