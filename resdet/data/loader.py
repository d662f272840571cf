"""Detection data loaders: dataset dicts -> mapped samples -> batches of (images, targets).

Training: an endless stream from the engine's InfiniteSampler (seeded, sharded over DDP ranks),
grouped by aspect ratio (resdet/data/grouping.py) or plainly batched, starting at `start_iter` so
that a resumed run continues with the same images and the same augmentation of each. Test: each rank takes a contiguous slice of the
dataset in order, once.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import ConfigError
from .catalog import get_detection_dataset, register_from_config
from .coco import DatasetMetadata, ImageFileError
from .folders import get_skipping_bad_images
from .grouping import AspectRatioGroupedBatchSampler, aspect_ratio_groups
from .transforms import DetectionMapper

__all__ = [
    "collate_detection",
    "MappedDataset",
    "InferenceSampler",
    "load_train_records",
    "build_detection_train_loader",
    "build_detection_test_loader",
    "loader_workers",
]

logger = logging.getLogger(__name__)


def collate_detection(batch: Sequence[Tuple[torch.Tensor, Dict[str, torch.Tensor]]]):
    """[(image, target), ...] -> ([images], [targets]): images differ in size, the model pads them."""
    images, targets = zip(*batch)
    return list(images), list(targets)


class MappedDataset(Dataset):
    """A list of dataset dicts with a mapper applied on access.

    An item may be asked for as `(index, position)` (the training batch sampler does this): the
    augmentation is then seeded from (seed, rank, position), so the same stream position always gets
    the same crop and flip: in any worker, and after a resume.

    With `skip_bad_images`, an image that cannot be read (ImageFileError) is reported with a warning
    naming it and the next record takes its place (`folders.get_skipping_bad_images`).
    """

    def __init__(self, records: List[dict], mapper, seed: int = 0, rank: int = 0, skip_bad_images: bool = False):
        self.records = records
        self.mapper = mapper
        self.seed = seed
        self.rank = rank
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item):
        if isinstance(item, tuple):
            index, position = item
            import numpy as np

            sample_seed = int(np.random.SeedSequence([self.seed % 2**32, self.rank, position]).generate_state(1)[0])
            self.mapper.augmentation.set_random_seed(sample_seed)
        else:
            index = item
        return get_skipping_bad_images(lambda i: self.mapper(self.records[i]), index, len(self.records),
                                       ImageFileError, self.skip_bad_images)


def _dist():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class InferenceSampler(Sampler[int]):
    """Rank r of W gets the r-th contiguous slice of range(size), each index exactly once overall."""

    def __init__(self, size: int, rank: Optional[int] = None, world_size: Optional[int] = None):
        r, w = _dist()
        self.rank = r if rank is None else rank
        self.world_size = w if world_size is None else world_size
        per = (size + self.world_size - 1) // self.world_size
        self.indices = range(min(size, self.rank * per), min(size, (self.rank + 1) * per))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def load_train_records(names: Sequence[str], filter_empty: bool = True, check_images: str = "header",
                       skip_bad_images: bool = False,
                       instances_without_mask: str = "error") -> Tuple[List[dict], DatasetMetadata]:
    """Concatenated dicts of several registered datasets; their categories must agree.
    `instances_without_mask`: "error" / "ignore" when masks are trained, "keep" when not (load_coco_json)."""
    if not names:
        raise ConfigError("DATASETS.TRAIN is empty: name at least one registered dataset")
    records: List[dict] = []
    meta = None
    for name in names:
        dicts, m = get_detection_dataset(name, filter_empty=filter_empty, check_images=check_images,
                                         skip_bad_images=skip_bad_images,
                                         instances_without_mask=instances_without_mask)
        if meta is not None and m.dataset_id_to_contiguous != meta.dataset_id_to_contiguous:
            raise ConfigError(f"Dataset '{name}' has categories {m.thing_classes}, which differ from "
                             f"'{meta.name}' ({meta.thing_classes}); they cannot be trained together")
        meta = meta or m
        records.extend(dicts)
    if not records:
        raise ConfigError(f"Datasets {list(names)} have no training images (with FILTER_EMPTY_ANNOTATIONS, "
                         "images without annotations are left out)")
    return records, meta


def loader_workers(cfg) -> int:
    """Worker processes of the detection loaders: DATALOADER.NUM_WORKERS, or NUM_WORKERS_ON_CPU (when >= 0)
    for a model on the CPU, where the workers' decoding takes cycles from the cores the step runs on."""
    on_cpu = cfg.DATALOADER.NUM_WORKERS_ON_CPU
    if on_cpu >= 0 and str(cfg.MODEL.DEVICE).startswith("cpu"):
        return on_cpu
    return cfg.DATALOADER.NUM_WORKERS


