"""Training samplers: an endless, resumable, distributed stream of dataset indices.

    sampler = InfiniteSampler(len(dataset), shuffle=True, seed=cfg.SEED,
                              start=start_iter * cfg.SOLVER.IMS_PER_BATCH)
    loader = DataLoader(dataset, batch_size=cfg.SOLVER.IMS_PER_BATCH // world_size, sampler=sampler, ...)

The global stream is the concatenation of permutations of range(size), epoch e's permutation drawn
from (seed, e) alone. Rank r of W takes global positions r, r + W, r + 2W, ... so with W processes and
b images each per step, step s covers exactly the global positions [s*W*b, (s+1)*W*b): the same images
that one process with batch W*b would see. Positions are counted over the global stream, so a run
resumed with a different number of processes (and the same global batch) continues with the same data.

Resuming mid-epoch is exact: `start` (or `load_state_dict`) is the number of global positions already
consumed. Behind a DataLoader the sampler runs ahead of training (workers prefetch), so record what
training consumed, `iteration * global_batch`, rather than what the sampler handed out:
`sampler.state_dict(consumed=iteration * global_batch)`.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import torch
from torch.utils.data import Sampler

__all__ = ["InfiniteSampler"]


def _dist_info(rank: Optional[int], world_size: Optional[int]):
    # Imported lazily and only from torch: the data room must not depend on resdet.engine.
    import torch.distributed as dist

    initialized = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialized else 1
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    return rank, world_size


class InfiniteSampler(Sampler[int]):
    """Endless indices: a fresh permutation per epoch from (seed, epoch), sharded over ranks.

    Args:
        size: number of samples in the dataset.
        shuffle: permute each epoch (else 0..size-1 in order, repeated).
        seed: the permutations depend on this and the epoch only, so they are the same on every rank.
        rank, world_size: this process's shard; default from torch.distributed (0 and 1 without it).
        start: global stream positions already consumed (all ranks together); must be a multiple of
            world_size so that every rank resumes on the same step.
    """

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        start: int = 0,
    ):
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"InfiniteSampler needs a positive dataset size; got {size!r}")
        rank, world_size = _dist_info(rank, world_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}")
        self.size = size
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self._set_start(start)

    def _set_start(self, start: int) -> None:
        if start < 0 or start % self.world_size:
            raise ValueError(
                f"InfiniteSampler start={start} must be a non-negative multiple of world_size={self.world_size} "
                "(a whole number of global batches)"
            )
        self.start = int(start)
        self._handed_out = 0  # indices this rank has yielded since `start`

    def _permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        g = torch.Generator()
        # One independent stream per (seed, epoch); the mixing constant keeps (seed, epoch + 1) and
        # (seed + 1, epoch) apart.
        g.manual_seed((self.seed * 1_000_003 + epoch) % (2**63 - 1))
        return torch.randperm(self.size, generator=g)

    def __iter__(self) -> Iterator[int]:
        position = self.start + self.rank  # global position of this rank's next index
        while True:
            epoch, offset = divmod(position, self.size)
            chunk = self._permutation(epoch)[offset :: self.world_size].tolist()
            for index in chunk:
                self._handed_out += 1
                yield index
            position += len(chunk) * self.world_size

    def state_dict(self, consumed: Optional[int] = None) -> Dict[str, Any]:
        """Where to resume: `consumed` global positions (default: what this sampler has handed out)."""
        if consumed is None:
            consumed = self.start + self._handed_out * self.world_size
        return {"position": int(consumed), "seed": self.seed, "size": self.size, "shuffle": self.shuffle}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from a `state_dict()`; call before iterating. A different dataset or seed is an error."""
        for key in ("seed", "size", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"Sampler state was saved with {key}={state[key]!r} but this sampler has {key}={getattr(self, key)!r}; "
                    "resuming would not continue the same data order"
                )
        if "position" not in state:
            raise KeyError(f"Sampler state lacks 'position'; it has {sorted(state)}")
        self._set_start(int(state["position"]))
