"""`tools/benchmark.py --loader coco`: our detection training mapper against torchvision's reference COCO
pipeline, on the same COCO-format images, in the same run.

What is timed, per image, from the file on disk to what a Mask R-CNN training step takes:
- resdet: `DetectionMapper(is_train=True)` with the default config's augmentation (shorter side drawn
  from 640-800, longer at most 1333, horizontal flip with p 0.5, polygon masks), giving a CHW float
  0-255 image and `boxes`, `labels`, `masks` [N, H, W] uint8 at the resized size.
- torchvision: its detection reference recipe (torchvision/references/detection): `CocoDetection` reads
  the image with PIL, `ConvertCocoPolysToMask` turns the annotations into boxes, labels and full-size
  masks (pycocotools), `RandomHorizontalFlip(0.5)`, `ToTensor`; then the resize that torchvision's model
  does inside `GeneralizedRCNNTransform` (image bilinear, masks nearest, boxes scaled; shorter side from
  the same 640-800, longer at most 1333), counted here on the CPU because ours happens in the loader.
  Normalisation and batching are left out of both (our model normalises on the device as well).
The reference recipe lives in torchvision's repository, not in its package, so it is written here from
its description.

With `workers=0` everything runs in this process on one core (torch and OpenCV limited to one thread);
with N workers, DataLoaders of N worker processes (the rate is then "in total"). The two pipelines take
turns over the same images (image by image per core, round by round with workers), so that load from
other programs falls on both alike.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
import torch

__all__ = ["TorchvisionCocoReference", "time_coco_loaders", "time_coco_loaders_detailed"]

# The default training augmentation (resdet/config/defaults.py INPUT, torchvision's reference recipe
# with min_size 640-800 as in its multi-scale variant).
_MIN_SIZES = (640, 672, 704, 736, 768, 800)
_MAX_SIZE = 1333


class TorchvisionCocoReference(torch.utils.data.Dataset):
    """torchvision's reference detection training input, image by image: CocoDetection (PIL) ->
    ConvertCocoPolysToMask -> RandomHorizontalFlip(0.5) -> ToTensor -> GeneralizedRCNNTransform.resize."""

    def __init__(self, image_dir: str, json_file: str, min_size=_MIN_SIZES, max_size: int = _MAX_SIZE):
        import contextlib
        import io

        from torchvision.datasets import CocoDetection
        from torchvision.models.detection.transform import GeneralizedRCNNTransform

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints while indexing
            self.coco = CocoDetection(image_dir, json_file)
        # the model's transform, in training mode (a shorter side drawn per image); mean/std unused here
        self.resize = GeneralizedRCNNTransform(min_size, max_size, [0.0] * 3, [1.0] * 3).train()

    def __len__(self) -> int:
        return len(self.coco)

    @staticmethod
    def _polygons_to_masks(segmentations, height: int, width: int) -> torch.Tensor:
        from pycocotools import mask as mask_util

        masks = []
        for polygons in segmentations:
            rles = mask_util.frPyObjects(polygons, height, width)
            m = mask_util.decode(rles)
            if m.ndim < 3:
                m = m[..., None]
            masks.append(torch.as_tensor(m, dtype=torch.uint8).any(dim=2))
        if not masks:
            return torch.zeros((0, height, width), dtype=torch.uint8)
        return torch.stack(masks).to(torch.uint8)

    def _convert(self, image, anns):
        """ConvertCocoPolysToMask: crowds out, xywh -> xyxy clamped to the image, masks, empty boxes out."""
        w, h = image.size
        anns = [a for a in anns if a.get("iscrowd", 0) == 0]
        boxes = torch.as_tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(min=0, max=w)
        boxes[:, 1::2].clamp_(min=0, max=h)
        labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        masks = self._polygons_to_masks([a["segmentation"] for a in anns], h, w)
        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
        return {"boxes": boxes[keep], "labels": labels[keep], "masks": masks[keep]}

    def __getitem__(self, index: int):
        import torchvision.transforms.functional as F

        image, anns = self.coco[index]
        target = self._convert(image, anns)
        if torch.rand(1) < 0.5:  # RandomHorizontalFlip(0.5)
            image = F.hflip(image)
            width = image.size[0]
            target["boxes"][:, [0, 2]] = width - target["boxes"][:, [2, 0]]
            target["masks"] = target["masks"].flip(-1)
        image = F.to_tensor(image)
        return self.resize.resize(image, target)


def _collate(batch):
    return tuple(zip(*batch))


def _rate(dataset, indices: List[int], workers: int) -> float:
    """Images per second over `indices`; with workers, timed from the first image (start-up left out)."""
    if workers == 0:
        start = time.perf_counter()
        for i in indices:
            dataset[i]
        return len(indices) / (time.perf_counter() - start)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=1,
                                         num_workers=workers, collate_fn=_collate, prefetch_factor=4)
    it = iter(loader)
    next(it)
    start, count = time.perf_counter(), 0
    for _ in it:
        count += 1
    return count / (time.perf_counter() - start)


def time_coco_loaders_detailed(data_dir: Optional[str], n: int = 500, workers: int = 0, rounds: int = 5,
                               image_dir: Optional[str] = None) -> Dict[str, object]:
    """Like `time_coco_loaders`, plus "ratio" and each round's rates ("resdet_rounds",
    "torchvision_rounds": per core, consecutive fifths of the images; with workers, one DataLoader per
    side and round)."""
    import cv2

    from resdet.data.coco import load_coco_json
    from resdet.data.loader import MappedDataset
    from resdet.data.transforms import DetectionMapper

    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="resdet_bench_coco_")
        from .coco_data import write_coco_style_dataset

        data_dir = write_coco_style_dataset(tmp.name, min(n, 200), seed=0)
    try:
        json_file = os.path.join(data_dir, "annotations.json")
        if not os.path.isfile(json_file):
            raise FileNotFoundError(f"--data {data_dir!r} is not a COCO-format dataset: no annotations.json in it")
        image_dir = image_dir or (os.path.join(data_dir, "images") if os.path.isdir(os.path.join(data_dir, "images"))
                                  else data_dir)
        threads = torch.get_num_threads(), cv2.getNumThreads()
        # one thread for every library that would otherwise use more: per core with workers=0, and one core
        # per worker with workers (forked workers inherit OpenCV's setting; DataLoader sets torch's). Never
        # cv2.setNumThreads inside a forked worker: it waits forever on the parent's thread pool.
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        try:
            records, _ = load_coco_json(json_file, image_dir, filter_empty=True)
            ours = MappedDataset(records, DetectionMapper(is_train=True, min_size_train=_MIN_SIZES, max_size=_MAX_SIZE))
            theirs = TorchvisionCocoReference(image_dir, json_file)
            # the same images on both sides: the reference indexes all images, ours the annotated ones
            position = {img_id: k for k, img_id in enumerate(theirs.coco.ids)}
            pairs = [(k, position[r["image_id"]]) for k, r in enumerate(records)]
            if not pairs:
                raise ValueError(f"{json_file} has no image with annotations to train on")
            pairs = [pairs[i % len(pairs)] for i in range(max(n, 2))]
            # rounds of at least 2 images per worker and side (with workers the first image is start-up)
            rounds = max(1, min(rounds, len(pairs) // (2 * max(workers, 1))))
            if workers and len(pairs) // rounds < 2 * workers:
                pairs = pairs * 2
            chunks = np.array_split(np.arange(len(pairs)), rounds)
            _rate(ours, [pairs[0][0]], 0), _rate(theirs, [pairs[0][1]], 0)  # warm caches and lazy imports
            rates: Dict[str, List[float]] = {"resdet": [], "torchvision": []}
            if workers == 0:
                # image by image, taking turns (who goes first alternates too): both sides meet the same
                # load from other programs and the same page cache; rates are images / summed time
                seconds = np.zeros((len(pairs), 2))
                for i, pair in enumerate(pairs):
                    for col in ((0, 1) if i % 2 == 0 else (1, 0)):
                        start = time.perf_counter()
                        (ours, theirs)[col][pair[col]]
                        seconds[i, col] = time.perf_counter() - start
                for chunk in chunks:
                    rates["resdet"].append(float(len(chunk) / seconds[chunk, 0].sum()))
                    rates["torchvision"].append(float(len(chunk) / seconds[chunk, 1].sum()))
                ours_rate, tv_rate = float(len(pairs) / seconds[:, 0].sum()), float(len(pairs) / seconds[:, 1].sum())
            else:
                for r, chunk in enumerate(chunks):
                    # a DataLoader per side and round, taking turns; rates are medians over the rounds
                    order = ("resdet", "torchvision") if r % 2 == 0 else ("torchvision", "resdet")
                    for side in order:
                        ds, col = (ours, 0) if side == "resdet" else (theirs, 1)
                        rates[side].append(_rate(ds, [pairs[i][col] for i in chunk], workers))
                ours_rate, tv_rate = float(np.median(rates["resdet"])), float(np.median(rates["torchvision"]))
        finally:
            torch.set_num_threads(threads[0])
            cv2.setNumThreads(threads[1])
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {"resdet": ours_rate, "torchvision": tv_rate, "ratio": ours_rate / tv_rate,
            "resdet_rounds": rates["resdet"], "torchvision_rounds": rates["torchvision"], "workers": workers,
            "images": len(pairs)}


def time_coco_loaders(data_dir: Optional[str], n: int = 500, workers: int = 0) -> Dict[str, float]:
    """Training images per second of our mapper and of torchvision's reference pipeline on the COCO-format
    dataset in `data_dir` (`annotations.json` plus the images, in `images/` or beside it; a generated one
    of real photographs when None): {"resdet": img/s, "torchvision": img/s}, per core with `workers=0`,
    in total with N worker processes. The two take turns image by image (per core) or round by round
    (with workers), on the same images."""
    out = time_coco_loaders_detailed(data_dir, n, workers)
    return {"resdet": out["resdet"], "torchvision": out["torchvision"]}
