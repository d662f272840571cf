"""tools/benchmark.py --analysis: the COCO-val-like data it generates, and one timed round on a few images."""
import json

import numpy as np
import pytest

from resdet.benchmarks.analysis import time_analysis, write_coco_val_sized

# one intra-op thread (tests/conftest.py): two spin-waiting threads on two shared cores cost CPU for nothing
pytestmark = pytest.mark.usefixtures("one_thread")


def test_generated_data_and_a_timed_round(tmp_path):
    paths = write_coco_val_sized(str(tmp_path / "data"), num_images=6, seed=1)
    gt = json.load(open(paths["gt"]))
    results = json.load(open(paths["results"]))
    assert len(gt["images"]) == 6 and len(gt["categories"]) == 80
    assert len({c["supercategory"] for c in gt["categories"]}) == 12
    assert len(results) == 6 * 100 and all("segmentation" in r and "bbox" in r for r in results)
    # boxes are their polygons' boxes, as COCO's are (the ground-truth checks would say otherwise)
    for a in gt["annotations"][:20]:
        xs, ys = a["segmentation"][0][0::2], a["segmentation"][0][1::2]
        assert np.allclose(a["bbox"], [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], atol=0.02)
    assert write_coco_val_sized(str(tmp_path / "data"), num_images=6, seed=1) == paths  # cached: not rewritten
    lines = []
    rows = time_analysis(paths, rounds=1, jobs=[1], progress=lines.append)
    r = rows[0]
    assert r["pycocotools_s"] > 0 and r["analysis_s"] > 0 and r["ratio"] == r["analysis_s"] / r["pycocotools_s"]
    assert r["analysis_peak_mib"] > 0 and "segm/overlaps" in r["analysis_timings"]
    assert len(lines) == 2 and "pycocotools bbox + segm" in lines[0]
