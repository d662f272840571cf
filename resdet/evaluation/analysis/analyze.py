"""One pass over a COCO results file that explains its AP: analysis.json, PNG figures and index.html.

    analyze_results("annotations.json", "coco_instances_results.json", output_dir="out/analysis",
                    image_root="images/")        # image_root: for the galleries (optional)

Per IoU type (bbox, segm: those the results carry): COCO's summary (computed by the same matching as
pycocotools, equal to its numbers), TIDE's error types (error_types.py), the analyze curves
(pr_bands.py), precision/recall/F1 against the score threshold and the best threshold per class
(thresholds.py), the one-to-one confusion matrix and each image's errors at those thresholds
(confusion.py), the worst and best images (gallery.py), and a page that shows it all (report.py).
The ground truth and the results are validated and repaired as tools/eval.py does
(resdet/evaluation/coco.py), so the numbers are those of the evaluation they explain.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .confusion import deploy_matching
from .error_types import DESCRIPTIONS, ERROR_TYPES, SPECIAL_TYPES, error_types
from .inputs import AREA_RANGES, build_match_inputs
from .matching import COCO_IOU_THRESHOLDS, RECALL_THRESHOLDS, coco_matching, standard_precision, summary_from_precision
from .pr_bands import BANDS, pr_bands
from .thresholds import CONFIG_KEY, deploy_line, score_thresholds

__all__ = ["analyze_results", "ANALYSIS_FILE"]

logger = logging.getLogger(__name__)

ANALYSIS_FILE = "analysis.json"


def _r(v, digits: int = 4):
    """Rounded for the JSON (NaN -> None)."""
    if v is None:
        return None
    if isinstance(v, (np.ndarray, list, tuple)):
        return [_r(x, digits) for x in v]
    v = float(v)
    return None if np.isnan(v) else round(v, digits)


def _read_results(results, source: str) -> List[dict]:
    from resdet.data.coco_validation import CocoFormatError

    if isinstance(results, str):
        if not os.path.isfile(results):
            raise FileNotFoundError(f"Results file not found: '{results}'")
        with open(results, "r", encoding="utf-8") as f:
            try:
                results = json.load(f)
            except json.JSONDecodeError as e:
                raise CocoFormatError(f"Results file {source} is not valid JSON: {e}") from e
    if not isinstance(results, list):
        raise CocoFormatError(f"{source}: a results file must be a JSON list, got {type(results).__name__}")
    return results


def _iou_types(results: List[dict], asked: Optional[Sequence[str]], source: str) -> List[str]:
    """The types the results carry (asked ones must be there), as tools/eval.py chooses them."""
    from resdet.data.coco_validation import CocoFormatError

    types = list(asked) if asked else ["bbox", "segm"]
    for t in types:
        if t not in ("bbox", "segm"):
            raise ValueError(f"iou_types may hold 'bbox' and 'segm', got {t!r}")
    if not results:
        return types
    for t, key in (("bbox", "bbox"), ("segm", "segmentation")):
        if t in types and not any(isinstance(r, dict) and key in r for r in results):
            if asked:
                raise CocoFormatError(f"{source}: {t} analysis was asked for, but none of its {len(results)} "
                                      f"results has a '{key}'")
            types.remove(t)
    if not types:
        raise CocoFormatError(f"{source}: no result has a 'bbox' or a 'segmentation': nothing to analyse")
    return types


def _per_category(names, ids, values: Dict[str, np.ndarray]) -> List[dict]:
    return [{"category": n, "id": int(i), **{k: _r(v[k_]) for k, v in values.items()}}
            for k_, (n, i) in enumerate(zip(names, ids))]


def analyze_iou_type(inp, iou: float = 0.5, background_iou: float = 0.1, score_threshold: Optional[float] = None,
                     timings: Optional[Dict[str, float]] = None):
    """Every analysis of one IoU type's MatchInputs; returns (numbers for the JSON, the objects the
    figures and galleries are drawn from)."""
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    thresholds = tuple(COCO_IOU_THRESHOLDS) + (0.1,)  # COCOeval's own values (its 0.9 is 0.8999999999999999)
    if not any(abs(t - iou) < 1e-9 for t in thresholds):
        thresholds += (iou,)
    matching = coco_matching(inp, thresholds)
    precision = standard_precision(inp, matching)
    summary = summary_from_precision(precision, matching)
    timings["matching"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    det_gt, det_ign = matching.row("all", iou)
    errors = error_types(inp, det_gt, det_ign, fg=iou, bg=background_iou)
    timings["error_types"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bands = pr_bands(inp, matching, precision)
    timings["pr_bands"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    thr = score_thresholds(inp, det_gt, det_ign)
    used = thr.deploy if score_threshold is None else np.full(inp.num_categories, float(score_threshold))
    deploy = deploy_matching(inp, det_gt, det_ign, used, iou)
    timings["thresholds_confusion"] = time.perf_counter() - t0

    K, names, ids = inp.num_categories, inp.cat_names, inp.cat_ids
    overall = errors.overall()
    num_objects = int((~inp.gt_crowd).sum())
    ap_pct = errors.ap * 100
    a_names = list(bands.areas)
    matrix = deploy.matrix
    off = [(int(matrix[i, j]), i, j) for i in range(K) for j in range(K) if i != j and matrix[i, j]]
    off.sort(key=lambda x: (-x[0], x[1], x[2]))
    score_note = ("scores >= each class's best-F1 threshold" if score_threshold is None
                  else f"scores >= {score_threshold:g}")
    numbers = {
        "summary": {**{k: _r(v, 3) for k, v in summary.items()}, "images": len(inp.image_ids),
                    "objects": num_objects, "crowd_regions": int(inp.gt_crowd.sum()),
                    "detections": int(len(inp.det_score)), "detections_beyond_max_dets": int(inp.truncated)},
        "error_types": {
            "iou": iou, "background_iou": background_iou,
            "definitions": {t: DESCRIPTIONS[t].format(fg=iou, bg=background_iou) for t in ERROR_TYPES + SPECIAL_TYPES},
            "overall": {"AP": _r(overall["AP"], 3), "dAP": {t: _r(overall[t], 3) for t in ERROR_TYPES + SPECIAL_TYPES}},
            "counts": {t: int(errors.counts[t].sum()) for t in ERROR_TYPES},
            "per_category": [{"category": names[k], "id": int(ids[k]), "AP": _r(ap_pct[k], 3),
                              "dAP": {t: _r(errors.dap[t][k] * 100, 3) for t in ERROR_TYPES + SPECIAL_TYPES},
                              "counts": {t: int(errors.counts[t][k]) for t in ERROR_TYPES}} for k in range(K)],
        },
        "pr_bands": {
            "bands": list(BANDS), "areas": {a: list(AREA_RANGES[a]) for a in a_names},
            "sim_computed": bands.precision["Sim"] is not None,
            "overall": {a: {b: _r(bands.ap(b, ai) / 100) for b in BANDS} for ai, a in enumerate(a_names)},
            "per_category": [{"category": names[k], "id": int(ids[k]),
                              **{a: {b: _r(bands.ap(b, ai, k) / 100) for b in BANDS} for ai, a in enumerate(a_names)}}
                             for k in range(K)],
            "recall": _r(RECALL_THRESHOLDS, 2),
            "curves": {a: {b: _r(bands.mean_curve(b, ai)) for b in BANDS} for ai, a in enumerate(a_names)},
            "per_category_curves": {a: {b: (None if bands.precision[b] is None else
                                            [_r(bands.mean_curve(b, ai, k)) for k in range(K)])
                                        for b in BANDS} for ai, a in enumerate(a_names)},
        },
        "thresholds": {
            "iou": iou,
            "per_category": [{"category": names[k], "id": int(ids[k]), "threshold": _r(thr.best[k], 6),
                              "precision": _r(thr.precision[k]), "recall": _r(thr.recall[k]), "f1": _r(thr.f1[k]),
                              "objects": int(np.sum((inp.gt_cat == k) & ~inp.gt_crowd))} for k in range(K)],
            "overall": {"threshold": _r(thr.overall_best, 6), "precision": _r(thr.overall_precision),
                        "recall": _r(thr.overall_recall), "f1": _r(thr.overall_f1)},
            "deploy": _r(thr.deploy, 6),
            "deploy_line": deploy_line(thr.deploy),
            "config_key": CONFIG_KEY,
            "grid": _r(thr.grid),
            "curves": {name: [_r(thr.curves[k, row]) for k in range(K + 1)]
                       for row, name in enumerate(("precision", "recall", "f1"))},
            "curves_rows": list(names) + ["(all classes)"],
        },
        "confusion": {
            "iou": iou, "score_thresholds": _r(deploy.score_thresholds, 6), "score_note": score_note,
            "labels": list(names) + ["background"], "matrix": deploy.matrix.tolist(),
            "ignored_on_crowd": deploy.ignored_on_crowd,
            "top_confusions": [{"object": names[i], "detected_as": names[j], "count": c} for c, i, j in off[:15]],
        },
    }
    return numbers, {"matching": matching, "errors": errors, "bands": bands, "thresholds": thr, "deploy": deploy,
                     "overall": overall, "score_note": score_note}


def analyze_results(gt, results: Union[str, List[dict]], iou_types: Optional[Sequence[str]] = None,
                    output_dir: Optional[str] = None, image_root: Optional[str] = None,
                    score_threshold: Optional[float] = None, iou: float = 0.5, gallery_size: int = 8,
                    instances_without_mask: str = "error", figures: bool = True,
                    per_category_figures: bool = True, jobs: int = 1) -> Dict:
    """Analyse a results file (path or list) against its ground truth (path, dict or EvalGroundTruth);
    writes analysis.json, figures/ and index.html into `output_dir` when given. Returns the numbers.
    `score_threshold`: one threshold for the confusion matrix and the galleries (default: each class's
    best-F1 threshold). `image_root`: the images' folder, for the galleries (without it there are none).
    `jobs` 2: bbox and segm in two processes (forked, so the results are not copied; see the README for
    when that pays)."""
    from resdet.evaluation.coco import load_eval_ground_truth

    from .report import write_report

    if not 0.1 <= iou <= 0.95:
        raise ValueError(f"iou must be in [0.1, 0.95] (the matching's thresholds), got {iou}")
    if gallery_size < 0 or jobs < 1:
        raise ValueError(f"gallery_size must be >= 0 and jobs >= 1, got {gallery_size} and {jobs}")
    start = time.perf_counter()
    timings: Dict[str, float] = {}
    source = f"'{results}'" if isinstance(results, str) else "<results>"
    t0 = time.perf_counter()
    results = _read_results(results, source)
    types = _iou_types(results, iou_types, source)
    eval_gt = load_eval_ground_truth(gt, types, instances_without_mask)
    timings["read"] = time.perf_counter() - t0
    out: Dict = {"ground_truth": os.path.abspath(gt) if isinstance(gt, str) else "<dict>",
                 "results": os.path.abspath(source.strip("'")) if source != "<results>" else source, "iou_types": types,
                 "settings": {"iou": iou, "background_iou": 0.1, "max_dets": 100,
                              "score_threshold": score_threshold, "area_ranges": AREA_RANGES, "jobs": jobs},
                 "timings": timings}
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
    job = dict(eval_gt=eval_gt, results=results, source=source, output_dir=output_dir, image_root=image_root,
               score_threshold=score_threshold, iou=iou, gallery_size=gallery_size, figures=figures,
               per_category_figures=per_category_figures)
    if jobs > 1 and len(types) > 1:
        done = _in_processes(types, job, jobs)
    else:
        done = [_one_type(t, job) for t in types]
    for t, (numbers, sub) in zip(types, done):
        out[t] = numbers
        timings.update({f"{t}/{k}": v for k, v in sub.items()})
    if output_dir:
        t0 = time.perf_counter()
        timings["total"] = time.perf_counter() - start
        with open(os.path.join(output_dir, ANALYSIS_FILE), "w", encoding="utf-8") as f:
            json.dump(out, f, allow_nan=False)
        write_report(out, output_dir)
        timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    return out


# the job of forked workers (set before the fork, so the results list is shared, never pickled)
_JOB: Dict = {}


def _in_processes(types: Sequence[str], job: Dict, jobs: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _JOB.clear()
    _JOB.update(job)
    try:
        with ProcessPoolExecutor(min(jobs, len(types)), mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_one_type_forked, types))
    finally:
        _JOB.clear()


def _one_type_forked(t: str):
    return _one_type(t, _JOB)


def _one_type(t: str, job: Dict):
    """Everything of one IoU type: (its numbers, its timings)."""
    from resdet.data.coco_validation import validate_coco_results

    from . import gallery as gal

    timings: Dict[str, float] = {}
    output_dir, image_root, gallery_size = job["output_dir"], job["image_root"], job["gallery_size"]
    t0 = time.perf_counter()
    coco_gt = job["eval_gt"][t]
    validate_coco_results(job["results"], coco_gt.dataset, t, source=job["source"])
    timings["validate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    inp = build_match_inputs(coco_gt, job["results"], t, keep_masks=bool(image_root and gallery_size and output_dir))
    timings["overlaps"] = time.perf_counter() - t0
    numbers, objs = analyze_iou_type(inp, job["iou"], 0.1, job["score_threshold"], timings)
    worst, best = gal.rank_images(inp, objs["deploy"], gallery_size)
    dep = objs["deploy"]
    numbers["images"] = {
        "ranking": "errors at the deploy thresholds: false positives + missed objects",
        "worst": [vars(e) for e in worst], "best": [vars(e) for e in best],
        "per_image": [{"image_id": int(inp.image_ids[i]), "file_name": inp.file_names[i], "tp": int(dep.image_tp[i]),
                       "fp": int(dep.image_fp[i]), "fn": int(dep.image_fn[i])} for i in range(len(inp.image_ids))],
        "image_root": image_root, "unreadable": {},
    }
    if not output_dir:
        return numbers, timings
    t0 = time.perf_counter()
    paths = _figures(t, inp, objs, os.path.join(output_dir, "figures"), job["per_category_figures"]) \
        if job["figures"] else {}
    numbers["figures"] = {k: os.path.relpath(v, output_dir) for k, v in paths.items()}
    timings["figures"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if image_root and gallery_size:
        problems: Dict[str, str] = {}
        for name, entries in (("worst", worst), ("best", best)):
            problems.update(gal.draw_gallery(inp, objs["errors"], objs["deploy"], entries, image_root,
                                             os.path.join(output_dir, "gallery"), f"{t}_{name}", inp.cat_names))
        numbers["images"].update(worst=[vars(e) for e in worst], best=[vars(e) for e in best], unreadable=problems)
        if problems:
            logger.warning("%d gallery images could not be read (left out), e.g. %s", len(problems),
                           next(iter(problems.items())))
    timings["gallery"] = time.perf_counter() - t0
    return numbers, timings


def _figures(t: str, inp, objs, fig_dir: str, per_category: bool) -> Dict[str, str]:
    from . import figures as F

    paths = {}
    errors, bands, thr, deploy = objs["errors"], objs["bands"], objs["thresholds"], objs["deploy"]
    paths["error_types"] = F.save_error_types(objs["overall"], t, errors.fg,
                                              os.path.join(fig_dir, f"{t}_error_types.png"))
    note = None if bands.precision["Sim"] is not None else \
        "Sim is not drawn: the ground truth's categories have no supercategories"
    paths["pr_bands"] = F.save_pr_bands(bands, t, os.path.join(fig_dir, f"{t}_pr_bands.png"), note)
    if per_category:
        for area in bands.areas:  # "pr_bands_per_category" (all sizes), then "..._small" etc.
            key = "pr_bands_per_category" + ("" if area == "all" else f"_{area}")
            paths[key] = F.save_pr_bands_per_category(bands, inp.cat_names, t, os.path.join(fig_dir, f"{t}_{key}.png"),
                                                      area=area)
    paths["confusion"] = F.save_confusion(deploy.matrix, inp.cat_names, t, deploy.iou, objs["score_note"],
                                          os.path.join(fig_dir, f"{t}_confusion.png"))
    paths["thresholds"] = F.save_thresholds(thr.grid, thr.curves, thr.best, thr.f1, inp.cat_names,
                                            (thr.overall_best, thr.overall_precision, thr.overall_recall,
                                             thr.overall_f1), t, os.path.join(fig_dir, f"{t}_thresholds.png"))
    return paths
