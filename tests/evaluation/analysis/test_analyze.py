"""The whole analysis: analysis.json, figures, pictures and index.html from a ground truth and results."""
import html
import json
import re

import numpy as np
import pytest
from PIL import Image

from resdet.evaluation.analysis.analyze import analyze_results
from resdet.evaluation.coco import evaluate_coco_results

from .conftest import make_ground_truth, noisy_results


def test_numbers_are_those_of_the_evaluation(report_case):
    root, gt, res, out, numbers = report_case
    saved = json.load(open(out / "analysis.json"))
    assert saved["iou_types"] == ["bbox", "segm"]
    ref = evaluate_coco_results(gt, res, ("bbox", "segm"))
    for t in ("bbox", "segm"):
        for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            if np.isnan(ref[t][k]):  # no objects of that size: undefined, saved as null
                assert saved[t]["summary"][k] is None, (t, k)
            else:
                assert saved[t]["summary"][k] == pytest.approx(ref[t][k], abs=1e-3), (t, k)
        e = saved[t]["error_types"]
        assert e["overall"]["AP"] == pytest.approx(ref[t]["AP50"], abs=1e-3)  # the AP being explained
        per = [p["dAP"]["Loc"] for p in e["per_category"] if p["AP"] is not None]
        assert e["overall"]["dAP"]["Loc"] == pytest.approx(np.mean(per), abs=2e-3)  # the mean of the categories'
        b = saved[t]["pr_bands"]["overall"]["all"]
        assert b["C75"] == pytest.approx(ref[t]["AP75"] / 100, abs=1e-4)
        assert b["C50"] == pytest.approx(ref[t]["AP50"] / 100, abs=1e-4)
        assert b["FN"] == 1.0 and b["C50"] <= b["Loc"] <= b["Sim"] <= b["Oth"] <= b["BG"]
        c = saved[t]["confusion"]
        K = len(gt["categories"])
        objects = np.bincount([sorted(x["id"] for x in gt["categories"]).index(a["category_id"])
                               for a in gt["annotations"] if not a["iscrowd"]], minlength=K)
        assert np.sum(c["matrix"], axis=1)[:K].tolist() == objects.tolist()
        assert saved[t]["thresholds"]["deploy_line"].startswith('TEST.SCORE_THRESH_PER_CLASS "[')
        per_image = saved[t]["images"]["per_image"]
        assert len(per_image) == len(gt["images"])
        worst = saved[t]["images"]["worst"]
        errs = [w["fp"] + w["fn"] for w in worst]
        assert errs == sorted(errs, reverse=True) and errs[0] == max(p["fp"] + p["fn"] for p in per_image)


def test_files_of_the_report(report_case):
    root, gt, res, out, numbers = report_case
    for t in ("bbox", "segm"):
        figs = json.load(open(out / "analysis.json"))[t]["figures"]
        assert set(figs) == {"error_types", "pr_bands", "pr_bands_per_category", "pr_bands_per_category_small",
                             "pr_bands_per_category_medium", "pr_bands_per_category_large", "confusion", "thresholds"}
        for rel in figs.values():
            with Image.open(out / rel) as im:
                assert im.format == "PNG" and min(im.size) > 300
    page = (out / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    files = [r for r in refs if not r.startswith("#")]
    assert len([r for r in files if r.startswith("gallery/")]) == 12  # 3 worst + 3 best, bbox and segm
    for r in files:  # relative, inside the folder, there
        assert "://" not in r and not r.startswith("/") and ".." not in r, r
        assert (out / r).is_file(), r
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert 'TEST.SCORE_THRESH_PER_CLASS "[' in html.unescape(page)


def test_without_supercategories_images_or_detections(tmp_path):
    gt = make_ground_truth(num_images=5, seed=3, supercategories=False)
    res = noisy_results(gt, seed=4)
    out = tmp_path / "r"
    numbers = analyze_results(gt, res, ["segm"], output_dir=str(out), image_root=str(tmp_path / "missing"),
                              figures=False)
    assert not numbers["segm"]["pr_bands"]["sim_computed"]
    page = (out / "index.html").read_text()
    assert "no supercategories: Sim is not computed" in page
    assert "could not be read" in page and numbers["segm"]["images"]["unreadable"]
    # no detections at all: AP 0, every object missed, and a page all the same
    empty = analyze_results(gt, [], ["bbox"], output_dir=str(tmp_path / "e"), figures=False)
    s = empty["bbox"]
    assert s["summary"]["AP"] == 0.0 and s["error_types"]["overall"]["dAP"]["Miss"] == pytest.approx(100.0)
    assert s["confusion"]["matrix"][-1] == [0] * (len(gt["categories"]) + 1)
    assert "No image folder was given" in (tmp_path / "e" / "index.html").read_text()


def test_bad_input_is_named(tmp_path):
    from resdet.data.coco_validation import CocoFormatError

    gt = make_ground_truth(num_images=2, seed=1)
    with pytest.raises(CocoFormatError, match="result #0 has image_id 999"):
        analyze_results(gt, [{"image_id": 999, "category_id": 10, "bbox": [1, 1, 5, 5], "score": 0.5}], ["bbox"])
    with pytest.raises(CocoFormatError, match="segm analysis was asked for, but none of its 1 results"):
        analyze_results(gt, [{"image_id": 100, "category_id": 10, "bbox": [1, 1, 5, 5], "score": 0.5}], ["segm"])
    with pytest.raises(FileNotFoundError, match="nope.json"):
        analyze_results(gt, str(tmp_path / "nope.json"))


def test_two_processes_give_the_same_numbers(report_case):
    root, gt, res, out, numbers = report_case
    one = analyze_results(gt, res, figures=False)
    two = analyze_results(gt, res, figures=False, jobs=2)
    for t in ("bbox", "segm"):
        assert json.dumps(one[t], sort_keys=True) == json.dumps(two[t], sort_keys=True)
