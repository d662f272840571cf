"""Inputs that crash or exhaust memory in pycocotools' C code when they reach it unchecked, run through
resdet's loaders in a child process (tests/data/test_c_library_inputs.py), so that a crash fails a test
instead of killing pytest. Each case prints one JSON line: its name and the error resdet raised.

    python -m tests.data.c_library_cases train|eval WORK_DIR
"""
import contextlib
import json
import os
import resource
import sys
import traceback

from tests.data.coco_fixtures import coco_dict, write_case

HUGE = 4294967295.0  # 2**32 - 1: pycocotools' rasteriser allocates without bound (or segfaults) on it


def _ann(data, ann_id):
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def _counts_of_a_larger_mask(h=200, w=200):
    """A valid compressed RLE string of an h x w mask: too many pixels for the images here."""
    import numpy as np
    from pycocotools import mask as mask_util

    m = np.zeros((h, w), np.uint8)
    m[5:50, 5:50] = 1
    return mask_util.encode(np.asfortranarray(m))["counts"].decode("ascii")


# name -> (mutation of the ground truth, a piece of the expected message)
GT_CASES = {
    "polygon_huge_coordinate": (lambda d: _ann(d, 10).update(segmentation=[[10, 10, HUGE, 10, 30, 30]]),
                                "annotation 10 (image 1, a.jpg): polygon point (4.29497e+09, 10) lies far outside the 80x60 image"),
    "polygon_huge_negative": (lambda d: _ann(d, 11)["segmentation"].append([-1e7, 5, 50, 5, 50, 20]),
                              "annotation 11 (image 1, a.jpg): polygon point (-1e+07, 5) lies far outside"),
    "crowd_polygon_huge": (lambda d: _ann(d, 12).update(segmentation=[[0, 40, 30, 40, 30, HUGE]]),
                           "annotation 12 (image 1, a.jpg): polygon point (30, 4.29497e+09) lies far outside"),
    "rle_runs_overflow": (lambda d: _ann(d, 12).update(segmentation={"size": [60, 80], "counts": [0, 10 ** 10]}),
                          "annotation 12 (image 1, a.jpg): RLE runs add up to 10000000000 pixels"),
    "rle_negative_run": (lambda d: _ann(d, 12).update(segmentation={"size": [60, 80], "counts": [4900, -100]}),
                         "annotation 12 (image 1, a.jpg): uncompressed RLE 'counts' must be non-negative"),
    "rle_string_garbage": (lambda d: _ann(d, 20)["segmentation"].update(counts="\x7f\x01~~~~~~"),
                           "annotation 20 (image 2, b.jpg): RLE 'counts' string is not a valid compressed RLE"),
    "rle_string_overrun": (lambda d: _ann(d, 20)["segmentation"].update(counts=_counts_of_a_larger_mask()),
                           "annotation 20 (image 2, b.jpg): RLE runs add up to 40000 pixels, the image has "
                           "64x48 = 3072"),
    "rle_negative_size": (lambda d: _ann(d, 20)["segmentation"].update(size=[-64, 48]),
                          "annotation 20 (image 2, b.jpg): RLE size [-64, 48] does not match"),
    "image_huge_size": (lambda d: d["images"][0].update(width=10 ** 6, height=10 ** 6),
                        "image 1 (a.jpg) is 1000000x1000000 (width x height) = 1000000000000 pixels by its JSON "
                        "entry, more than PIL opens"),
    "image_negative_size": (lambda d: d["images"][0].update(width=-80),
                            "image 1 (a.jpg) has width -80; expected a positive integer"),
}

# results-file cases (evaluation only): name -> (mutation of a valid results list, expected message)
RESULT_CASES = {
    "result_rle_overrun": (lambda r: r[0]["segmentation"].update(counts=_counts_of_a_larger_mask()),
                           "result #0 (image 1): RLE runs add up to 40000 pixels"),
    "result_rle_garbage": (lambda r: r[0]["segmentation"].update(counts="\x7f\x01~~"),
                           "result #0 (image 1): RLE 'counts' string is not a valid compressed RLE"),
    "result_rle_size": (lambda r: r[0]["segmentation"].update(size=[2 ** 20, 2 ** 20]),
                        "result #0 (image 1): RLE size [1048576, 1048576] does not match"),
    "result_box_huge": (lambda r: r[0].update(bbox=[0, 0, 1e30, 1e30]), "result #0 (image 1): bbox"),
}


def _valid_results(data):
    from pycocotools import mask as mask_util
    import numpy as np

    m = np.zeros((60, 80), np.uint8)
    m[10:30, 10:30] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    return [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9, "segmentation": rle}]


def _load_and_rasterise(json_path, image_dir):
    """What training does with the data: load it, then rasterise each image's masks (the mapper's call)."""
    from resdet.data.coco import load_coco_json
    from resdet.data.transforms import annotations_to_masks

    dicts, _ = load_coco_json(json_path, image_dir, check_images="none")
    for r in dicts:
        annotations_to_masks([a for a in r["annotations"] if not a["iscrowd"]], r["height"], r["width"])


def _report(name, fn):
    print(f"running {name}", file=sys.stderr, flush=True)  # the last one named is the one that crashed
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON lines
            fn()
        out = {"case": name, "error": None, "message": ""}
    except Exception as e:  # noqa: BLE001 - the type is part of what the test checks
        out = {"case": name, "error": type(e).__name__, "message": str(e),
               "traceback": traceback.format_exc()[-1500:]}
    print(json.dumps(out), flush=True)


def main(path: str, work: str) -> None:
    # a regression that lets such input through must fail fast, not swap the machine
    limit = 6 * 2 ** 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    json_path, image_dir, _ = write_case(os.path.join(work, "images_once"))
    if path == "eval":
        from resdet.evaluation.coco import evaluate_results_file
    for name, (mutate, _) in GT_CASES.items():
        data = coco_dict()
        mutate(data)
        case_json = os.path.join(work, f"{name}.json")
        with open(case_json, "w") as f:
            json.dump(data, f)
        if path == "train":
            _report(name, lambda: _load_and_rasterise(case_json, image_dir))
        else:
            results = os.path.join(work, "results.json")
            with open(results, "w") as f:
                json.dump(_valid_results(data), f)
            _report(name, lambda: evaluate_results_file(case_json, results, ["bbox", "segm"]))
    if path == "eval":
        for name, (mutate, _) in RESULT_CASES.items():
            results = _valid_results(coco_dict())
            mutate(results)
            case_results = os.path.join(work, f"{name}.json")
            with open(case_results, "w") as f:
                json.dump(results, f)
            _report(name, lambda: evaluate_results_file(json_path, case_results, ["bbox", "segm"]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
