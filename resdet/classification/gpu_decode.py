"""Decoding on the GPU (CLS.DATA.DECODE "gpu"): workers read bytes, the device decodes, crops, resizes, flips.

Worker side (`ReadEncoded`, an ImageFolderDataset loader): read the file, read its size from the
header, sample the crop box with the CPU path's sampler (`crops.py`: the same draws, in the worker), and
pass the bytes on. Files the GPU decoder should not see are decoded and cropped right there by the CPU
path (`decode_crop.decode_crop_resize`): non-JPEGs, CMYK JPEGs, progressive/lossless/arithmetic-coded
JPEGs (nvJPEG's batched decoder takes baseline Huffman JPEGs), and files without an end-of-image marker
(truncated), which the CPU decoder then reports by name in the worker, where DATALOADER.SKIP_BAD_IMAGES
applies as on the CPU path. `collate_encoded` packs a batch into one `EncodedBatch` (all bytes in one
shared-memory tensor, boxes, flips, the CPU-decoded rest).

Device side (`decode_batch`): `torchvision.io.decode_jpeg(list of bytes, device=...)` (nvJPEG's batched
decode on CUDA; libjpeg-turbo on the CPU, which is how the tests run this same code), then all crops of
the batch resampled at once: the decoded images go into one zero-padded canvas [b, 3, Hmax, Wmax] and
each output is Ry[i] @ image[i] @ Rx[i]^T, with Ry / Rx [b, S, Hmax / Wmax] the interpolation weights of
torchvision's antialiased bilinear resize (a triangle filter widened by the downscale factor, taps
limited to the clamp window and renormalised, as PIL and torch do) for the box's exact fractional
position; a flip reverses Rx's rows. Two batched matmuls, no per-image kernels; weights outside an
image are zero, so the padding is never read. Canvases are cut into chunks of at most
`max_canvas_bytes`, so one huge photo does not blow up a batch.

Nothing on the way synchronises with the device: the host metadata (which image went where, the boxes)
is copied from pinned memory without blocking, and no device data is read back. `DeviceInput` runs this
on a side stream one batch ahead of the training step (device_input.py).

When the device decoder rejects a batch (a file the worker's checks passed but nvJPEG cannot read), the
batch is split in halves and each half decoded again, down to the files that fail alone (a few batched
calls, not one per image); each of those is decoded alone on the CPU, which either reads it (its
full-size decode is resampled like the rest) or names it (CorruptImageError). With skip_bad_images it is
logged and its slot in the batch takes another image of the same batch.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch

from resdet.data.folders import CorruptImageError
from resdet.data.jpeg import ImageInfo, decode_rgb, jpeg_looks_complete, probe, read_file

from .crops import CropBox, CropSampler
from .decode_crop import decode_crop_resize

__all__ = ["ReadEncoded", "EncodedImage", "EncodedBatch", "collate_encoded", "decode_batch", "resample_weights",
           "jpeg_sof_marker"]

logger = logging.getLogger(__name__)

# Start-of-frame markers: C0 baseline, C1 extended sequential (both Huffman-coded, what nvJPEG's batched
# decoder reads); C2 progressive, C3 lossless, C5-C7 hierarchical, C9-CB / CD-CF arithmetic-coded.
_GPU_SOF = (0xC0, 0xC1)
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}   # C4 DHT, C8 JPG, CC DAC are not frames


def jpeg_sof_marker(data: bytes, limit: int = 1 << 16) -> Optional[int]:
    """The first start-of-frame marker's code (0xC0 baseline, 0xC2 progressive, ...), walking the
    marker segments from the start (so an EXIF thumbnail inside APP1 is skipped); None if not found."""
    i, n = 2, min(len(data), limit)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:         # fill byte
            i += 1
            continue
        if marker in _SOF:
            return marker
        if marker == 0xDA:         # start of scan before any frame header: malformed
            return None
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


@dataclass
class EncodedImage:
    """One worker output: the file's bytes and its crop box, or (fallback) the CPU-decoded crop."""

    path: str
    box: CropBox
    size: int                                    # output side S
    data: Optional[bytes] = None
    decoded: Optional[torch.Tensor] = None       # uint8 [3, S, S] when the CPU decoded it


