"""Detection augmentation with albumentations: image, boxes and masks transformed together.

`DetectionMapper` turns one dataset dict (resdet/data/coco.py) into what the model takes: a CHW float32
tensor (0-255, RGB) and a target dict `boxes` [N,4] float32 xyxy, `labels` [N] int64 in 1..K, `masks`
[N,H,W] uint8 (with masks on), plus `image_id` and `orig_size` (original [height, width]).

Training: shorter side resized to a size drawn from `min_size_train` (longer side capped at `max_size`),
horizontal flip; or large-scale jitter (Ghiasi et al. 2021, as Detectron2's new baselines): one resize to
fit `lsj_size` x `lsj_size` times a random scale in `lsj_scale`, a random `lsj_size` square crop with
bottom/right padding (every image exactly that size), flip, and boxes recomputed from the cropped masks.
Test: shorter side to `min_size_test`.
Crowd regions never reach the model in training (they are for the evaluator). Boxes that a crop or
scale leaves with no area are dropped together with their masks (albumentations tells which survive
through the `ann_index` label field).

Masks are built where they are cheapest. With the shortest-edge resize and flip (the default training
pipeline), albumentations transforms only the image and boxes, and the masks of the instances that
survive are then rasterised from their polygons directly at the output size (`instance_masks_at`:
pycocotools' rasteriser on the scaled polygons, inside each instance's box only), instead of
rasterising every instance at full size and resizing N full-size masks. RLE masks are decoded once and
resized with nearest neighbour as before. Other pipelines (LSJ, a custom `augmentation`) still move
full-size masks through albumentations. At COCO scale this makes the whole mapper several times faster
(resdet/benchmarks/loader_coco.py); the masks agree with the full-size-then-resize ones except at
instance boundaries (tests/data/test_fast_masks.py).

Resize backend (INPUT.RESIZE_BACKEND): "opencv" resizes the uint8 image with cv2 (fast); "torch" does
what torchvision's GeneralizedRCNNTransform does inside its model: bilinear `F.interpolate` (no
antialias, align_corners False) of the float 0-1 image, with `scale_factor` and
`recompute_scale_factor=True` (sizes floored) under RESIZE_ROUNDING "floor", giving a float image that is
never rounded back to uint8 (scaled to 0-255 for our model). Converted torchvision weights then see
torchvision's pixels exactly.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import resdet  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations is imported)
import albumentations as A  # noqa: E402
from albumentations.augmentations.geometric import functional as fgeometric  # noqa: E402

from .jpeg import read_image_fast

__all__ = ["ResizeShortestEdge", "ResizeScale", "build_augmentation", "mask_boxes", "DetectionMapper", "annotations_to_masks", "instance_masks_at",
           "RESIZE_BACKENDS"]

RESIZE_BACKENDS = ("opencv", "torch")


class ResizeShortestEdge(A.SmallestMaxSize):
    """Shorter side to `max_size` (one drawn at random if a list), unless the longer side would then
    exceed `max_longer`, in which case the longer side becomes `max_longer` (Detectron2's and
    torchvision's rule). albumentations has the two halves (SmallestMaxSize, LongestMaxSize) but not the
    capped combination, and chaining them would upscale small images to the cap."""

    def __init__(self, max_size, max_longer: int = 1333, rounding: str = "round", backend: str = "opencv", **kwargs):
        super().__init__(max_size=max_size, **kwargs)
        if max_longer <= 0:
            raise ValueError(f"max_longer must be positive, got {max_longer}")
        if rounding not in ("round", "floor"):
            raise ValueError(f"INPUT.RESIZE_ROUNDING must be 'round' or 'floor', got {rounding!r}")
        if backend not in RESIZE_BACKENDS:
            raise ValueError(f"INPUT.RESIZE_BACKEND must be one of {RESIZE_BACKENDS}, got {backend!r}")
        self.max_longer = int(max_longer)
        self.rounding = rounding
        self.backend = backend

    def _new_size(self, height: int, width: int, scale: float) -> Tuple[int, int]:
        # "round": Detectron2 (and albumentations); "floor": torchvision's GeneralizedRCNNTransform, whose
        # interpolate(scale_factor=s, recompute_scale_factor=True) gives floor(side * s) in double
        # precision; with "floor" our sizes equal torchvision's for every image (tested)
        if self.rounding == "floor":
            return max(1, math.floor(height * scale)), max(1, math.floor(width * scale))
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _interpolate(self, x: torch.Tensor, scale: float, mode: str) -> torch.Tensor:
        """[C, H, W] float -> [C, H', W'] by F.interpolate, called as GeneralizedRCNNTransform calls it."""
        import torch.nn.functional as F

        kwargs = {} if mode == "nearest" else {"align_corners": False}
        if self.rounding == "floor":  # torchvision's call: sizes floor(side * scale), weights from those sizes
            return F.interpolate(x[None], scale_factor=scale, mode=mode, recompute_scale_factor=True, **kwargs)[0]
        return F.interpolate(x[None], size=self._new_size(x.shape[-2], x.shape[-1], scale), mode=mode, **kwargs)[0]

    def apply(self, img: np.ndarray, scale: float, **params: Any) -> np.ndarray:
        if self.backend == "torch":
            if img.dtype != np.uint8 or img.ndim != 3:
                raise ValueError(f"INPUT.RESIZE_BACKEND 'torch' resizes HxWxC uint8 images (as decoded); "
                                 f"got {img.shape} {img.dtype}")
            # torchvision's arithmetic: ToTensor's 0-1 image (contiguous CHW), bilinear; then 0-255 for our
            # model as float32, never rounded back to uint8
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous().float().div(255)
            return self._interpolate(x, scale, "bilinear").mul_(255).permute(1, 2, 0).contiguous().numpy()
        return fgeometric.resize(img, self._new_size(*img.shape[:2], scale), interpolation=self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, scale: float, **params: Any) -> np.ndarray:
        if self.backend == "torch":  # nearest on float, as torchvision's model resizes target masks
            x = torch.from_numpy(np.ascontiguousarray(mask))
            x = (x[None] if x.dim() == 2 else x.permute(2, 0, 1)).float()
            out = self._interpolate(x, scale, "nearest").byte()
            out = out[0] if mask.ndim == 2 else out.permute(1, 2, 0).contiguous()
            return out.numpy().astype(mask.dtype, copy=False)
        return fgeometric.resize(mask, self._new_size(*mask.shape[:2], scale), interpolation=self.mask_interpolation)

    def get_params_dependent_on_data(self, params: Dict[str, Any], data: Dict[str, Any]) -> Dict[str, Any]:
        h, w = params["shape"][:2]
        short = self.py_random.choice(self.max_size) if isinstance(self.max_size, (list, tuple)) else self.max_size
        scale = min(short / min(h, w), self.max_longer / max(h, w))
        return {"scale": scale}


class ResizeScale(ResizeShortestEdge):
    """Large-scale jitter's resize (Detectron2's ResizeScale, after the TPU detection models'
    resize_and_crop_image): the image is scaled to fit a `target` x `target` square times a factor drawn
    uniformly from `scale_range`, aspect ratio kept, in one resize (a fit to the square followed by a
    random scale would resample twice). Sides are rounded as RESIZE_ROUNDING says (Detectron2: round)."""

    def __init__(self, target: int, scale_range: Tuple[float, float], rounding: str = "round", **kwargs):
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"lsj_scale must be (low, high) with 0 < low <= high, got {tuple(scale_range)}")
        if target <= 0:
            raise ValueError(f"lsj_size must be positive, got {target}")
        super().__init__(max_size=int(target), max_longer=int(target), rounding=rounding, backend="opencv", **kwargs)
        self.target, self.scale_range = int(target), (lo, hi)

    def get_params_dependent_on_data(self, params: Dict[str, Any], data: Dict[str, Any]) -> Dict[str, Any]:
        h, w = params["shape"][:2]
        return {"scale": self.py_random.uniform(*self.scale_range) * self.target / max(h, w)}


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
    resize_backend: str = "opencv",
    lsj_pad_value: float = 128.0,
) -> A.Compose:
    """The albumentations pipeline, with boxes in pascal_voc (xyxy absolute) and an `ann_index` field.
    It records what it applied (`save_applied_params`): the mapper reads whether an image was flipped.

    Large-scale jitter is Detectron2's new-baselines pipeline: `ResizeScale` (fit to lsj_size x lsj_size
    times a factor from lsj_scale), then its FixedSizeCrop, which albumentations' RandomCrop with padding
    is: a random lsj_size x lsj_size window where the image is larger, padding at the bottom and right
    (pixels `lsj_pad_value`, Detectron2's 128; masks 0) where it is smaller, so every training image is
    exactly lsj_size x lsj_size; then the flip."""
    if not is_train:
        ops = [ResizeShortestEdge(int(min_size_test), max_size, rounding=resize_rounding, backend=resize_backend)]
    elif lsj:
        ops = [
            ResizeScale(lsj_size, lsj_scale, rounding=resize_rounding),
            A.RandomCrop(lsj_size, lsj_size, pad_if_needed=True, pad_position="top_left", border_mode=0,
                         fill=float(lsj_pad_value), fill_mask=0),
        ]
    else:
        sizes = [int(s) for s in (min_size_train if isinstance(min_size_train, (list, tuple)) else [min_size_train])]
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"min_size_train must be positive sizes, got {min_size_train!r}")
        ops = [ResizeShortestEdge(sizes, max_size, rounding=resize_rounding, backend=resize_backend)]
    if is_train and flip_prob > 0:
        ops.append(A.HorizontalFlip(p=flip_prob))
    return A.Compose(
        ops,
        # clip: rounding in resizes can push a coordinate a hair outside; min_area drops boxes a crop
        # cut down to nothing (their masks go with them, through ann_index)
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["ann_index"], clip=True, min_area=1.0),
        save_applied_params=True,
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


def _polygon_parts(ann: dict, width: int, height: int) -> Optional[List[np.ndarray]]:
    """The polygons of `ann` as [K, 2] float64 arrays, or None where the fast path must not be taken: an
    RLE or no segmentation, a part of fewer than 3 points, or a coordinate far outside the image (such
    annotations go through `annotations_to_masks`, which decides what happens to them)."""
    segm = ann.get("segmentation")
    if not isinstance(segm, list) or not segm:
        return None
    parts = []
    for poly in segm:
        if not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2:
            return None
        parts.append(np.asarray(poly, dtype=np.float64).reshape(-1, 2))
    pts = np.concatenate(parts)
    if not (np.isfinite(pts).all() and pts[:, 0].min() >= -width and pts[:, 0].max() <= 2 * width
            and pts[:, 1].min() >= -height and pts[:, 1].max() <= 2 * height):
        return None
    return parts


def instance_masks_at(annotations: List[dict], height: int, width: int, out_height: int, out_width: int,
                      hflip: bool = False) -> np.ndarray:
    """[N, out_height, out_width] uint8 masks of `annotations` (given at `height` x `width`) after the image
    was resized to `out_height` x `out_width` (each axis scaled by out/in) and, with `hflip`, mirrored.

    Polygons are scaled and rasterised by pycocotools at the output size, each inside its own box (the
    rasteriser only touches that block; the result equals rasterising the whole image at the output size,
    tested), and mirrored by writing the block reversed: the masks `annotations_to_masks` + resize + flip
    would give, up to the resolution they are rasterised at (boundary pixels only, tested). RLE masks
    (and polygons of under 3 points or far outside the image) are made at full size by
    `annotations_to_masks` and resized with nearest neighbour as the albumentations path does; an
    instance with no segmentation at all is an error there (the loaders stop, or leave it out, first:
    DATASETS.INSTANCES_WITHOUT_MASK), never a box-shaped mask.
    """
    import cv2
    from pycocotools import mask as mask_util

    masks = np.zeros((len(annotations), out_height, out_width), dtype=np.uint8)
    sx, sy = out_width / width, out_height / height
    for i, ann in enumerate(annotations):
        parts = _polygon_parts(ann, width, height)
        if parts is None:
            full = annotations_to_masks([ann], height, width)[0]
            m = cv2.resize(full, (out_width, out_height), interpolation=cv2.INTER_NEAREST)
            masks[i] = m[:, ::-1] if hflip else m
            continue
        parts = [p * (sx, sy) for p in parts]
        pts = np.concatenate(parts)
        # the block the polygon can reach: pycocotools sets pixel x when x + 0.5 lies inside, so nothing
        # beyond floor(min x) .. ceil(max x) is touched; a pixel of margin on each side costs nothing
        x0 = min(max(int(math.floor(pts[:, 0].min())) - 1, 0), out_width)
        y0 = min(max(int(math.floor(pts[:, 1].min())) - 1, 0), out_height)
        x1 = max(min(int(math.ceil(pts[:, 0].max())) + 2, out_width), x0)
        y1 = max(min(int(math.ceil(pts[:, 1].max())) + 2, out_height), y0)
        if x1 == x0 or y1 == y0:
            continue
        # integer offsets keep pycocotools' sub-pixel grid (it works on coordinates x 5, rounded) unchanged
        rles = mask_util.frPyObjects([(p - (x0, y0)).ravel().tolist() for p in parts], y1 - y0, x1 - x0)
        block = mask_util.decode(mask_util.merge(rles) if len(rles) > 1 else rles[0])
        if hflip:
            masks[i, y0:y1, out_width - x1:out_width - x0] = block[:, ::-1]
        else:
            masks[i, y0:y1, x0:x1] = block
    return masks


class DetectionMapper:
    """Dataset dict -> (image tensor, target dict). Plain keyword arguments; `from_config` maps keys."""

    # pipelines of these alone only scale and mirror: masks can be made afterwards at the output size
    _SCALE_AND_FLIP = (ResizeShortestEdge, A.HorizontalFlip)

    def __init__(self, is_train: bool, mask_on: bool = True, augmentation: Optional[A.Compose] = None,
                 recompute_boxes: bool = False, **aug_kwargs):
        self.is_train = is_train
        self.mask_on = mask_on
        # boxes from the augmented masks (Detectron2's recompute_boxes, set with LSJ): a crop clips a box to
        # the window, but the object's visible part can be much smaller than the clipped box
        self.recompute_boxes = recompute_boxes
        self.augmentation = augmentation if augmentation is not None else build_augmentation(is_train, **aug_kwargs)
        self.masks_after_augmentation = bool(getattr(self.augmentation, "save_applied_params", False)) and all(
            isinstance(t, self._SCALE_AND_FLIP) for t in self.augmentation.transforms)

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
            "resize_backend": cfg.INPUT.RESIZE_BACKEND,
            "lsj_pad_value": cfg.INPUT.LSJ.PAD_VALUE,
            "recompute_boxes": bool(cfg.INPUT.LSJ.ENABLED and cfg.INPUT.LSJ.RECOMPUTE_BOXES and cfg.MODEL.MASK_ON),
        }

    def __call__(self, record: dict) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        h, w = record["height"], record["width"]
        image = read_image_fast(record["file_name"], width=w, height=h)
        anns = [a for a in record.get("annotations", []) if not (self.is_train and a.get("iscrowd", 0))]
        if not self.is_train:
            anns = []  # the evaluator reads ground truth from the JSON; the model needs none at test time
        data: Dict[str, Any] = {"image": image, "bboxes": np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4),
                                "ann_index": list(range(len(anns)))}
        masks_later = self.masks_after_augmentation
        if self.mask_on and anns and not masks_later:
            data["masks"] = annotations_to_masks(anns, h, w)
        out = self.augmentation(**data)

        # float, then permute: one contiguous pass (measured 1.5x faster than permute-then-float); the
        # CHW view keeps the HWC memory order, which the model accepts
        img = torch.from_numpy(np.ascontiguousarray(out["image"])).float().permute(2, 0, 1)
        target: Dict[str, torch.Tensor] = {
            "image_id": torch.tensor(record["image_id"], dtype=torch.int64),
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
        }
        if self.is_train:
            keep = [int(i) for i in out["ann_index"]]
            target["boxes"] = torch.as_tensor(np.asarray(out["bboxes"], np.float32).reshape(-1, 4))
            target["labels"] = torch.tensor([anns[i]["category_id"] for i in keep], dtype=torch.int64)
            if self.mask_on:
                out_h, out_w = img.shape[1:]
                if masks_later:  # only the instances that survived, straight at the output size
                    flipped = any(name == "HorizontalFlip" for name, _ in out["applied_transforms"])
                    masks = instance_masks_at([anns[i] for i in keep], h, w, out_h, out_w, hflip=flipped)
                elif anns and keep:
                    masks = np.asarray(out["masks"])[keep]
                else:
                    masks = np.zeros((0, out_h, out_w), np.uint8)
                if self.recompute_boxes and not masks_later:
                    boxes, nonempty = mask_boxes(masks)
                    target["boxes"], masks = torch.from_numpy(boxes[nonempty]), masks[nonempty]
                    target["labels"] = target["labels"][torch.from_numpy(nonempty)]
                target["masks"] = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8))
        return img, target


def mask_boxes(masks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The tight boxes [N, 4] float32 (xyxy, pixel edges: a one-pixel mask at (x, y) is (x, y, x+1, y+1)) of
    masks [N, H, W], and which masks have any pixel ([N] bool; their boxes are zeros)."""
    cols, rows = masks.any(axis=1), masks.any(axis=2)  # [N, W], [N, H]
    nonempty = cols.any(axis=1)
    w, h = cols.shape[1], rows.shape[1]
    x0, y0 = cols.argmax(axis=1), rows.argmax(axis=1)
    x1, y1 = w - cols[:, ::-1].argmax(axis=1), h - rows[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.float32) * nonempty[:, None]
    return boxes, nonempty
