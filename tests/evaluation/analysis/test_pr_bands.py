"""The COCO analyze curves (C75 ... FN) against COCOeval run as cocodataset.org defines them."""
import contextlib
import copy
import io

import numpy as np
import pytest

from resdet.evaluation.analysis.inputs import build_match_inputs
from resdet.evaluation.analysis.matching import coco_matching, standard_precision
from resdet.evaluation.analysis.pr_bands import pr_bands
from resdet.evaluation.coco import load_eval_ground_truth

from .conftest import make_ground_truth, noisy_results


def _reference(gt, results, k, relabel):
    """Category k's precision [R, A] at IoU 0.1 with the objects of the categories in `relabel` given
    category k and the ignore flag (pycocotools' _prepare overwrites that flag with iscrowd; this
    COCOeval keeps it, as the MATLAB analyze() it was written for does)."""
    from pycocotools.cocoeval import COCOeval

    from resdet.evaluation.coco import load_eval_ground_truth as load

    cat_ids = sorted(c["id"] for c in gt["categories"])
    cat = cat_ids[k]
    data = copy.deepcopy(gt)
    for a in data["annotations"]:
        if a["category_id"] in relabel and a["category_id"] != cat:
            a["category_id"], a["_hoiem_ignore"] = cat, 1
    coco_gt = load(data, ("bbox",))["bbox"]

    class KeepIgnore(COCOeval):
        def _prepare(self):
            super()._prepare()
            for gts in self._gts.values():
                for g in gts:
                    g["ignore"] = int(bool(g.get("iscrowd")) or bool(g.get("_hoiem_ignore")))

    dets = [copy.deepcopy(r) for r in results if r["category_id"] == cat]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = KeepIgnore(coco_gt, coco_gt.loadRes(dets), "bbox")
        ev.params.iouThrs = np.array([0.1])
        ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][0, :, k, :, -1]


def test_bands_match_cocodataset_definitions():
    gt = make_ground_truth(num_images=20, crowd_every=9, seed=7, size=(480, 640), max_box=155)
    results = noisy_results(gt, seed=8, wrong_class=0.5, with_masks=False)
    coco_gt = load_eval_ground_truth(gt, ("bbox",))["bbox"]
    inp = build_match_inputs(coco_gt, results, "bbox")
    matching = coco_matching(inp)
    bands = pr_bands(inp, matching, standard_precision(inp, matching))
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    for k, c in enumerate(cats):
        same_super = {d["id"] for d in cats if d["supercategory"] == c["supercategory"]}
        sim = _reference(gt, results, k, same_super)
        oth = _reference(gt, results, k, {d["id"] for d in cats})
        np.testing.assert_array_equal(bands.precision["Sim"][:, :, k].T, sim)
        np.testing.assert_array_equal(bands.precision["Oth"][:, :, k].T, oth)
        np.testing.assert_array_equal(bands.precision["BG"][:, :, k].T, np.where(oth > -1, oth > 0, -1))
    # each band removes errors: AP can only grow from C75 to FN, and class confusions moved it here
    a = list(matching.areas).index("all")
    aps = [bands.ap(b, a) for b in ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")]
    assert all(x <= y + 1e-9 for x, y in zip(aps, aps[1:])), aps
    assert aps[-1] == pytest.approx(100.0) and aps[4] > aps[2]


def test_without_supercategories_sim_is_not_computed():
    gt = make_ground_truth(num_images=4, seed=1, supercategories=False)
    coco_gt = load_eval_ground_truth(gt, ("bbox",))["bbox"]
    inp = build_match_inputs(coco_gt, noisy_results(gt, seed=1, with_masks=False), "bbox")
    assert inp.supercategories is None
    matching = coco_matching(inp)
    bands = pr_bands(inp, matching, standard_precision(inp, matching))
    assert bands.precision["Sim"] is None and np.isnan(bands.ap("Sim", 0))
    assert bands.precision["Oth"] is not None
