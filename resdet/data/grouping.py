"""Aspect-ratio grouped batches on top of an endless index stream (the engine's InfiniteSampler).

Images wider than tall go to one bucket, the others to another; a batch is emitted when a bucket holds
`batch_size` indices, so a batch never mixes the two and padding to the largest image wastes little
(torchvision's and Detectron2's reference recipe).

Resuming exactly: a bucket holds indices that were drawn but not yet batched, so "how many indices were
consumed" does not say where to continue. The sampler underneath is deterministic from its seed, so
`start_batch` replays the (cheap: integers only) grouping from the beginning and skips that many
batches: the next batch is the one the interrupted run would have produced.

With `with_positions`, each batch entry is `(index, position)`: the entry's place in this process's
stream. The loader seeds that sample's augmentation from it, so a resumed run also repeats the random
crops and flips exactly, whatever the number of workers.
"""
from __future__ import annotations

from typing import Iterable, Iterator, List, Sequence

from torch.utils.data import Sampler

__all__ = ["AspectRatioGroupedBatchSampler", "aspect_ratio_groups"]


def aspect_ratio_groups(records: Sequence[dict]) -> List[int]:
    """0 for images at least as wide as tall, 1 for taller ones (from the JSON sizes; no decoding)."""
    return [0 if r["width"] >= r["height"] else 1 for r in records]


class AspectRatioGroupedBatchSampler(Sampler[List[int]]):
    """Batches of `batch_size` indices from `sampler`, each drawn from one group.

    Args:
        sampler: an endless iterable of dataset indices (restarted from its beginning; it must give
            the same stream every time, as InfiniteSampler with `start=0` does).
        group_ids: group of each dataset index.
        batch_size: images per batch (per process).
        start_batch: batches already consumed (the iteration to resume at).
    """

    def __init__(self, sampler: Iterable[int], group_ids: Sequence[int], batch_size: int, start_batch: int = 0,
                 with_positions: bool = False):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = int(batch_size)
        self.start_batch = int(start_batch)
        self.with_positions = with_positions

    def __iter__(self) -> Iterator[List[int]]:
        buckets: dict = {}
        emitted = 0
        for position, index in enumerate(self.sampler):
            bucket = buckets.setdefault(self.group_ids[index], [])
            bucket.append((index, position) if self.with_positions else index)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                del bucket[:]
                emitted += 1
                if emitted > self.start_batch:
                    yield batch

    def state_dict(self, iteration: int) -> dict:
        return {"start_batch": int(iteration), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("batch_size", self.batch_size) != self.batch_size:
            raise ValueError(f"Grouped sampler state was saved with batch_size={state['batch_size']}, "
                             f"this run uses {self.batch_size}")
        self.start_batch = int(state["start_batch"])
