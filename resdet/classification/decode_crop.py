"""The fast CPU training input (CLS.DATA.DECODE "cpu"): decode at the smallest sufficient DCT scale, crop,
resize, flip; uint8 out.

Per image, in a DataLoader worker: read the file, read the size from the header, sample the crop box
(`crops.py`, torchvision's draws), decode the JPEG at the smallest scale 1/2**k (k <= 3) that still
leaves the box at least at the output size (`resdet.data.jpeg.shrink_for`), cut the box out (its edges
rounded to the decoded pixel grid: they move by at most half a decoded pixel, 2**k / 2 source pixels),
resize it to the output with torch's antialiased bilinear uint8 kernel (the filter torchvision's
tensor transforms use; at k = 0 the RandomResizedCrop output is torchvision's exactly, tested) and
flip. Non-JPEG files and JPEGs libjpeg-turbo cannot convert (CMYK) are decoded whole by PIL; unreadable
files raise CorruptImageError naming the file, so DATALOADER.SKIP_BAD_IMAGES works as before.

Images leave the worker as uint8 [3, S, S] whose memory is HWC; `collate_channels_last` stacks them into
one uint8 [B, 3, S, S] channels_last batch (in shared memory, as torch's default collate does), the
layout the GPU's channels_last convolutions read directly. Normalisation happens in the model; the
colour augmentation ("pca") on the device (`device_input.py`).

Measured on one core (tools/benchmark.py --loader imagenet; README, "Feeding the GPU"): 2.26x (median
of five runs, 1.89-2.52) torchvision's standard ImageFolder + PIL + RandomResizedCrop + flip + ToTensor
+ Normalize, and 3.82x its scale augmentation, on the same photographs. Most of our time is the
(full-size) decode: ImageNet-sized images rarely allow a reduced one at a 224 crop.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import default_collate
from torchvision.transforms.v2 import functional as TF

from resdet.data.folders import CorruptImageError
from resdet.data.jpeg import ImageInfo, MAX_SHRINK, decode_rgb, probe, read_file, shrink_for

from .crops import CropBox, CropSampler

__all__ = ["DecodeCrop", "decode_crop_resize", "collate_channels_last", "ColorJitterUint8"]


def _grid_span(start: float, length: float, factor: float, limit: int) -> Tuple[int, int]:
    """[a, b) on the decoded grid (source coordinates times `factor`), rounded, inside [0, limit), >= 1 px."""
    a = min(max(int(round(start * factor)), 0), limit - 1)
    b = min(max(int(round((start + length) * factor)), a + 1), limit)
    return a, b


def decode_crop_resize(data: bytes, info: ImageInfo, box: CropBox, size: int, path: str, *,
                       backend: str = "auto", max_shrink: int = MAX_SHRINK) -> torch.Tensor:
    """uint8 [3, size, size] (HWC memory): `box` of the encoded image `data`, decoded at the smallest
    sufficient DCT scale, resized with antialiasing and flipped if the box says so."""
    k = shrink_for(box.height, box.width, size, size, max_shrink) if info.jpeg else 0
    img, k = decode_rgb(data, path, k, backend)
    f = 1 << k
    expect = (-(-info.height // f), -(-info.width // f))
    if img.shape[:2] != expect:
        raise CorruptImageError(f"Cannot read image '{path}': decoded {img.shape[1]}x{img.shape[0]}, but its header "
                                f"says {info.width}x{info.height} (scale 1/{f})")
    y0, y1 = _grid_span(box.top, box.height, 1.0 / f, img.shape[0])
    x0, x1 = _grid_span(box.left, box.width, 1.0 / f, img.shape[1])
    # A contiguous crop (a copy of at most the decoded image) is what torch's vectorised uint8
    # channels-last resize kernel takes; from a strided view it would pack the input itself, slower.
    crop = torch.from_numpy(np.ascontiguousarray(img[y0:y1, x0:x1])).permute(2, 0, 1)
    out = TF.resize(crop, [size, size], antialias=True)
    return out.flip(-1) if box.flip else out


class DecodeCrop:
    """A picklable ImageFolderDataset loader: path -> the training crop, uint8 [3, size, size]."""

    def __init__(self, sampler: CropSampler, *, backend: str = "auto", max_shrink: int = MAX_SHRINK):
        self.sampler, self.size = sampler, sampler.size
        self.backend, self.max_shrink = backend, max_shrink

    def __call__(self, path: str) -> torch.Tensor:
        data = read_file(path)
        info = probe(data, path, self.backend)
        box = self.sampler(info.height, info.width)
        return decode_crop_resize(data, info, box, self.size, path, backend=self.backend, max_shrink=self.max_shrink)


class ColorJitterUint8:
    """torchvision's ColorJitter on the uint8 crop (CLS.INPUT.COLOR_AUG "jitter"), HWC memory kept."""

    def __init__(self, strength: float):
        from torchvision.transforms import v2 as T

        self.jitter = T.ColorJitter(strength, strength, strength)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.jitter(img).permute(1, 2, 0).contiguous().permute(2, 0, 1)


def collate_channels_last(batch: Sequence[Tuple[torch.Tensor, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """[(uint8 [3, S, S], label)] -> (uint8 [B, 3, S, S] channels_last, int64 labels [B]).

    The images are stacked as HWC ([B, S, S, 3], one copy, in shared memory inside a worker, via torch's
    default collate) and returned as the [B, 3, S, S] view of that memory: channels_last, no transpose."""
    images: List[torch.Tensor] = [im.permute(1, 2, 0) for im, _ in batch]
    labels = torch.as_tensor([lab for _, lab in batch], dtype=torch.int64)
    return default_collate(images).permute(0, 3, 1, 2), labels

