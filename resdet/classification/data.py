"""Config -> classification training batches and evaluation sets.

Two paths, picked by CLS.DATA.IN_MEMORY:
- in memory (CIFAR): the dataset is decoded once into uint8 tensors on MODEL.DEVICE; training batches
  are gathered and pad-crop-flipped there (`resdet.data.folders.DeviceBatches`); evaluation slices the
  tensors. No worker processes, no host-to-device copies per step.
- streaming (ImageNet-sized): an ImageFolderDataset read by DataLoader workers. For the "scale" and "rrc"
  augmentations (CLS.DATA.DECODE "cpu", the default) the workers decode each JPEG at the smallest DCT scale
  the sampled crop allows and hand over uint8 channels_last batches (`decode_crop.py`); with "gpu" they
  only read bytes and sample crop boxes, and the batches are decoded on the device (`gpu_decode.py`);
  in both cases `DeviceInput` moves the batch to the device and applies the PCA colour augmentation
  there. "pil" (and any RANDAUGMENT or "pad_crop_flip") runs the per-image PIL transforms of
  `transforms.py`. Evaluation always uses those (resize + centre/ten crops, torchvision's semantics).

Both draw training indices from the engine's InfiniteSampler started at `start_iter * global batch`, so a
resumed run continues with the same data order, and N processes see what one process with the N-times
batch would see.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Subset
from torchvision.transforms.v2 import functional as TF

from resdet.data.folders import (ImageFolderDataset, MissingDatasetError, DeviceBatches, cifar10_class_names,
                                 dataset_format, decode_image_folder, iterate_in_order, load_cifar10_python,
                                 mean_image, resolve_dataset_root, split_holdout)
from resdet.data.samplers import InfiniteSampler

from .crops import CropSampler
from .decode_crop import ColorJitterUint8, DecodeCrop, collate_channels_last
from .device_input import DeviceInput
from .gpu_decode import ReadEncoded, collate_encoded
from .ten_crop import ten_crop
from .transforms import transforms_from_config

__all__ = ["ClassificationData", "build_classification_data"]

Batches = Iterable[Tuple[torch.Tensor, torch.Tensor]]

logger = logging.getLogger(__name__)


@dataclass
class ClassificationData:
    """What training needs from the data: batches from a given iteration on, and named evaluation sets."""

    num_classes: int
    class_names: List[str]
    num_train: int
    train_batches: Callable[[int], Batches]            # start_iter -> endless (images, labels)
    eval_sets: Dict[str, Callable[[], Batches]] = field(default_factory=dict)  # name -> one pass
    mean_image: Optional[torch.Tensor] = None            # [C, H, W] with CLS.DATA.PER_PIXEL_MEAN


def _fixed_subset(n: int, limit: int) -> torch.Tensor:
    """The first `limit` of a fixed-seed permutation of range(n) (sorted), or all of it."""
    if limit <= 0 or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(1))[:limit].sort().values


def _cifar_class_names(root: str) -> List[str]:
    # batches.meta goes through the restricted unpickler (a refused file is an error, not a fallback)
    return cifar10_class_names(root) or [str(i) for i in range(10)]


def _check_classes(cfg, n: int, where: str) -> None:
    if n != cfg.MODEL.CLASSIFIER.NUM_CLASSES:
        raise ValueError(f"The data at '{where}' has {n} classes but MODEL.CLASSIFIER.NUM_CLASSES is "
                         f"{cfg.MODEL.CLASSIFIER.NUM_CLASSES}; set it to {n}")


def _per_rank_batch(cfg, world_size: int) -> int:
    total = cfg.SOLVER.IMS_PER_BATCH
    if total % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={total} must be divisible by the number of processes ({world_size})")
    return total // world_size


def build_classification_data(cfg, device: torch.device, rank: int = 0, world_size: int = 1) -> ClassificationData:
    root = resolve_dataset_root(cfg.CLS.DATA.NAME, cfg.CLS.DATA.ROOT)
    if not os.path.isdir(root):
        raise MissingDatasetError(
            f"Dataset '{cfg.CLS.DATA.NAME}' not found: '{root}' does not exist (from CLS.DATA.ROOT, or "
            f"$RESDET_DATASETS/<CLS.DATA.NAME>). See datasets/README.md for how to prepare it."
        )
    if cfg.CLS.DATA.IN_MEMORY:
        return _in_memory(cfg, root, device, rank, world_size)
    if cfg.CLS.DATA.PER_PIXEL_MEAN:
        raise ValueError("CLS.DATA.PER_PIXEL_MEAN needs CLS.DATA.IN_MEMORY True (fixed-size images decoded "
                         "once); streamed images are normalised with the per-channel MODEL.PIXEL_MEAN")
    return _streaming(cfg, root, device, rank, world_size)


def _in_memory(cfg, root: str, device, rank: int, world_size: int) -> ClassificationData:
    if cfg.CLS.INPUT.TRAIN_AUG != "pad_crop_flip":
        raise ValueError("CLS.DATA.IN_MEMORY supports CLS.INPUT.TRAIN_AUG 'pad_crop_flip' only; "
                         f"got {cfg.CLS.INPUT.TRAIN_AUG!r} (use IN_MEMORY False for per-image transforms)")
    # take_*(indices) -> (uint8 images, labels) of those images; image folders decode only those (TRAIN_LIMIT /
    # TEST_LIMIT runs then skip decoding the rest of a 60k-image JPEG set)
    if dataset_format(root, cfg.CLS.DATA.FORMAT) == "cifar-python":
        all_train = load_cifar10_python(root, train=True)
        all_test = load_cifar10_python(root, train=False)
        names = _cifar_class_names(root)
        n_train, n_test = len(all_train[1]), len(all_test[1])

        def take_train(idx):
            return all_train[0][idx], all_train[1][idx]

        def take_test(idx):
            return all_test[0][idx], all_test[1][idx]
    else:
        train_ds = ImageFolderDataset(root, cfg.CLS.DATA.TRAIN_SPLIT)
        test_ds = ImageFolderDataset(root, cfg.CLS.DATA.TEST_SPLIT)
        if train_ds.classes != test_ds.classes:
            raise ValueError(f"Class folders differ between '{train_ds.root}' and '{test_ds.root}'")
        names = train_ds.classes
        n_train, n_test = len(train_ds), len(test_ds)

        def take_train(idx):
            return _decode_some(train_ds, idx)

        def take_test(idx):
            return _decode_some(test_ds, idx)
    _check_classes(cfg, len(names), root)

    sets: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
    keep = torch.arange(n_train)
    if cfg.CLS.DATA.HOLDOUT:
        keep, held = split_holdout(n_train, cfg.CLS.DATA.HOLDOUT)
        sets["val"] = take_train(held)
    keep = keep[_fixed_subset(len(keep), cfg.CLS.DATA.TRAIN_LIMIT)]
    train_x, train_y = take_train(keep)
    train_x, train_y = train_x.to(device), train_y.to(device)
    sets["test"] = take_test(_fixed_subset(n_test, cfg.CLS.DATA.TEST_LIMIT))
    if cfg.CLS.TEST.TRAIN_SUBSET:
        sub = _fixed_subset(len(train_y), cfg.CLS.TEST.TRAIN_SUBSET).to(device)
        sets["train"] = (train_x[sub], train_y[sub])  # unaugmented, evaluated like the test set
    sets = {k: (x.to(device), y.to(device)) for k, (x, y) in sets.items()}

    batch = _per_rank_batch(cfg, world_size)
    crop = cfg.CLS.INPUT.CROP_SIZE
    mean = None
    if cfg.CLS.DATA.PER_PIXEL_MEAN:
        if tuple(train_x.shape[-2:]) != (crop, crop):
            raise ValueError(f"CLS.DATA.PER_PIXEL_MEAN needs images of CLS.INPUT.CROP_SIZE ({crop}x{crop}); the "
                             f"training images at '{root}' are {tuple(train_x.shape[-2:])}")
        mean = mean_image(train_x)

    def train_batches(start_iter: int) -> Batches:
        sampler = InfiniteSampler(len(train_y), shuffle=True, seed=cfg.SEED, rank=rank, world_size=world_size,
                                  start=start_iter * cfg.SOLVER.IMS_PER_BATCH)
        return DeviceBatches(train_x, train_y, batch, sampler, pad=cfg.CLS.INPUT.PAD, crop=crop,
                             hflip=cfg.CLS.INPUT.HFLIP, pad_value=cfg.MODEL.PIXEL_MEAN if mean is None else mean,
                             seed=cfg.SEED,
                             start_iter=start_iter, rank=rank, world_size=world_size)

    def eval_pass(x: torch.Tensor, y: torch.Tensor) -> Callable[[], Batches]:
        def run():
            for images, labels in iterate_in_order(x, y, cfg.CLS.TEST.BATCH_SIZE, rank, world_size):
                if cfg.CLS.TEST.TEN_CROP:
                    images = ten_crop(images, crop)
                elif images.shape[-1] != crop or images.shape[-2] != crop:
                    images = TF.center_crop(images, [crop, crop])
                yield images, labels
        return run

    return ClassificationData(len(names), list(names), len(train_y), train_batches,
                              {k: eval_pass(x, y) for k, (x, y) in sets.items()}, mean_image=mean)


def _decode_some(dataset: ImageFolderDataset, indices: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """decode_image_folder of only `dataset`'s images at `indices`, in that order."""
    import copy

    if len(indices) == len(dataset) and torch.equal(indices, torch.arange(len(dataset))):
        return decode_image_folder(dataset)
    part = copy.copy(dataset)   # shallow: the same class list, its own sample list
    part.samples = [dataset.samples[i] for i in indices.tolist()]
    part.targets = [s[1] for s in part.samples]
    part.imgs = part.samples
    return decode_image_folder(part)


