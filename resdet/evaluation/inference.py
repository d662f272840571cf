"""Run a detection model over a test loader and score it: what tools/eval.py and periodic evaluation do.

Images go to the device in batches; the model returns outputs in the original image frame (the loader
resized the images and passes `orig_size`), masks pasted included; the evaluator turns them into COCO
results. The throughput reported counts everything from the batch on the host to the results list
(transfer, forward, mask pasting, RLE encoding), after `warmup` batches, with the device synchronised.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Optional, Sequence

import torch
from tqdm import tqdm

from resdet.engine.distributed import is_main_process, unwrap_model

from .coco import COCOEvaluator

__all__ = ["inference_on_dataset", "evaluate_detection_model", "check_evaluation_datasets"]

logger = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def inference_on_dataset(model, loader, evaluator: COCOEvaluator, device: torch.device, amp: str = "",
                         warmup: int = 2, progress: bool = True) -> Dict:
    """Returns the evaluator's metrics plus `inference` timing: images, seconds, images_per_second."""
    net = unwrap_model(model)
    was_training = net.training
    net.eval()
    evaluator.reset()
    dtype = {"": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    n_images, n_timed, timed = 0, 0, 0.0
    bar = tqdm(loader, desc="inference", disable=not (progress and is_main_process()), dynamic_ncols=True)
    for i, (images, targets) in enumerate(bar):
        _sync(device)
        start = time.perf_counter()
        images = [im.to(device, non_blocking=True) for im in images]
        sizes = [tuple(int(v) for v in t["orig_size"]) for t in targets]
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            outputs = net(images, original_sizes=sizes)
        outputs = [{k: (v.float() if v.is_floating_point() else v) for k, v in o.items()} for o in outputs]
        evaluator.process(targets, outputs)
        _sync(device)
        n_images += len(images)
        if i >= warmup:
            timed += time.perf_counter() - start
            n_timed += len(images)
    net.train(was_training)
    metrics = evaluator.evaluate()
    ips = n_timed / timed if timed > 0 else float("nan")
    logger.info("Inference on %d images (this process): %.2f images/s after %d warm-up batches", n_images, ips, warmup)
    if is_main_process():
        metrics = dict(metrics)
        metrics["inference"] = {"images": n_images, "seconds": timed, "images_per_second": ips}
    return metrics


def evaluate_detection_model(cfg, model, device: torch.device, dataset_name: Optional[str] = None,
                             output_dir: Optional[str] = None) -> Dict:
    """Score `model` on a registered dataset (default: the first of DATASETS.TEST) with COCOeval."""
    from resdet.data.loader import build_detection_test_loader

    name = dataset_name or cfg.DATASETS.TEST[0]
    loader = build_detection_test_loader(cfg, name)
    evaluator = COCOEvaluator(loader.json_file, _iou_types(cfg), loader.metadata.contiguous_to_dataset_id,
                              output_dir=output_dir, mask_threshold=cfg.TEST.MASK_THRESHOLD,
                              backend=cfg.TEST.COCO_EVAL_BACKEND,
                              instances_without_mask=cfg.DATASETS.INSTANCES_WITHOUT_MASK)
    return inference_on_dataset(model, loader, evaluator, device, amp=cfg.SOLVER.AMP)


def _iou_types(cfg):
    return ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)


def check_evaluation_datasets(cfg, names: Optional[Sequence[str]] = None) -> None:
    """Check every evaluation dataset (default: DATASETS.TEST) as evaluation will, before training or
    inference starts: image files first (a JSON size that differs from the file is named as such), then
    the ground truth with training's rules, repaired for pycocotools per IoU type
    (resdet/data/coco_eval_gt.py). Raises CocoFormatError / ImageFileError naming the file and items;
    repairs are logged once, with counts and example ids."""
    from resdet.data.catalog import get_detection_dataset, register_from_config

    from .coco import load_eval_ground_truth

    from resdet.data.coco import ImageFileError

    register_from_config(cfg)
    for name in (cfg.DATASETS.TEST if names is None else names):
        try:
            _, meta = get_detection_dataset(name, filter_empty=False, check_images=cfg.DATASETS.CHECK_IMAGES,
                                            instances_without_mask="keep")
        except ImageFileError as e:  # say which data it is: skipping (training's) never applies here
            skip = (" DATALOADER.SKIP_BAD_IMAGES is for training images only: evaluation never skips an image, "
                    "so that scores stay comparable; fix the file or take it out of the JSON."
                    if cfg.DATALOADER.SKIP_BAD_IMAGES else "")
            raise ImageFileError(f"Evaluation dataset '{name}': {e}.{skip}") from e
        load_eval_ground_truth(meta.json_file, _iou_types(cfg), cfg.DATASETS.INSTANCES_WITHOUT_MASK)
