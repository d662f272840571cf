"""Training crops as boxes in the source image: sampled exactly as torchvision's transforms sample them.

A training augmentation that crops and resizes is, per image, a box in the source image's pixel
coordinates (`CropBox`: top, left, height, width, floats; the box covers [top, top + height) x
[left, left + width), pixel i spanning [i, i + 1)) that is resampled to the output size, and a flip.
Sampling the box from the header's size alone lets the decoder choose its DCT scale before decoding
(`resdet.data.jpeg.shrink_for`), and lets DataLoader workers hand the box to a GPU decoder with the
file's bytes. Both input paths (DECODE cpu and gpu) call these samplers, in the worker.

- `sample_rrc`: RandomResizedCrop. It calls torchvision's own `RandomResizedCrop.get_params`, then draws
  the flip as `RandomHorizontalFlip` does: under the same torch seed the boxes and flips are the ones
  torchvision's `RandomResizedCrop(size) + RandomHorizontalFlip()` would use (tested).
- `sample_scale`: the paper's scale augmentation, the shorter side resized to S uniform in [low, high],
  then a size x size crop. It makes the random draws of torchvision.transforms.v2's
  `RandomShortestSize(range(low, high + 1)) + RandomCrop(size) + RandomHorizontalFlip()` (our "pil"
  path) in the same order, and maps the crop back through the resize: a crop at (top, left) of the image
  resized from h x w to nh x nw is the source box (top * h / nh, left * w / nw, size * h / nh,
  size * w / nw), resampled with the same per-axis factors h / nh and w / nw (tested).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from torchvision import transforms as T1

__all__ = ["CropBox", "sample_rrc", "sample_scale", "CropSampler"]


@dataclass(frozen=True)
class CropBox:
    """A crop in source pixel coordinates (floats), resampled to the output size, flipped if `flip`."""

    top: float
    left: float
    height: float
    width: float
    flip: bool = False
    # Resampling reads source pixels in [clamp_top, clamp_bottom) x [clamp_left, clamp_right) only
    # (PIL / torchvision clamp their filter taps to what they resize: the crop for RandomResizedCrop,
    # which crops before resizing; the whole image for the scale augmentation, which resizes first).
    clamp: Tuple[int, int, int, int] = (0, 0, 0, 0)

    def as_tuple(self) -> Tuple[float, float, float, float]:
        return (self.top, self.left, self.height, self.width)


def _flip(hflip: bool) -> bool:
    # RandomHorizontalFlip(p=0.5): one torch.rand(1) draw, flip when below p
    return bool(torch.rand(1) < 0.5) if hflip else False


def _size_only(h: int, w: int) -> torch.Tensor:
    # get_params reads only the image's shape: a 1-element tensor expanded to [1, h, w] costs nothing
    return torch.zeros(1, dtype=torch.uint8).expand(1, h, w)


def sample_rrc(h: int, w: int, scale: Sequence[float] = (0.08, 1.0),
               ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0), hflip: bool = True) -> CropBox:
    """RandomResizedCrop's box (torchvision's sampler itself) and a flip, for an h x w image."""
    top, left, ch, cw = T1.RandomResizedCrop.get_params(_size_only(h, w), list(scale), list(ratio))
    return CropBox(float(top), float(left), float(ch), float(cw), _flip(hflip), (top, left, top + ch, left + cw))


def sample_scale(h: int, w: int, short_side: Tuple[int, int], size: int, hflip: bool = True) -> CropBox:
    """The scale augmentation's box: shorter side to S ~ U{low..high}, a size x size crop, a flip."""
    lo, hi = int(short_side[0]), int(short_side[-1])
    s = lo + int(torch.randint(hi - lo + 1, ()))          # RandomShortestSize: min_size[randint(len)]
    r = s / min(h, w)
    nh, nw = int(h * r), int(w * r)                        # RandomShortestSize floors both sides
    if nh < size or nw < size:
        raise ValueError(f"the scale augmentation resized a {h}x{w} image to {nh}x{nw}, smaller than the "
                         f"{size} crop; CLS.INPUT.TRAIN_SHORT_SIDE's low end must exceed CLS.INPUT.CROP_SIZE "
                         f"(or use CLS.DATA.DECODE 'pil', which pads)")
    top = int(torch.randint(0, nh - size + 1, size=())) if nh > size else 0   # RandomCrop, rows first
    left = int(torch.randint(0, nw - size + 1, size=())) if nw > size else 0
    fy, fx = h / nh, w / nw
    return CropBox(top * fy, left * fx, size * fy, size * fx, _flip(hflip), (0, 0, h, w))


class CropSampler:
    """A picklable `(h, w) -> CropBox` for DataLoader workers: "rrc" or "scale" with its options."""

    def __init__(self, aug: str, size: int, *, short_side: Sequence[int] = (256, 480),
                 scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
                 hflip: bool = True):
        if aug not in ("rrc", "scale"):
            raise ValueError(f"crop sampling supports CLS.INPUT.TRAIN_AUG 'rrc' and 'scale'; got {aug!r}")
        if aug == "scale":
            lo, hi = int(short_side[0]), int(short_side[-1])
            if not 0 < lo <= hi:
                raise ValueError(f"CLS.INPUT.TRAIN_SHORT_SIDE must be (low, high) with 0 < low <= high; got "
                                 f"{tuple(short_side)}")
            if lo <= size:
                # RandomShortestSize floors the sides, so S = low can come out at low - 1: below the crop
                raise ValueError(f"CLS.INPUT.TRAIN_SHORT_SIDE low ({lo}) must exceed CLS.INPUT.CROP_SIZE ({size}) "
                                 f"for the decode-and-crop input; CLS.DATA.DECODE 'pil' pads small images instead")
        if not (0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1] and math.isfinite(ratio[1])):
            raise ValueError(f"RandomResizedCrop scale {tuple(scale)} / ratio {tuple(ratio)} must be increasing pairs > 0")
        self.aug, self.size, self.hflip = aug, int(size), hflip
        self.short_side = (int(short_side[0]), int(short_side[-1]))
        self.scale, self.ratio = tuple(scale), tuple(ratio)

    def __call__(self, h: int, w: int) -> CropBox:
        if self.aug == "rrc":
            return sample_rrc(h, w, self.scale, self.ratio, self.hflip)
        return sample_scale(h, w, self.short_side, self.size, self.hflip)
