"""The device end of the streamed training input: batches onto MODEL.DEVICE, then what is cheapest there.

`DeviceInput(loader_iterator, device, ...)` takes the DataLoader's batches (uint8 [B, 3, S, S]
channels_last from the CPU decoder, or `EncodedBatch`es for the GPU decoder), copies them to the device
(non-blocking, from pinned memory) or decodes them there (`gpu_decode.decode_batch`), and applies the
colour augmentation for the whole batch at once: AlexNet's PCA lighting, the paper's, drawn from a
generator seeded with (seed, iteration) for the global batch and sliced by rank (as `DeviceBatches` does,
so N processes see what one process with the N-times batch would). Normalisation stays in the model.
Batches stay channels_last unless `channels_last=False` (SOLVER.CHANNELS_LAST off), then NCHW.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import torch

from .gpu_decode import EncodedBatch, decode_batch
from .transforms import pca_lighting_batch

__all__ = ["DeviceInput"]


class DeviceInput:
    def __init__(self, batches: Iterator, device: torch.device, *, pca_std: float = 0.0, seed: int = 0,
                 start_iter: int = 0, rank: int = 0, world_size: int = 1, skip_bad_images: bool = False,
                 max_canvas_bytes: int = 1 << 30, channels_last: bool = True):
        self.batches = iter(batches)
        self.device = torch.device(device)
        self.pca_std, self.seed, self.iteration = pca_std, seed, start_iter
        self.rank, self.world_size = rank, world_size
        self.skip_bad_images, self.max_canvas_bytes = skip_bad_images, max_canvas_bytes
        self.channels_last = channels_last

    def __iter__(self) -> "DeviceInput":
        return self

    def __next__(self) -> Tuple[torch.Tensor, torch.Tensor]:
        images, labels = next(self.batches)
        if isinstance(images, EncodedBatch):
            images, labels = decode_batch(images, labels, self.device, skip_bad_images=self.skip_bad_images,
                                          max_canvas_bytes=self.max_canvas_bytes)
        else:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
        if self.pca_std > 0:
            images = pca_lighting_batch(images, self._alpha(images.shape[0]))
        if not self.channels_last:
            # batches arrive channels_last (the workers' HWC crops); a model trained in NCHW
            # (SOLVER.CHANNELS_LAST False) gets NCHW, or its convolutions would switch layout
            images = images.contiguous()
        self.iteration += 1
        return images, labels

    def _alpha(self, batch: int) -> torch.Tensor:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.seed * 1_000_003 + self.iteration) % (2**63))
        alpha = torch.randn(batch * self.world_size, 3, generator=g, device=self.device) * self.pca_std
        return alpha[self.rank::self.world_size]