def _worker_seeder(seed: int, start_iter: int, rank: int):
    # Augmentation randomness in workers depends on (seed, start iteration, rank, worker) only, so a
    # run is repeatable; a resumed run draws fresh (not identical) augmentations for its remaining steps.
    def init(worker_id: int) -> None:
        s = (seed * 1_000_003 + start_iter * 1009 + rank * 101 + worker_id) % (2**32)
        torch.manual_seed(s)
        import random

        import numpy as np

        random.seed(s)
        np.random.seed(s)
    return init


def _fast_train_input(cfg) -> Optional[str]:
    """"cpu" / "gpu" when the streamed training input can decode-and-crop, None for the PIL transforms."""
    i, decode = cfg.CLS.INPUT, cfg.CLS.DATA.DECODE
    if decode not in ("cpu", "gpu", "pil"):
        raise ValueError(f"CLS.DATA.DECODE must be 'cpu', 'gpu' or 'pil'; got {decode!r}")
    if decode == "pil":
        return None
    if i.TRAIN_AUG not in ("scale", "rrc") or i.RANDAUGMENT:
        why = "RANDAUGMENT (timm's, on PIL images)" if i.RANDAUGMENT else f"TRAIN_AUG {i.TRAIN_AUG!r}"
        logger.info("CLS.DATA.DECODE %r: %s needs the per-image PIL transforms; using them", decode, why)
        return None
    if decode == "gpu" and i.COLOR_AUG == "jitter":
        raise ValueError("CLS.DATA.DECODE 'gpu' supports CLS.INPUT.COLOR_AUG 'pca' or '' (ColorJitter is per image "
                         "on the CPU); use DECODE 'cpu' for 'jitter'")
    if i.COLOR_AUG not in ("pca", "jitter", ""):
        raise ValueError(f"CLS.INPUT.COLOR_AUG must be 'pca', 'jitter' or ''; got {i.COLOR_AUG!r}")
    return decode


