"""A small inference API: image (path or HxWx3 RGB uint8 array) in, instances out.

    predictor = DetectionPredictor.from_checkpoint("output/quickstart_shapes/model_final.pth")  # its training config
    predictor = DetectionPredictor.from_config(load_config("configs/quickstart_shapes.yaml"),
                                               weights="output/quickstart_shapes/model_final.pth")
    instances = predictor("image.jpg")        # boxes, scores, labels, masks, class_names (original frame)
    picture = predictor.draw("image.jpg", instances)   # CHW uint8 with boxes, masks, labels, scores
    predictor = DetectionPredictor.from_exported("model.onnx")   # a file from tools/export.py (.onnx, .pt2)
    tensor, size = predictor.prepare("image.jpg")          # decode + test-time resize (thread-safe)
    outs = predictor.predict_batch([tensor, ...], [size, ...])    # one batched model call (tools/predict.py)

The image goes through the same test-time resize as evaluation (resdet/data/transforms.py), so the
predictor sees what eval.py sees; outputs come back in the original image's coordinates. With
TEST.AUG.ENABLED the model is wrapped in test-time augmentation (resdet/detection/tta.py).
"""
from __future__ import annotations

import logging
import threading
from typing import Dict, List, Optional, Sequence, Tuple, Union

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
                 mask_threshold: float = 0.5, resize_rounding: str = "round", resize_backend: str = "opencv",
                 class_score_thresholds: Optional[Sequence[float]] = None):
        from resdet.data.transforms import build_augmentation

        self.model = model.eval()
        if isinstance(model, torch.nn.Module):
            self.device = device or next(model.parameters()).device
            self.model.to(self.device)
        else:  # an exported model (resdet.export.runtime.ExportedDetector) runs where it was loaded
            self.device = model.device
        self.class_names = list(class_names)
        self._resize_args = dict(min_size_test=min_size, max_size=max_size, resize_rounding=resize_rounding,
                                 resize_backend=resize_backend)
        self.resize = build_augmentation(False, **self._resize_args)
        self._per_thread = threading.local()  # prepare() runs in worker threads: one resize pipeline each
        self.score_threshold = score_threshold
        # TEST.SCORE_THRESH_PER_CLASS: one threshold per label 1..K instead of score_threshold (see keep())
        self.class_score_thresholds = list(class_score_thresholds) if class_score_thresholds else None
        n = len(self.class_score_thresholds or ())
        if n and self.class_names and n != len(self.class_names):
            raise ValueError(f"TEST.SCORE_THRESH_PER_CLASS has {len(self.class_score_thresholds)} values but the "
                             f"model has {len(self.class_names)} classes ({self.class_names}): one per class, in order")
        self.mask_threshold = mask_threshold
        self.cfg = None  # the config it was built from, by from_config / from_checkpoint

    @classmethod
    def from_checkpoint(cls, weights: str, config=None, overrides: Sequence[str] = (),
                        allow_config_mismatch: bool = False,
                        class_names: Optional[Sequence[str]] = None) -> "DetectionPredictor":
        """A predictor for a training checkpoint, built with the config stored in it (the sizes,
        thresholds and heads it was trained with), plus `overrides` (KEY VALUE pairs).

        `config` (a YAML path or a CfgNode) is used instead where the checkpoint has none (converted
        weights) or on purpose; where its INPUT/MODEL/TEST keys differ from the checkpoint's, that is a
        ConfigError naming each, or a warning with `allow_config_mismatch`.
        """
        from resdet.engine.checkpoint_config import config_for_checkpoint

        cfg = config_for_checkpoint(weights, config, overrides, what="prediction",
                                    on_mismatch="warn" if allow_config_mismatch else "error")
        return cls.from_config(cfg, weights=weights, class_names=class_names)

    @classmethod
    def from_config(cls, cfg, weights: str = "", class_names: Optional[Sequence[str]] = None) -> "DetectionPredictor":
        """Model from the config, weights from `weights` (or MODEL.WEIGHTS), class names from the
        first test dataset's categories unless given. (A training checkpoint's own config is used by
        `from_checkpoint`.)"""
        from resdet.detection.rcnn import build_detection_model
        from resdet.detection.weights import load_detection_weights

        if weights and weights != cfg.MODEL.WEIGHTS:
            # as MODEL.WEIGHTS: the backbone then needs no weights file of its own, and a VARIANT "auto"
            # follows the config this checkpoint was trained with
            cfg = cfg.clone()
            cfg.defrost()
            cfg.MODEL.WEIGHTS = weights
        from resdet.detection.tta import with_test_time_augmentation

        model = build_detection_model(cfg)
        path = cfg.MODEL.WEIGHTS
        if path:
            load_detection_weights(model, path, strict=True)
        else:
            logger.warning("No weights given (MODEL.WEIGHTS or --weights): the model is untrained")
        model = with_test_time_augmentation(cfg, model)
        if class_names is None:
            class_names = _dataset_class_names(cfg)
        predictor = cls(model, class_names, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST,
                        _device_for(cfg.MODEL.DEVICE), cfg.TEST.VIS_SCORE_THRESHOLD, cfg.TEST.MASK_THRESHOLD,
                        cfg.INPUT.RESIZE_ROUNDING, cfg.INPUT.RESIZE_BACKEND, class_score_thresholds(cfg))
        predictor.cfg = cfg
        return predictor

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
                   mask_threshold=meta.get("mask_threshold", 0.5), resize_rounding=resize.get("rounding", "round"),
                   resize_backend=resize.get("backend", "opencv"),
                   # an explicit score_threshold is for every class
                   class_score_thresholds=meta.get("score_thresholds_per_class") if score_threshold is None else None)

    def _load(self, image: Union[str, np.ndarray]) -> np.ndarray:
        from resdet.data.coco import read_image

        if isinstance(image, str):
            return read_image(image)
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            desc = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"the predictor takes an image path or an HxWx3 RGB uint8 array; got {desc}")
        return image

    def prepare(self, image: Union[str, np.ndarray]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """The model's input for one image (path or HxWx3 RGB uint8 array): its test-time resize as a CHW
        float tensor (0-255, on the CPU), and its original (h, w). Safe to call from several threads."""
        from resdet.data.transforms import build_augmentation

        pixels = self._load(image)
        h, w = pixels.shape[:2]
        resize = getattr(self._per_thread, "resize", None)
        if resize is None:
            resize = self._per_thread.resize = build_augmentation(False, **self._resize_args)
        resized = resize(image=pixels, bboxes=np.zeros((0, 4), np.float32), ann_index=[])["image"]
        # uint8 (opencv backend) or float 0-255 kept unrounded (torch backend): the model takes float 0-255
        return torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float(), (h, w)

    @torch.no_grad()
    def predict_batch(self, images: Sequence[torch.Tensor], original_sizes: Sequence[Tuple[int, int]],
                      paste_masks: bool = True) -> List[Dict]:
        """One model call on prepared images (`prepare`), padded into one batch as in training: per image
        the instances of `__call__`, on the CPU. `paste_masks=False` gives Mask R-CNN's masks as
        `mask_probs` [N, 1, M, M] inside each box instead of image-sized `masks` (resdet/evaluation/rle.py
        encodes them; tools/predict.py pastes only those it draws)."""
        extra = {} if paste_masks else {"paste_masks": False}  # any model with the torchvision interface, else
        outs = self.model([t.to(self.device) for t in images], original_sizes=[tuple(s) for s in original_sizes],
                          **extra)
        names = self.class_names
        results = []
        for out in outs:
            out = {k: v.cpu() for k, v in out.items()}
            out["class_names"] = [names[l - 1] if 0 < l <= len(names) else str(l) for l in out["labels"].tolist()]
            results.append(out)
        return results

    def __call__(self, image: Union[str, np.ndarray]) -> Dict:
        """Instances in the original frame: boxes [N,4] xyxy, scores, labels 1..K, masks [N,1,H,W]
        (probabilities, for Mask R-CNN), and class_names (one per instance)."""
        tensor, size = self.prepare(image)
        return self.predict_batch([tensor], [size])[0]

    def keep(self, instances: Dict) -> torch.Tensor:
        """[N] bool: the instances shown and counted (the deploy-time threshold, in this one place): score at
        least its class's TEST.SCORE_THRESH_PER_CLASS value when set, else at least score_threshold."""
        scores = instances["scores"]
        if not self.class_score_thresholds:
            return scores >= self.score_threshold
        table = torch.tensor([float("inf")] + [float(t) for t in self.class_score_thresholds], dtype=scores.dtype)
        labels = instances["labels"].long().clamp(0, len(table) - 1)  # a label past the table: never kept
        return scores >= table[labels]

    def draw(self, image: Union[str, np.ndarray], instances: Optional[Dict] = None) -> torch.Tensor:
        from resdet.utils.visualize import draw_instances

        pixels = self._load(image)
        instances = instances if instances is not None else self(pixels)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
        keep = self.keep(instances)
        return draw_instances(tensor, {k: v[keep] for k, v in instances.items() if k != "class_names"},
                              self.class_names, float("-inf"), self.mask_threshold)


def class_score_thresholds(cfg) -> Optional[List[float]]:
    """TEST.SCORE_THRESH_PER_CLASS, checked: one number per class (MODEL.ROI_HEADS.NUM_CLASSES), or None."""
    values = list(cfg.TEST.SCORE_THRESH_PER_CLASS)
    if not values:
        return None
    from resdet.config import ConfigError

    k = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if len(values) != k or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"TEST.SCORE_THRESH_PER_CLASS must hold one number per class (MODEL.ROI_HEADS.NUM_CLASSES "
                          f"= {k}, in label order), got {values!r}")
    return [float(v) for v in values]


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


