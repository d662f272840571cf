"""COCO evaluation with pycocotools: model outputs -> results JSON -> COCOeval (bbox, segm).

    evaluator = COCOEvaluator("annotations.json", iou_types=("bbox", "segm"),
                              contiguous_to_dataset_id=meta.contiguous_to_dataset_id, output_dir="out")
    for images, targets in loader:
        evaluator.process(targets, model(images))
    metrics = evaluator.evaluate()     # {"bbox": {"AP": ..., ..., "per_category": {...}}, "segm": ...}

or, for a results file written earlier (no model): `evaluate_results_file(gt_json, results_json)`.

Ground truth and results are validated (resdet/data/coco_validation.py) before pycocotools sees them,
and the ground truth is repaired as training repairs it (resdet/data/coco_eval_gt.py), per IoU type.
What pycocotools would do without a word is said: no detections at all (every AP 0, scored, not an
error), no ground truth (AP undefined: -1 printed, null saved), more detections per image than maxDets
(the lowest-scoring ones are not counted).
Outputs: `coco_instances_results.json` (the results, in the dataset's own category ids) and
`coco_eval.json` (the 12-number summary and the per-category AP table per IoU type).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: scoring a results file never needs its 600 MB
    import torch

from resdet.data.coco_eval_gt import LEFT_OUT_KEY, scorable_ground_truth
from resdet.data.coco_validation import CocoFormatError, validate_coco_results

__all__ = [
    "SUMMARY_NAMES",
    "COCOEvaluator",
    "EvalGroundTruth",
    "instances_to_coco_results",
    "load_coco_gt",
    "load_eval_ground_truth",
    "evaluate_coco_results",
    "evaluate_results_file",
    "format_per_category_table",
]

logger = logging.getLogger(__name__)

# The order of COCOeval.stats for bbox/segm.
SUMMARY_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _read_gt(gt: Union[str, dict]) -> Tuple[dict, str]:
    if isinstance(gt, str):
        if not os.path.isfile(gt):
            raise FileNotFoundError(f"Ground-truth annotation file not found: '{gt}'")
        with open(gt, "r", encoding="utf-8") as f:
            try:
                return json.load(f), f"'{gt}'"
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # not UTF-8, nested too deep
                raise CocoFormatError(f"Ground-truth file '{gt}' is not valid JSON: {e}") from e
    return gt, "<ground-truth dict>"


def _coco_from_dict(data: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # "creating index..." chatter
        coco.createIndex()
    return coco


class EvalGroundTruth:
    """The ground truth as pycocotools COCO objects, one per IoU type (they differ only where segm
    needs ignore regions for instances without a mask); `dataset`, `cats`, `imgs` as pycocotools has them."""

    def __init__(self, per_type: Dict[str, "COCO"]):  # noqa: F821
        if not per_type:
            raise ValueError("EvalGroundTruth needs at least one IoU type")
        self.per_type = dict(per_type)
        first = next(iter(self.per_type.values()))
        self.dataset, self.cats, self.imgs = first.dataset, first.cats, first.imgs

    def __getitem__(self, iou_type: str):
        if iou_type not in self.per_type:
            raise KeyError(f"the ground truth was prepared for {sorted(self.per_type)}, not {iou_type!r}")
        return self.per_type[iou_type]


def load_eval_ground_truth(gt: Union[str, dict, "COCO", EvalGroundTruth],  # noqa: F821
                           iou_types: Sequence[str] = ("bbox", "segm"),
                           instances_without_mask: str = "error") -> EvalGroundTruth:
    """The ground truth of a JSON path or dict, validated and repaired per IoU type
    (resdet/data/coco_eval_gt.py); a pycocotools COCO object is trusted as it is."""
    from pycocotools.coco import COCO

    if isinstance(gt, EvalGroundTruth):
        return gt
    if isinstance(gt, COCO):
        return EvalGroundTruth({t: gt for t in iou_types})
    data, source = _read_gt(gt)
    per_type = scorable_ground_truth(data, iou_types, instances_without_mask, source=source,
                                     copy_input=not isinstance(gt, str))  # a file just read is ours to repair
    cocos: Dict[int, object] = {}  # the same dict for several types -> one COCO object
    for d in per_type.values():
        if id(d) not in cocos:
            cocos[id(d)] = _coco_from_dict(d)
    return EvalGroundTruth({t: cocos[id(d)] for t, d in per_type.items()})


def load_coco_gt(gt: Union[str, dict, "COCO"]):  # noqa: F821
    """A pycocotools COCO object (the bbox ground truth) from a JSON path or dict, validated and
    repaired first (a COCO object is trusted)."""
    return load_eval_ground_truth(gt, ("bbox",))["bbox"]


def instances_to_coco_results(
    output: Dict[str, torch.Tensor],
    image_id: int,
    contiguous_to_dataset_id: Optional[Dict[int, int]] = None,
    mask_threshold: float = 0.5,
) -> List[dict]:
    """One image's model output (boxes xyxy, scores, labels 1..K, optional masks [N,1,H,W]
    probabilities in original image coordinates) -> COCO result dicts (xywh, dataset category ids,
    compressed RLE). All masks of the image are thresholded and encoded in one pycocotools call."""
    import torch
    from pycocotools import mask as mask_util

    boxes = output["boxes"].detach().float().cpu()
    n = boxes.shape[0]
    if n == 0:
        return []
    xywh = boxes.clone()
    xywh[:, 2:] -= xywh[:, :2]
    scores = output["scores"].detach().float().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    if contiguous_to_dataset_id is not None:
        unknown = sorted({l for l in labels if l not in contiguous_to_dataset_id})
        if unknown:
            raise ValueError(f"Model output labels {unknown} have no dataset category id "
                             f"(known labels: {sorted(contiguous_to_dataset_id)})")
        labels = [contiguous_to_dataset_id[l] for l in labels]
    rles = None
    if "masks" in output:
        masks = output["masks"].detach()
        if masks.dim() == 4:
            masks = masks[:, 0]
        binary = (masks > mask_threshold).to(torch.uint8).cpu().numpy()
        # pycocotools wants H x W x N in Fortran order
        rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        for r in rles:
            r["counts"] = r["counts"].decode("ascii")
    results = []
    for i in range(n):
        r = {"image_id": int(image_id), "category_id": int(labels[i]),
             "bbox": [round(float(v), 3) for v in xywh[i].tolist()], "score": float(scores[i])}
        if rles is not None:
            r["segmentation"] = rles[i]
        results.append(r)
    return results


def _per_category_ap(coco_eval, coco_gt) -> Dict[str, Optional[float]]:
    # precision: [IoU thresholds, recall points, categories, area ranges, max dets]; -1 where undefined
    precision = coco_eval.eval["precision"]
    table = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        name = coco_gt.cats[cat_id]["name"]
        table[name] = float(np.mean(p) * 100) if p.size else None
    return table


def format_per_category_table(per_category: Dict[str, Optional[float]], columns: int = 3) -> str:
    cells = [(name, "nan" if ap is None else f"{ap:.3f}") for name, ap in per_category.items()]
    width = max([len(c[0]) for c in cells] + [8])
    header = " | ".join([f"{'category':<{width}} | {'AP':>7}"] * min(columns, max(len(cells), 1)))
    lines = [header, "-" * len(header)]
    for row in range(0, len(cells), columns):
        lines.append(" | ".join(f"{n:<{width}} | {a:>7}" for n, a in cells[row:row + columns]))
    return "\n".join(lines)


BACKENDS = ("pycocotools", "faster_coco_eval")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"TEST.COCO_EVAL_BACKEND must be one of {BACKENDS}; got {backend!r}")


def _make_coco_eval(backend: str, coco_gt, dets: List[dict], iou_type: str):
    """A COCOeval object of `backend` (checked by the caller) over the validated detections; with none,
    over an empty detection set (loadRes cannot take an empty list), which scores AP 0 where there is
    ground truth, as it should."""
    no_dets = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"], "annotations": []}
    if backend == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        if dets:
            with contextlib.redirect_stdout(io.StringIO()):
                coco_dt = coco_gt.loadRes(dets)
        else:
            coco_dt = _coco_from_dict(no_dets)
        return COCOeval(coco_gt, coco_dt, iou_type)
    try:
        from faster_coco_eval import COCO as FastCOCO, COCOeval_faster
    except ImportError as e:
        raise ImportError("TEST.COCO_EVAL_BACKEND 'faster_coco_eval' needs the faster-coco-eval package "
                          "(pip install faster-coco-eval)") from e
    # its own COCO class over the same (already validated and repaired) ground-truth dict
    fast_gt = FastCOCO(copy.deepcopy(coco_gt.dataset))
    fast_dt = fast_gt.loadRes(dets) if dets else FastCOCO(copy.deepcopy(no_dets))
    return COCOeval_faster(fast_gt, fast_dt, iou_type, print_function=lambda *a, **k: None)


def _warn_truncated(results: List[dict], img_ids: Optional[set], max_dets: int, source: str) -> None:
    """COCOeval keeps the `max_dets` highest-scoring detections per image and drops the rest silently."""
    counts: Dict[int, int] = {}
    for r in results:
        counts[r["image_id"]] = counts.get(r["image_id"], 0) + 1
    over = {i: n for i, n in counts.items() if n > max_dets and (img_ids is None or i in img_ids)}
    if over:
        logger.warning("%s: %d images have more than %d detections (up to %d; %d detections in all beyond the "
                       "limit): COCOeval scores only the %d highest-scoring per image (maxDets), as COCO's "
                       "protocol says; lower TEST.DETECTIONS_PER_IMAGE to %d to return only what is scored",
                       source, len(over), max_dets, max(over.values()), sum(n - max_dets for n in over.values()),
                       max_dets, max_dets)


def _explain_undefined(coco_eval, coco_gt, iou_type: str, stats: Dict) -> None:
    """pycocotools prints -1 for a metric with no ground truth to measure it on; say why."""
    img_ids = coco_eval.params.imgIds
    num_gt = len(coco_gt.getAnnIds(imgIds=img_ids, iscrowd=False))
    if num_gt == 0:
        logger.warning("%s: the %d evaluated images have no (non-crowd) ground-truth instance, so AP and AR are "
                       "undefined: pycocotools prints -1, resdet saves null (NaN). Evaluate on data with "
                       "annotations.", iou_type, len(img_ids))
    elif any(math.isnan(v) for k, v in stats.items() if k != "per_category"):
        print(f"({iou_type}: -1.000 above = no ground-truth instance in that area range among the evaluated "
              "images: undefined, saved as null)")
    if any(v is None for v in stats["per_category"].values()):
        print("(nan: no ground-truth instance of that category among the evaluated images)")


def evaluate_coco_results(
    coco_gt,
    results: List[dict],
    iou_types: Sequence[str] = ("bbox", "segm"),
    source: str = "<results>",
    img_ids: Optional[Iterable[int]] = None,
    backend: str = "pycocotools",
    instances_without_mask: str = "error",
) -> Dict[str, Dict]:
    """Run COCOeval per IoU type and print its summary. Returns, per type, the 12 summary numbers (in
    percent, as Detectron2 reports them) and `per_category` AP.

    `coco_gt`: a JSON path or dict (validated and repaired per type: resdet/data/coco_eval_gt.py, with
    `instances_without_mask` as DATASETS.INSTANCES_WITHOUT_MASK), an EvalGroundTruth, or a pycocotools
    COCO object (trusted). Every result is checked; an empty list scores 0 wherever there is ground
    truth, with a warning. `backend` "faster_coco_eval" runs faster-coco-eval's C++ COCOeval instead of
    pycocotools' Python loops (same numbers: tests/evaluation/test_coco_backends.py)."""
    _check_backend(backend)
    gt = load_eval_ground_truth(coco_gt, iou_types, instances_without_mask)
    img_ids = set(img_ids) if img_ids is not None else None
    if isinstance(results, list) and not results:
        n = len(img_ids) if img_ids is not None else len(gt.imgs)
        logger.warning("%s: no detections on the %d evaluated images: every AP and AR is 0 where there is ground "
                       "truth (scored by COCOeval over an empty detection set, not an error)", source, n)
    metrics: Dict[str, Dict] = {}
    for iou_type in iou_types:
        coco_gt = gt[iou_type]
        validate_coco_results(results, coco_gt.dataset, iou_type, source=source)
        dets = copy.deepcopy(results)  # loadRes writes into them
        if iou_type == "segm":
            for d in dets:
                # with a bbox present loadRes would take the box area for the small/medium/large ranges
                d.pop("bbox", None)
        coco_eval = _make_coco_eval(backend, coco_gt, dets, iou_type)
        if img_ids is not None:
            coco_eval.params.imgIds = sorted(img_ids)
        if iou_type == iou_types[0]:
            _warn_truncated(results, img_ids, coco_eval.params.maxDets[-1], source)
        print(f"Evaluating {iou_type} with {backend} COCOeval")
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
        if backend == "pycocotools":
            coco_eval.summarize()  # prints the standard 12-line summary
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                coco_eval.summarize()
            _print_summary(coco_eval.stats[:12], coco_eval.params.maxDets)
        stats = {n: float(v * 100) if v >= 0 else float("nan") for n, v in zip(SUMMARY_NAMES, coco_eval.stats)}
        stats["per_category"] = _per_category_ap(coco_eval, coco_gt)
        print(f"Per-category {iou_type} AP:\n" + format_per_category_table(stats["per_category"]))
        _explain_undefined(coco_eval, coco_gt, iou_type, stats)
        for note in coco_gt.dataset.get(LEFT_OUT_KEY, []):  # what the ground truth lost, as training does
            print(f"({iou_type}: {note})")
        metrics[iou_type] = stats
    return metrics


