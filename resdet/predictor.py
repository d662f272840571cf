"""A small inference API: image (path or HxWx3 RGB uint8 array) in, instances out.

    predictor = DetectionPredictor.from_config(load_config("configs/quickstart_shapes.yaml"),
                                               weights="output/quickstart_shapes/model_final.pth")
    instances = predictor("image.jpg")        # boxes, scores, labels, masks, class_names (original frame)
    picture = predictor.draw("image.jpg", instances)   # CHW uint8 with boxes, masks, labels, scores
    predictor = DetectionPredictor.from_exported("model.onnx")   # a file from tools/export.py (.onnx, .pt2)

The image goes through the same test-time resize as evaluation (resdet/data/transforms.py), so the
predictor sees what eval.py sees; outputs come back in the original image's coordinates.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["DetectionPredictor", "save_prediction_pictures"]

logger = logging.getLogger(__name__)


def _device_for(name: str) -> torch.device:
    """MODEL.DEVICE, except that inference falls back to the CPU when no GPU is there (with a warning)."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %r but no GPU is available: running on the CPU", name)
        return torch.device("cpu")
    return torch.device(name)


class DetectionPredictor:
    def __init__(self, model: torch.nn.Module, class_names: Sequence[str] = (), min_size: int = 800,
                 max_size: int = 1333, device: Optional[torch.device] = None, score_threshold: float = 0.5,
                 mask_threshold: float = 0.5, resize_rounding: str = "round"):
        from resdet.data.transforms import build_augmentation

        self.model = model.eval()
        if isinstance(model, torch.nn.Module):
            self.device = device or next(model.parameters()).device
            self.model.to(self.device)
        else:  # an exported model (resdet.export.runtime.ExportedDetector) runs where it was loaded
            self.device = model.device
        self.class_names = list(class_names)
        self.resize = build_augmentation(False, min_size_test=min_size, max_size=max_size,
                                         resize_rounding=resize_rounding)
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold

    @classmethod
    def from_config(cls, cfg, weights: str = "", class_names: Optional[Sequence[str]] = None) -> "DetectionPredictor":
        """Model from the config, weights from `weights` (or MODEL.WEIGHTS), class names from the
        first test dataset's categories unless given."""
        from resdet.detection.rcnn import build_detection_model
        from resdet.engine.checkpoint import Checkpointer

        model = build_detection_model(cfg)
        path = weights or cfg.MODEL.WEIGHTS
        if path:
            Checkpointer("", model).load_model(path, strict=True)
        else:
            logger.warning("No weights given (MODEL.WEIGHTS or --weights): the model is untrained")
        if class_names is None:
            class_names = _dataset_class_names(cfg)
        return cls(model, class_names, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST,
                   _device_for(cfg.MODEL.DEVICE), cfg.TEST.VIS_SCORE_THRESHOLD, cfg.TEST.MASK_THRESHOLD,
                   cfg.INPUT.RESIZE_ROUNDING)

    @classmethod
    def from_exported(cls, path: str, device: Optional[str] = None, score_threshold: Optional[float] = None,
                      threads: int = 0) -> "DetectionPredictor":
        """A predictor on an exported detector (tools/export.py: .onnx through onnxruntime, .pt2 through
        torch.export.load): test-time resize, class names and thresholds come from the file's metadata,
        and the instances are the same dict as with the eager model. `device`: ONNX runs on the CPU or
        (onnxruntime's CUDA provider) "cuda"; a .pt2 on the device it was traced on (the default)."""
        from resdet.export.runtime import ExportedDetector

        model = ExportedDetector(path, device=device, threads=threads)
        meta = model.metadata
        resize = meta.get("test_resize", {})
        return cls(model, meta.get("class_names", []), resize.get("min_size", 800), resize.get("max_size", 1333),
                   score_threshold=meta.get("vis_score_threshold", 0.5) if score_threshold is None else score_threshold,
                   mask_threshold=meta.get("mask_threshold", 0.5), resize_rounding=resize.get("rounding", "round"))

    def _load(self, image: Union[str, np.ndarray]) -> np.ndarray:
        from resdet.data.coco import read_image

        if isinstance(image, str):
            return read_image(image)
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            desc = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"the predictor takes an image path or an HxWx3 RGB uint8 array; got {desc}")
        return image

    @torch.no_grad()
    def __call__(self, image: Union[str, np.ndarray]) -> Dict:
        """Instances in the original frame: boxes [N,4] xyxy, scores, labels 1..K, masks [N,1,H,W]
        (probabilities, for Mask R-CNN), and class_names (one per instance)."""
        pixels = self._load(image)
        h, w = pixels.shape[:2]
        resized = self.resize(image=pixels, bboxes=np.zeros((0, 4), np.float32), ann_index=[])["image"]
        tensor = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float().to(self.device)
        out = self.model([tensor], original_sizes=[(h, w)])[0]
        out = {k: v.cpu() for k, v in out.items()}
        names = self.class_names
        out["class_names"] = [names[l - 1] if 0 < l <= len(names) else str(l) for l in out["labels"].tolist()]
        return out

    def draw(self, image: Union[str, np.ndarray], instances: Optional[Dict] = None) -> torch.Tensor:
        from resdet.utils.visualize import draw_instances

        pixels = self._load(image)
        instances = instances if instances is not None else self(pixels)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
        return draw_instances(tensor, {k: v for k, v in instances.items() if k != "class_names"},
                              self.class_names, self.score_threshold, self.mask_threshold)


def _dataset_class_names(cfg) -> List[str]:
    from resdet.data.catalog import dataset_files, register_from_config

    import json

    register_from_config(cfg)
    if not cfg.DATASETS.TEST:
        return []
    try:
        with open(dataset_files(cfg.DATASETS.TEST[0])[0], encoding="utf-8") as f:
            cats = json.load(f)["categories"]
        return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
    except (OSError, KeyError, ValueError) as e:
        logger.warning("Class names unavailable (%s); labels are drawn as numbers", e)
        return []


def save_prediction_pictures(predictor: DetectionPredictor, image_paths: Sequence[str], path: str, nrow: int = 4,
                             min_side: int = 256) -> str:
    """Predictions on several images drawn side by side into one PNG (small images enlarged to
    `min_side` by pixel repetition, after prediction at their own size)."""
    from resdet.utils.visualize import make_grid_image, save_image

    drawn = []
    for p in image_paths:
        pixels = predictor._load(p)
        inst = predictor(pixels)
        short = min(pixels.shape[:2])
        if short < min_side:  # small images (the shapes data): enlarge so that labels stay readable
            scale = -(-min_side // short)
            pixels = np.ascontiguousarray(pixels.repeat(scale, axis=0).repeat(scale, axis=1))
            inst["boxes"] = inst["boxes"] * scale
            if "masks" in inst:
                inst["masks"] = inst["masks"].repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
        drawn.append(predictor.draw(pixels, inst))
    return save_image(make_grid_image(drawn, nrow=nrow), path)
