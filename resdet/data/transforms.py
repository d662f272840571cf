"""Detection augmentation with albumentations: image, boxes and masks transformed together.

`DetectionMapper` turns one dataset dict (resdet/data/coco.py) into what the model takes: a CHW float32
tensor (0-255, RGB) and a target dict `boxes` [N,4] float32 xyxy, `labels` [N] int64 in 1..K, `masks`
[N,H,W] uint8 (with masks on), plus `image_id` and `orig_size` (original [height, width]).

Training: shorter side resized to a size drawn from `min_size_train` (longer side capped at `max_size`),
horizontal flip; or large-scale jitter (Ghiasi et al. 2021): longer side to `lsj_size`, random scale
in `lsj_scale`, pad and crop to `lsj_size` x `lsj_size`. Test: shorter side to `min_size_test`.
Crowd regions never reach the model in training (they are for the evaluator). Boxes that a crop or
scale leaves with no area are dropped together with their masks (albumentations tells which survive
through the `ann_index` label field).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import resdet  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations is imported)
import albumentations as A  # noqa: E402
from albumentations.augmentations.geometric import functional as fgeometric  # noqa: E402

from .coco import read_image

__all__ = ["ResizeShortestEdge", "build_augmentation", "DetectionMapper", "annotations_to_masks"]


class ResizeShortestEdge(A.SmallestMaxSize):
    """Shorter side to `max_size` (one drawn at random if a list), unless the longer side would then
    exceed `max_longer`, in which case the longer side becomes `max_longer` (Detectron2's and
    torchvision's rule). albumentations has the two halves (SmallestMaxSize, LongestMaxSize) but not the
    capped combination, and chaining them would upscale small images to the cap."""

    def __init__(self, max_size, max_longer: int = 1333, rounding: str = "round", **kwargs):
        super().__init__(max_size=max_size, **kwargs)
        if max_longer <= 0:
            raise ValueError(f"max_longer must be positive, got {max_longer}")
        if rounding not in ("round", "floor"):
            raise ValueError(f"INPUT.RESIZE_ROUNDING must be 'round' or 'floor', got {rounding!r}")
        self.max_longer = int(max_longer)
        self.rounding = rounding

    def _new_size(self, height: int, width: int, scale: float) -> Tuple[int, int]:
        # "round": Detectron2 (and albumentations); "floor": torchvision's GeneralizedRCNNTransform, whose
        # interpolate(scale_factor=s, recompute_scale_factor=True) gives floor(side * s) in double
        # precision; with "floor" our sizes equal torchvision's for every image (tested)
        if self.rounding == "floor":
            return max(1, math.floor(height * scale)), max(1, math.floor(width * scale))
        return max(1, round(height * scale)), max(1, round(width * scale))

    def apply(self, img: np.ndarray, scale: float, **params: Any) -> np.ndarray:
        return fgeometric.resize(img, self._new_size(*img.shape[:2], scale), interpolation=self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, scale: float, **params: Any) -> np.ndarray:
        return fgeometric.resize(mask, self._new_size(*mask.shape[:2], scale), interpolation=self.mask_interpolation)

    def get_params_dependent_on_data(self, params: Dict[str, Any], data: Dict[str, Any]) -> Dict[str, Any]:
        h, w = params["shape"][:2]
        short = self.py_random.choice(self.max_size) if isinstance(self.max_size, (list, tuple)) else self.max_size
        scale = min(short / min(h, w), self.max_longer / max(h, w))
        return {"scale": scale}


def build_augmentation(
    is_train: bool,
    min_size_train: Sequence[int] = (640, 672, 704, 736, 768, 800),
    min_size_test: int = 800,
    max_size: int = 1333,
    flip_prob: float = 0.5,
    lsj: bool = False,
    lsj_size: int = 1024,
    lsj_scale: Tuple[float, float] = (0.1, 2.0),
    resize_rounding: str = "round",
) -> A.Compose:
    """The albumentations pipeline, with boxes in pascal_voc (xyxy absolute) and an `ann_index` field."""
    if not is_train:
        ops = [ResizeShortestEdge(int(min_size_test), max_size, rounding=resize_rounding)]
    elif lsj:
        lo, hi = lsj_scale
        if not 0 < lo <= hi:
            raise ValueError(f"lsj_scale must be (low, high) with 0 < low <= high, got {tuple(lsj_scale)}")
        ops = [
            A.LongestMaxSize(max_size=lsj_size),
            A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), p=1.0),
            A.PadIfNeeded(lsj_size, lsj_size, position="top_left", border_mode=0, fill=0, fill_mask=0),
            A.RandomCrop(lsj_size, lsj_size),
        ]
    else:
        sizes = [int(s) for s in (min_size_train if isinstance(min_size_train, (list, tuple)) else [min_size_train])]
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"min_size_train must be positive sizes, got {min_size_train!r}")
        ops = [ResizeShortestEdge(sizes, max_size, rounding=resize_rounding)]
    if is_train and flip_prob > 0:
        ops.append(A.HorizontalFlip(p=flip_prob))
    return A.Compose(
        ops,
        # clip: rounding in resizes can push a coordinate a hair outside; min_area drops boxes a crop
        # cut down to nothing (their masks go with them, through ann_index)
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["ann_index"], clip=True, min_area=1.0),
    )


def annotations_to_masks(annotations: List[dict], height: int, width: int) -> np.ndarray:
    """[N, H, W] uint8 masks from polygons or RLE (pycocotools rasterises; nothing to write by hand)."""
    from pycocotools import mask as mask_util

    masks = np.zeros((len(annotations), height, width), dtype=np.uint8)
    for i, ann in enumerate(annotations):
        segm = ann.get("segmentation")
        if not segm:
            # a box-shaped mask would teach the wrong mask without a word; the loaders leave such
            # instances out or stop at start-up (DATASETS.INSTANCES_WITHOUT_MASK), so this is a record
            # built elsewhere
            raise ValueError(f"annotation {ann.get('id', '#' + str(i))} has no segmentation, and masks are being "
                             "made (MODEL.MASK_ON); see DATASETS.INSTANCES_WITHOUT_MASK")
        if isinstance(segm, list):
            rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
        elif isinstance(segm["counts"], list):
            rle = mask_util.frPyObjects(segm, height, width)
        else:
            rle = segm
        masks[i] = mask_util.decode(rle)
    return masks


class DetectionMapper:
    """Dataset dict -> (image tensor, target dict). Plain keyword arguments; `from_config` maps keys."""

    def __init__(self, is_train: bool, mask_on: bool = True, augmentation: Optional[A.Compose] = None, **aug_kwargs):
        self.is_train = is_train
        self.mask_on = mask_on
        self.augmentation = augmentation if augmentation is not None else build_augmentation(is_train, **aug_kwargs)

    @classmethod
    def from_config(cls, cfg, is_train: bool) -> Dict[str, Any]:
        return {
            "is_train": is_train,
            "mask_on": bool(cfg.MODEL.MASK_ON),
            "min_size_train": tuple(cfg.INPUT.MIN_SIZE_TRAIN),
            "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
            "max_size": cfg.INPUT.MAX_SIZE_TRAIN if is_train else cfg.INPUT.MAX_SIZE_TEST,
            "flip_prob": cfg.INPUT.RANDOM_FLIP_PROB,
            "lsj": cfg.INPUT.LSJ.ENABLED,
            "lsj_size": cfg.INPUT.LSJ.IMAGE_SIZE,
            "lsj_scale": tuple(cfg.INPUT.LSJ.SCALE_RANGE),
            "resize_rounding": cfg.INPUT.RESIZE_ROUNDING,
        }

    def __call__(self, record: dict) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        h, w = record["height"], record["width"]
        image = read_image(record["file_name"], width=w, height=h)
        anns = [a for a in record.get("annotations", []) if not (self.is_train and a.get("iscrowd", 0))]
        if not self.is_train:
            anns = []  # the evaluator reads ground truth from the JSON; the model needs none at test time
        data: Dict[str, Any] = {"image": image, "bboxes": np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4),
                                "ann_index": list(range(len(anns)))}
        if self.mask_on and anns:
            data["masks"] = annotations_to_masks(anns, h, w)
        out = self.augmentation(**data)

        img = torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1).float()
        target: Dict[str, torch.Tensor] = {
            "image_id": torch.tensor(record["image_id"], dtype=torch.int64),
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
        }
        if self.is_train:
            keep = [int(i) for i in out["ann_index"]]
            target["boxes"] = torch.as_tensor(np.asarray(out["bboxes"], np.float32).reshape(-1, 4))
            target["labels"] = torch.tensor([anns[i]["category_id"] for i in keep], dtype=torch.int64)
            if self.mask_on:
                if anns:
                    masks = np.asarray(out["masks"])[keep] if keep else np.zeros((0, *img.shape[1:]), np.uint8)
                else:
                    masks = np.zeros((0, *img.shape[1:]), np.uint8)
                target["masks"] = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8))
        return img, target