def _fast_train_dataset(cfg, root: str, decode: str) -> ImageFolderDataset:
    i = cfg.CLS.INPUT
    sampler = CropSampler(i.TRAIN_AUG, i.CROP_SIZE, short_side=i.TRAIN_SHORT_SIDE, hflip=i.HFLIP)
    loader = DecodeCrop(sampler) if decode == "cpu" else ReadEncoded(sampler)
    jitter = ColorJitterUint8(i.COLOR_JITTER) if i.COLOR_AUG == "jitter" else None
    return ImageFolderDataset(root, cfg.CLS.DATA.TRAIN_SPLIT, jitter, skip_bad_images=cfg.DATALOADER.SKIP_BAD_IMAGES,
                              loader=loader)


def _streaming(cfg, root: str, device, rank: int, world_size: int) -> ClassificationData:
    decode = _fast_train_input(cfg)
    if decode is None:
        train_ds = ImageFolderDataset(root, cfg.CLS.DATA.TRAIN_SPLIT, transforms_from_config(cfg, train=True),
                                      skip_bad_images=cfg.DATALOADER.SKIP_BAD_IMAGES)
    else:
        train_ds = _fast_train_dataset(cfg, root, decode)
        if decode == "gpu" and device.type != "cuda":
            logger.warning("CLS.DATA.DECODE 'gpu' on %s: the device decoder runs there (libjpeg-turbo through "
                           "torchvision.io), which is meant for tests; use 'cpu' without a GPU", device)
    test_ds = ImageFolderDataset(root, cfg.CLS.DATA.TEST_SPLIT, transforms_from_config(cfg, train=False))
    if train_ds.classes != test_ds.classes:
        raise ValueError(f"Class folders differ between '{train_ds.root}' and '{test_ds.root}'")
    _check_classes(cfg, len(train_ds.classes), root)
    train_eval_ds = ImageFolderDataset(root, cfg.CLS.DATA.TRAIN_SPLIT, transforms_from_config(cfg, train=False))

    train_idx = torch.arange(len(train_ds))
    sets = {}
    if cfg.CLS.DATA.HOLDOUT:
        train_idx, held = split_holdout(len(train_ds), cfg.CLS.DATA.HOLDOUT)
        sets["val"] = Subset(train_eval_ds, held.tolist())
    train_idx = train_idx[_fixed_subset(len(train_idx), cfg.CLS.DATA.TRAIN_LIMIT)]
    sets["test"] = Subset(test_ds, _fixed_subset(len(test_ds), cfg.CLS.DATA.TEST_LIMIT).tolist())
    if cfg.CLS.TEST.TRAIN_SUBSET:
        sub = train_idx[_fixed_subset(len(train_idx), cfg.CLS.TEST.TRAIN_SUBSET)]
        sets["train"] = Subset(train_eval_ds, sub.tolist())
    train_subset = Subset(train_ds, train_idx.tolist())

    batch = _per_rank_batch(cfg, world_size)
    workers = cfg.DATALOADER.NUM_WORKERS
    pin = device.type == "cuda"
    prefetch = cfg.CLS.DATA.PREFETCH_FACTOR if workers > 0 else None
    collate = {None: None, "cpu": collate_channels_last, "gpu": collate_encoded}[decode]

    def train_batches(start_iter: int) -> Batches:
        sampler = InfiniteSampler(len(train_subset), shuffle=True, seed=cfg.SEED, rank=rank,
                                  world_size=world_size, start=start_iter * cfg.SOLVER.IMS_PER_BATCH)
        # One endless iterator per run, so persistent_workers would change nothing; pinned host memory
        # lets the copy to the GPU run asynchronously (non_blocking) while the previous step computes.
        loader = iter(DataLoader(train_subset, batch_size=batch, sampler=sampler, num_workers=workers,
                                 pin_memory=pin, drop_last=True, persistent_workers=False, prefetch_factor=prefetch,
                                 collate_fn=collate, worker_init_fn=_worker_seeder(cfg.SEED, start_iter, rank)))
        if decode is None:
            return loader
        return DeviceInput(loader, device, pca_std=cfg.CLS.INPUT.PCA_STD if cfg.CLS.INPUT.COLOR_AUG == "pca" else 0.0,
                           seed=cfg.SEED, start_iter=start_iter, rank=rank, world_size=world_size,
                           skip_bad_images=cfg.DATALOADER.SKIP_BAD_IMAGES,
                           channels_last=cfg.SOLVER.CHANNELS_LAST)

    def eval_pass(ds) -> Callable[[], Batches]:
        # A fresh loader per evaluation (not persistent): evaluations are minutes apart, and persistent
        # workers would keep a copy of each set's file list alive per worker for the whole run.
        shard = list(range(rank, len(ds), world_size))
        return lambda: DataLoader(Subset(ds, shard), batch_size=cfg.CLS.TEST.BATCH_SIZE, shuffle=False,
                                  num_workers=workers, pin_memory=pin, prefetch_factor=prefetch)

    return ClassificationData(len(train_ds.classes), list(train_ds.classes), len(train_subset), train_batches,
                              {k: eval_pass(ds) for k, ds in sets.items()})