def _print_summary(stats, max_dets) -> None:
    # the 12 lines pycocotools prints, for a backend that prints its own format (or nothing)
    rows = [("Precision", "AP", "0.50:0.95", "all", 2), ("Precision", "AP", "0.50", "all", 2),
            ("Precision", "AP", "0.75", "all", 2), ("Precision", "AP", "0.50:0.95", "small", 2),
            ("Precision", "AP", "0.50:0.95", "medium", 2), ("Precision", "AP", "0.50:0.95", "large", 2),
            ("Recall", "AR", "0.50:0.95", "all", 0), ("Recall", "AR", "0.50:0.95", "all", 1),
            ("Recall", "AR", "0.50:0.95", "all", 2), ("Recall", "AR", "0.50:0.95", "small", 2),
            ("Recall", "AR", "0.50:0.95", "medium", 2), ("Recall", "AR", "0.50:0.95", "large", 2)]
    for (title, short, iou, area, k), v in zip(rows, stats):
        print(f" {'Average ' + title:<18} ({short}) @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets[k]:>3d} ] = {v:0.3f}")


def _save_json(obj, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _json_safe(metrics):
    # JSON has no NaN; a category without ground truth gets null
    if isinstance(metrics, dict):
        return {k: _json_safe(v) for k, v in metrics.items()}
    if isinstance(metrics, float) and math.isnan(metrics):
        return None
    return metrics


def evaluate_results_file(gt_json: str, results_json: str, iou_types: Optional[Sequence[str]] = None,
                          output_dir: Optional[str] = None, backend: str = "pycocotools",
                          instances_without_mask: str = "error") -> Dict[str, Dict]:
    """Evaluate a results JSON written earlier (by eval.py or anyone else), without a model.

    `iou_types` None: bbox and segm as far as the results carry them (a box-only file is scored for
    bbox, and the console says why segm is not). Asked for explicitly, a type the results cannot give
    (no result has a 'segmentation' / 'bbox') is a CocoFormatError: tools/eval.py exits non-zero."""
    if not os.path.isfile(results_json):
        raise FileNotFoundError(f"Results file not found: '{results_json}'")
    with open(results_json, "r", encoding="utf-8") as f:
        try:
            results = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # not UTF-8, nested too deep
            raise CocoFormatError(f"Results file '{results_json}' is not valid JSON: {e}") from e
    asked = iou_types is not None
    types = list(iou_types) if asked else ["bbox", "segm"]
    if isinstance(results, list) and results:
        for iou_type, key in (("bbox", "bbox"), ("segm", "segmentation")):
            if iou_type not in types or any(isinstance(r, dict) and key in r for r in results):
                continue  # results that carry it partly are checked one by one (validate_coco_results)
            if asked:
                raise CocoFormatError(f"'{results_json}': {iou_type} evaluation was asked for, but none of its "
                                      f"{len(results)} results has a '{key}'")
            types.remove(iou_type)
            logger.warning("'%s': none of its %d results has a '%s': %s is not evaluated, only %s",
                           results_json, len(results), key, iou_type, " and ".join(types) or "nothing")
        if not types:
            raise CocoFormatError(f"'{results_json}': no result has a 'bbox' or a 'segmentation': nothing to evaluate")
    metrics = evaluate_coco_results(gt_json, results, types, source=f"'{results_json}'", backend=backend,
                                    instances_without_mask=instances_without_mask)
    if output_dir:
        _save_json(_json_safe(metrics), os.path.join(output_dir, "coco_eval.json"))
    return metrics


class COCOEvaluator:
    """Collects model outputs over a dataset (across DDP ranks) and scores them with COCOeval."""

    def __init__(
        self,
        gt: Union[str, dict],
        iou_types: Sequence[str] = ("bbox", "segm"),
        contiguous_to_dataset_id: Optional[Dict[int, int]] = None,
        output_dir: Optional[str] = None,
        mask_threshold: float = 0.5,
        backend: str = "pycocotools",
        instances_without_mask: str = "error",
    ):
        _check_backend(backend)
        self.backend = backend
        for t in iou_types:
            if t not in ("bbox", "segm"):
                raise ValueError(f"iou_types may hold 'bbox' and 'segm', got {t!r}")
        # validated and repaired now, before any inference: a bad ground truth stops here
        self.eval_gt = load_eval_ground_truth(gt, iou_types, instances_without_mask)
        self.coco_gt = self.eval_gt[iou_types[0]]
        self.iou_types = tuple(iou_types)
        if contiguous_to_dataset_id is None:  # same rule as resdet.data.coco: sorted ids -> 1..K
            contiguous_to_dataset_id = {i + 1: c for i, c in enumerate(sorted(self.coco_gt.cats))}
        self.contiguous_to_dataset_id = contiguous_to_dataset_id
        self.output_dir = output_dir
        self.mask_threshold = mask_threshold
        self.reset()

    def reset(self) -> None:
        self._results: List[dict] = []
        self._image_ids: List[int] = []

    def process(self, targets: Sequence[Dict[str, torch.Tensor]], outputs: Sequence[Dict[str, torch.Tensor]]) -> None:
        """`targets` carry `image_id` (as the loaders make them); `outputs` are the model's, per image."""
        if len(targets) != len(outputs):
            raise ValueError(f"process() got {len(targets)} targets but {len(outputs)} outputs")
        for t, o in zip(targets, outputs):
            image_id = int(t["image_id"])
            if "segm" in self.iou_types and "masks" not in o:
                raise ValueError("segm evaluation needs 'masks' in the model outputs (is MODEL.MASK_ON off?)")
            self._image_ids.append(image_id)
            self._results.extend(instances_to_coco_results(o, image_id, self.contiguous_to_dataset_id,
                                                           self.mask_threshold))

    def _gather(self):
        """Every rank's results and image ids on rank 0 (only there: scoring happens there, and copying
        a whole validation set's masks to every rank costs memory and time); (None, None) elsewhere."""
        from resdet.engine.distributed import gather_object

        parts = gather_object((self._results, self._image_ids), dst=0)
        if parts is None:
            return None, None
        results = [r for p in parts for r in p[0]]
        ids = [i for p in parts for i in p[1]]
        return results, ids

    def evaluate(self) -> Dict[str, Dict]:
        """Scores on rank 0 (other ranks get {}); results and metrics saved under output_dir."""
        results, image_ids = self._gather()
        if results is None:
            return {}
        if self.output_dir:
            _save_json(results, os.path.join(self.output_dir, "coco_instances_results.json"))
        metrics = evaluate_coco_results(self.eval_gt, results, self.iou_types, source="model outputs",
                                        img_ids=set(image_ids), backend=self.backend)
        if self.output_dir:
            _save_json(_json_safe(metrics), os.path.join(self.output_dir, "coco_eval.json"))
        return metrics
