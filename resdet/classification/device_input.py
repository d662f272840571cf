"""The device end of the streamed training input: batches onto MODEL.DEVICE, then what is cheapest there.

`DeviceInput(loader_iterator, device, ...)` takes the DataLoader's batches (uint8 [B, 3, S, S]
channels_last from the CPU decoder, or `EncodedBatch`es for the GPU decoder), copies them to the device
(non-blocking, from pinned memory) or decodes them there (`gpu_decode.decode_batch`), one batch ahead of
the step and on CUDA on a side stream, and applies the
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


_END = object()


class DeviceInput:
    """The loader's batches on the device, one batch ahead: when the training step takes batch k, batch
    k + 1 is already being copied / decoded. On CUDA that work runs on a side stream and the step's
    stream waits for it by an event (never a host synchronisation), so decoding overlaps the step."""

    def __init__(self, batches: Iterator, device: torch.device, *, pca_std: float = 0.0, seed: int = 0,
                 start_iter: int = 0, rank: int = 0, world_size: int = 1, skip_bad_images: bool = False,
                 max_canvas_bytes: int = 1 << 30, channels_last: bool = True):
        self.batches = iter(batches)
        self.device = torch.device(device)
        self.pca_std, self.seed, self.iteration = pca_std, seed, start_iter
        self.rank, self.world_size = rank, world_size
        self.skip_bad_images, self.max_canvas_bytes = skip_bad_images, max_canvas_bytes
        self.channels_last = channels_last
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._ahead = None  # ((images, labels), event) of the next batch, or _END

    def __iter__(self) -> "DeviceInput":
        return self

    def _load(self):
        """The loader's next batch, on its way to the device (on the side stream on CUDA), and the event
        that marks its end there; _END when the loader is exhausted."""
        try:
            images, labels = next(self.batches)
        except StopIteration:
            return _END
        if self._stream is None:
            return self._to_device(images, labels), None
        self._stream.wait_stream(torch.cuda.current_stream(self.device))  # the step's frees come first
        with torch.cuda.stream(self._stream):
            out = self._to_device(images, labels)
            event = torch.cuda.Event()
            event.record(self._stream)
        return out, event

    def _to_device(self, images, labels) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(images, EncodedBatch):
            return decode_batch(images, labels, self.device, skip_bad_images=self.skip_bad_images,
                                max_canvas_bytes=self.max_canvas_bytes)
        # from the DataLoader's pinned memory: queued, no wait
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def __next__(self) -> Tuple[torch.Tensor, torch.Tensor]:
        if self._ahead is None:
            self._ahead = self._load()
        if self._ahead is _END:
            raise StopIteration
        (images, labels), event = self._ahead
        self._ahead = self._load()  # the following batch starts now, behind this one
        if event is not None:
            main = torch.cuda.current_stream(self.device)
            main.wait_event(event)
            # made on the side stream, used on this one: the allocator must not reuse their memory before
            images.record_stream(main)
            labels.record_stream(main)
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