def build_detection_train_loader(cfg, start_iter: int = 0, mapper: Optional[DetectionMapper] = None,
                                 train_records: Optional[Tuple[List[dict], DatasetMetadata]] = None) -> DataLoader:
    """Endless training batches for this process; `loader.metadata` holds the category mapping and
    `loader.batch_sampler` can report where to resume (`state_dict(iteration)` when grouped).
    `train_records`: what `load_train_records` returned for this config, if it was already called."""
    from .samplers import InfiniteSampler  # the engine's resumable, distributed index stream

    register_from_config(cfg)
    records, meta = train_records or load_train_records(
        cfg.DATASETS.TRAIN, cfg.DATASETS.FILTER_EMPTY_ANNOTATIONS, cfg.DATASETS.CHECK_IMAGES,
        cfg.DATALOADER.SKIP_BAD_IMAGES, cfg.DATASETS.INSTANCES_WITHOUT_MASK if cfg.MODEL.MASK_ON else "keep")
    rank, world = _dist()
    global_batch = cfg.SOLVER.IMS_PER_BATCH
    if global_batch % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={global_batch} is not divisible by the {world} processes")
    per_rank = global_batch // world
    mapper = mapper or DetectionMapper(**DetectionMapper.from_config(cfg, is_train=True))
    dataset = MappedDataset(records, mapper, seed=cfg.SEED, rank=rank, skip_bad_images=cfg.DATALOADER.SKIP_BAD_IMAGES)
    # Without grouping every image is in group 0: batches are then plain consecutive stream chunks,
    # and resuming (replaying the integer stream up to start_iter) works the same way.
    groups = aspect_ratio_groups(records) if cfg.INPUT.ASPECT_RATIO_GROUPING else [0] * len(records)
    sampler = InfiniteSampler(len(records), shuffle=True, seed=cfg.SEED, rank=rank, world_size=world)
    batch_sampler = AspectRatioGroupedBatchSampler(sampler, groups, per_rank, start_batch=start_iter,
                                                   with_positions=True)
    workers = loader_workers(cfg)
    loader = DataLoader(
        dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=collate_detection,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
    )
    loader.metadata = meta
    return loader


def build_detection_test_loader(cfg, dataset_name: str, mapper: Optional[DetectionMapper] = None,
                                batch_size: Optional[int] = None) -> DataLoader:
    """One pass over a dataset (every image, annotated or not), sharded over ranks.
    `loader.metadata` has the category mapping and `loader.json_file` the ground truth to score against."""
    from .catalog import dataset_files

    register_from_config(cfg)
    # the model needs no ground truth at test time (the evaluator checks it: resdet/data/coco_eval_gt.py)
    records, meta = get_detection_dataset(dataset_name, filter_empty=False, check_images=cfg.DATASETS.CHECK_IMAGES,
                                          instances_without_mask="keep")
    mapper = mapper or DetectionMapper(**DetectionMapper.from_config(cfg, is_train=False))
    dataset = MappedDataset(records, mapper)
    loader = DataLoader(
        dataset, batch_size=batch_size or cfg.TEST.IMS_PER_BATCH, sampler=InferenceSampler(len(records)),
        num_workers=loader_workers(cfg), collate_fn=collate_detection,
        pin_memory=torch.cuda.is_available(),
    )
    loader.metadata = meta
    loader.json_file = dataset_files(dataset_name)[0]
    return loader