class ReadEncoded:
    """A picklable ImageFolderDataset loader for DECODE "gpu": path -> EncodedImage."""

    def __init__(self, sampler: CropSampler, *, backend: str = "auto"):
        self.sampler, self.size, self.backend = sampler, sampler.size, backend

    def __call__(self, path: str) -> EncodedImage:
        data = read_file(path)
        info: ImageInfo = probe(data, path, self.backend)
        box = self.sampler(info.height, info.width)
        if info.jpeg and jpeg_sof_marker(data) in _GPU_SOF and jpeg_looks_complete(data):
            return EncodedImage(path, box, self.size, data=data)
        return EncodedImage(path, box, self.size, decoded=decode_crop_resize(data, info, box, self.size, path,
                                                                  backend=self.backend))


@dataclass
class EncodedBatch:
    """A batch for the device decoder. Images i with `on_cpu[i]` False are JPEGs whose bytes are
    data[offsets[i]:offsets[i + 1]]; the others are already decoded, `decoded[j]` for the j-th of them."""

    data: torch.Tensor                 # uint8 [total bytes], the encoded images back to back
    offsets: List[int]                 # len B + 1 (an on-CPU image takes no bytes)
    boxes: torch.Tensor                # float64 [B, 4]: top, left, height, width (source pixels)
    clamp: torch.Tensor                # int64 [B, 4]: the window resampling may read (top, left, bottom, right)
    flips: torch.Tensor                # bool [B]
    on_cpu: torch.Tensor               # bool [B]
    decoded: torch.Tensor              # uint8 [n_cpu, 3, S, S]
    size: int
    paths: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def pin_memory(self) -> "EncodedBatch":
        # DataLoader(pin_memory=True) calls this: what decode_batch copies to the device is pinned, so the
        # copies need not wait for the stream; the bytes stay pageable (decode_jpeg reads them itself)
        for name in ("decoded", "boxes", "clamp", "flips"):
            setattr(self, name, getattr(self, name).pin_memory())
        return self


def collate_encoded(batch: Sequence[Tuple[EncodedImage, int]]) -> Tuple[EncodedBatch, torch.Tensor]:
    items = [im for im, _ in batch]
    labels = torch.as_tensor([lab for _, lab in batch], dtype=torch.int64)
    size = items[0].size
    chunks, offsets = [], [0]
    for im in items:
        if im.data is not None:
            chunks.append(im.data)
        offsets.append(offsets[-1] + (len(im.data) if im.data is not None else 0))
    data = torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8) if chunks else torch.empty(0, dtype=torch.uint8)
    decoded = [im.decoded for im in items if im.decoded is not None]
    return EncodedBatch(
        data=data, offsets=offsets,
        boxes=torch.tensor([im.box.as_tuple() for im in items], dtype=torch.float64),
        clamp=torch.tensor([im.box.clamp for im in items], dtype=torch.int64),
        flips=torch.tensor([im.box.flip for im in items], dtype=torch.bool),
        on_cpu=torch.tensor([im.data is None for im in items], dtype=torch.bool),
        decoded=torch.stack(decoded) if decoded else torch.empty((0, 3, size, size), dtype=torch.uint8),
        size=size, paths=[im.path for im in items]), labels