def _rescaled(pixels: np.ndarray, inst: Dict, scale: float, keep: torch.Tensor):
    """An image and its instances (those drawn: `keep`) scaled by `scale`."""
    import cv2

    h, w = pixels.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = {k: v[keep] for k, v in inst.items() if isinstance(v, torch.Tensor)}
    out["boxes"] = out["boxes"] * torch.tensor([size[0] / w, size[1] / h] * 2)
    if "masks" in out:  # probabilities resampled, thresholded when drawn
        out["masks"] = torch.nn.functional.interpolate(out["masks"].float(), size=(size[1], size[0]),
                                                       mode="bilinear", align_corners=False)
    return np.ascontiguousarray(pixels), out


def save_prediction_pictures(predictor: DetectionPredictor, image_paths: Sequence[str], path: str, nrow: int = 4,
                             min_side: int = 256, max_height: int = 512) -> str:
    """Predictions on several images drawn side by side into one PNG.

    Each image is predicted at its own size, then shown (with its detections) at one common height:
    their median height, at least `min_side` (small images enlarged, so labels stay readable) and at
    most `max_height`; so the grid's cells fit the images, with no blank band beside a small one.
    """
    from resdet.utils.visualize import make_grid_image, save_image

    loaded = [predictor._load(p) for p in image_paths]
    if not loaded:
        raise ValueError("save_prediction_pictures needs at least one image")
    height = int(min(max(float(np.median([im.shape[0] for im in loaded])), min_side), max_height))
    drawn = []
    for pixels in loaded:
        inst = predictor(pixels)
        shown, inst = _rescaled(pixels, inst, height / pixels.shape[0], predictor.keep(inst))
        drawn.append(predictor.draw(shown, inst))
    return save_image(make_grid_image(drawn, nrow=nrow), path)
