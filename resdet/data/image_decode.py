"""Decoded PIL images of any mode -> 8-bit RGB, with the right scaling.

PIL's `convert("RGB")` clips 16-bit greyscale (modes "I;16", "I;16B", ...) to 255 instead of scaling it,
so a 16-bit PNG (depth maps, medical and industrial cameras) turns all white without a word. 16-bit
RGB PNGs and TIFFs PIL itself already reads as 8-bit RGB by keeping the high byte of each value; 16-bit
grey is given the same rule here, so both decode alike. Modes with no standard 8-bit reading (32-bit
integers beyond 0..255, floating point) are an error rather than a guess. Alpha is dropped, as
torchvision's and OpenCV's readers do; palette, 1-bit, CMYK and the rest go through PIL's converters.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["to_rgb8", "SIXTEEN_BIT_MODES"]

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb8(img: Image.Image) -> Image.Image:
    """`img` (loaded) as an 8-bit RGB image; ValueError (for the caller to name the file) when its
    pixel values have no standard 8-bit reading."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in SIXTEEN_BIT_MODES:
        grey = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)  # the high byte, as PIL reads 16-bit RGB
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "I":
        values = np.asarray(img)
        lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if lo < 0 or hi > 255:
            raise ValueError(f"32-bit integer pixels (PIL mode 'I') with values {lo}..{hi} have no standard "
                             "8-bit reading; save the image as 8- or 16-bit")
        return Image.fromarray(values.astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        raise ValueError("floating-point pixels (PIL mode 'F') have no standard 8-bit reading; save the "
                         "image as 8- or 16-bit")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL warns when a palette image with transparency goes straight to RGB
    return img.convert("RGB")