def resample_weights(start: torch.Tensor, length: torch.Tensor, out: int, lo: torch.Tensor, hi: torch.Tensor,
                     extent: int) -> torch.Tensor:
    """[b, out, extent] weights of torchvision's antialiased bilinear resize of the source span
    [start, start + length) (floats, pixel i spanning [i, i + 1)) to `out` pixels, one row per output
    pixel: a triangle of radius max(length / out, 1) source pixels around the output pixel's centre, taps
    only in [lo, hi), each row normalised to sum 1 (PIL's and torch's antialiased kernels do the same)."""
    dev = start.device
    scale = (length / out).to(torch.float32)                                   # source px per output px
    support = scale.clamp(min=1.0)
    centre = start.to(torch.float32)[:, None] + (torch.arange(out, device=dev, dtype=torch.float32) + 0.5) * scale[:, None]
    src = torch.arange(extent, device=dev, dtype=torch.float32) + 0.5
    w = (1.0 - (src[None, None, :] - centre[:, :, None]).abs() / support[:, None, None]).clamp_(min=0.0)
    idx = torch.arange(extent, device=dev)
    inside = (idx[None, :] >= lo[:, None]) & (idx[None, :] < hi[:, None])      # [b, extent]
    w = w * inside[:, None, :]
    return w / w.sum(-1, keepdim=True).clamp_(min=1e-12)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without making the host wait: pinned (if it is not already) and copied
    non-blocking on CUDA (a copy from pageable memory, or a blocking one, synchronises with the stream)."""
    if device.type == "cuda" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def _resample(images: List[torch.Tensor], boxes: torch.Tensor, clamp: torch.Tensor, flips: torch.Tensor,
              size: int) -> torch.Tensor:
    """uint8 [b, 3, size, size] from decoded uint8 [3, H_i, W_i] images, one canvas and two matmuls;
    boxes, clamp and flips already on the images' device."""
    canvas = _pad_to_canvas(images).float()                                    # [b, 3, Hmax, Wmax]
    hmax, wmax = canvas.shape[-2:]
    ry = resample_weights(boxes[:, 0], boxes[:, 2], size, clamp[:, 0], clamp[:, 2], hmax)     # [b, S, Hmax]
    rx = resample_weights(boxes[:, 1], boxes[:, 3], size, clamp[:, 1], clamp[:, 3], wmax)     # [b, S, Wmax]
    rx = torch.where(flips[:, None, None], rx.flip(1), rx)        # a flipped crop reads its columns backwards
    out = torch.matmul(torch.matmul(ry[:, None], canvas), rx.transpose(1, 2)[:, None])       # [b, 3, S, S]
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _pad_to_canvas(images: List[torch.Tensor]) -> torch.Tensor:
    """uint8 [b, 3, Hmax, Wmax], image i at the top left of slot i, zeros elsewhere: torch's nested
    tensors do it in one call (their per-image loop is in C++)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # "nested tensors are a prototype": the API we use is stable
            return torch.nested.nested_tensor(images).to_padded_tensor(0)
    except (RuntimeError, AttributeError, NotImplementedError):  # a torch without strided nested tensors
        hm, wm = max(im.shape[-2] for im in images), max(im.shape[-1] for im in images)
        canvas = images[0].new_zeros((len(images), 3, hm, wm))
        for i, im in enumerate(images):
            canvas[i, :, :im.shape[-2], :im.shape[-1]] = im
        return canvas


def _chunks(shapes: List[Tuple[int, int]], max_canvas_bytes: int) -> List[List[int]]:
    """Index groups whose float canvas (count x 3 x max H x max W x 4 bytes) stays under the budget; one
    image per group at least. Images are taken in size order so that similar sizes share a canvas."""
    order = sorted(range(len(shapes)), key=lambda i: shapes[i][0] * shapes[i][1])
    groups: List[List[int]] = []
    cur: List[int] = []
    hm = wm = 0
    for i in order:
        h, w = shapes[i]
        nh, nw = max(hm, h), max(wm, w)
        if cur and (len(cur) + 1) * 3 * nh * nw * 4 > max_canvas_bytes:
            groups.append(cur)
            cur, nh, nw = [], h, w
        cur.append(i)
        hm, wm = nh, nw
    if cur:
        groups.append(cur)
    return groups


def _decode_on_device(data: List[torch.Tensor], device: torch.device) -> List[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec; they remain the batched nvJPEG
        # entry point that ships with torchvision, so the warning is silenced here only
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def decode_batch(batch: EncodedBatch, labels: torch.Tensor, device: torch.device, *, skip_bad_images: bool = False,
                 max_canvas_bytes: int = 1 << 30) -> Tuple[torch.Tensor, torch.Tensor]:
    """(uint8 [B, 3, S, S] channels_last on `device`, labels on `device`) for an EncodedBatch.

    Which image went where is host metadata the worker wrote (on_cpu, offsets, shapes): nothing here
    reads device data back, and host data reaches the device by non-blocking copies from pinned memory."""
    device = torch.device(device)
    b, size = len(batch), batch.size
    on_cpu = batch.on_cpu.tolist()
    gpu_idx = [i for i in range(b) if not on_cpu[i]]
    cpu_idx = [i for i in range(b) if on_cpu[i]]
    out = torch.empty((b, 3, size, size), dtype=torch.uint8, device=device, memory_format=torch.channels_last)
    if cpu_idx:
        out.index_copy_(0, _to_device(torch.tensor(cpu_idx), device), _to_device(batch.decoded, device))
    bad: List[int] = []
    if gpu_idx:
        views = [batch.data[batch.offsets[i]:batch.offsets[i + 1]] for i in gpu_idx]
        images = _decode_or_split(views, device)
        images, bad = _decode_rejected_on_cpu(batch, gpu_idx, views, images, device, skip_bad_images)
        boxes, clamp, flips = (_to_device(t, device) for t in (batch.boxes, batch.clamp, batch.flips))
        keep = [j for j, im in enumerate(images) if im is not None]
        for group in _chunks([tuple(images[j].shape[-2:]) for j in keep], max_canvas_bytes):
            js = [keep[g] for g in group]
            rows = _to_device(torch.tensor([gpu_idx[j] for j in js]), device)
            out.index_copy_(0, rows, _resample([images[j] for j in js], boxes[rows], clamp[rows], flips[rows], size))
    labels = _to_device(labels, device)
    if bad:  # SKIP_BAD_IMAGES: a bad image's slot takes another image of the batch, label and all
        good = [i for i in range(b) if i not in bad]
        if not good:
            raise CorruptImageError(f"No image of the batch could be decoded (the first: '{batch.paths[bad[0]]}')")
        dst = _to_device(torch.tensor(bad), device)
        src = _to_device(torch.tensor([good[n % len(good)] for n in range(len(bad))]), device)
        out.index_copy_(0, dst, out.index_select(0, src))
        labels = labels.index_copy(0, dst, labels.index_select(0, src))
    return out, labels


def _decode_or_split(views: List[torch.Tensor], device: torch.device) -> List[Optional[torch.Tensor]]:
    """The device decoder on all views at once; if it rejects them, on each half again, down to the single
    files it rejects (None): a bad file costs about 2 log2(B) batched calls, not one call per image."""
    try:
        return list(_decode_on_device(views, device))
    except RuntimeError:
        if len(views) == 1:
            return [None]
    mid = len(views) // 2
    return _decode_or_split(views[:mid], device) + _decode_or_split(views[mid:], device)


def _decode_rejected_on_cpu(batch: EncodedBatch, gpu_idx: List[int], views: List[torch.Tensor],
                            images: List[Optional[torch.Tensor]], device: torch.device,
                            skip_bad_images: bool) -> Tuple[List[Optional[torch.Tensor]], List[int]]:
    """Each file the device decoder rejected, alone on the CPU decoder: read (its full-size decode joins
    the batch's resampling) or named by CorruptImageError (with skip_bad_images: logged and listed)."""
    bad: List[int] = []
    for j, (i, v) in enumerate(zip(gpu_idx, views)):
        if images[j] is not None:
            continue
        try:
            img, _ = decode_rgb(v.numpy().tobytes(), batch.paths[i])
        except CorruptImageError as e:
            if not skip_bad_images:
                raise
            logger.warning("Skipping a bad training image (DATALOADER.SKIP_BAD_IMAGES): %s", e)
            bad.append(i)
            continue
        images[j] = _to_device(torch.from_numpy(img).permute(2, 0, 1), device)
    return images, bad
