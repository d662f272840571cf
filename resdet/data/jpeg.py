"""Reading training images fast: file bytes, JPEG headers, and decoding at a reduced JPEG DCT scale.

`probe(data, path)` reads an image's size from its header (no decoding); `decode_rgb(data, path, shrink)`
decodes to an HxWx3 uint8 array, a JPEG at 1/2**shrink of its size (libjpeg-turbo's DCT scaling: the
inverse DCT runs on the low-frequency corner of each 8x8 block, so a half-size decode costs well under a
full one and is already low-pass filtered), anything else (PNG, BMP, ...) whole through PIL. JPEGs that
libjpeg-turbo cannot convert to RGB (CMYK, YCCK) go through PIL too; `probe` marks them not scalable.
Unreadable files raise `CorruptImageError` naming the file, as `read_image_rgb` does.

Decoder choice, measured with `tools/benchmark.py --loader imagenet --decoders` (200 of the
ImageNet-sized photographs of `resdet/benchmarks/photos.py`, longer side 350-500 px, q90; one thread;
medians of 7 interleaved rounds on two cores shared with other jobs, load ~9.5, so only the ratios
carry over):

    full size:  simplejpeg 683   OpenCV imdecode 614   torchvision.io 549   PIL 323  img/s
    half size:  simplejpeg 758 (header read included)   OpenCV IMREAD_REDUCED_COLOR_2 814   PIL draft 557

simplejpeg (libjpeg-turbo, Cython, decodes straight into a numpy array) is the fastest at full size,
which is what ImageNet-sized images at a 224 crop need almost always (a crop must be 448 px on both
sides before 1/2 is allowed); it reads headers without decoding (the crop box, hence the scale, is
chosen from the size first), scales by 1/2, 1/4, 1/8, and raises on truncated data with strict=True.
OpenCV's reduced modes are a little faster at 1/2 but cannot read a header alone; torchvision.io's
decoders are deprecated as of torchvision 0.29 and cannot scale; PIL pays for its internal 4-byte
layout and the copy out. No installed decoder exposes libjpeg-turbo's partial (cropped) decompression
(TurboJPEG 3's tj3SetCroppingRegion; PyTurboJPEG needs a system libturbojpeg), so crops are cut after
decoding. Without simplejpeg, PIL's `draft` (also libjpeg-turbo DCT scaling) is the fallback.

`read_image_fast(path, width, height)` is `coco.read_image` for the detection mapper (an HxWx3 array, EXIF
orientation applied, checked against the JSON's size, ImageFileError naming the file) with JPEGs decoded
by simplejpeg: 640x480 quality-90 photographs decode in 0.96 ms against PIL's 2.3 ms on one core, to the
same pixels (libjpeg-turbo's accurate DCT and smooth chroma upsampling, as PIL; tested). Anything it
cannot decode identically goes to `read_image`, which then returns the same array or raises the same
named error: files that are not JPEG, CMYK/YCCK JPEGs, EXIF orientation other than 1, a size other than
the JSON's, more pixels than PIL's decompression-bomb limit, any libjpeg warning or error.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from .coco import read_image
from .folders import CorruptImageError

try:  # optional: a small wheel with libjpeg-turbo inside; PIL's draft mode is the fallback
    import simplejpeg
except ImportError:  # pragma: no cover - exercised by forcing backend="pil" in the tests
    simplejpeg = None
HAVE_SIMPLEJPEG = simplejpeg is not None

__all__ = ["ImageInfo", "MAX_SHRINK", "read_file", "probe", "decode_rgb", "decoder_backend", "jpeg_looks_complete",
           "shrink_for", "read_image_fast", "read_any_image_fast", "HAVE_SIMPLEJPEG"]

# Largest DCT reduction: 1/8 (libjpeg's power-of-two scales are 1/2, 1/4, 1/8).
MAX_SHRINK = 3
_JPEG_SOI = b"\xff\xd8"
# Colour spaces libjpeg-turbo converts to RGB itself; CMYK/YCCK JPEGs go through PIL.
_RGB_DECODABLE = ("YCbCr", "Gray", "RGB")


def decoder_backend(backend: str = "auto") -> str:
    """"simplejpeg" when installed (or asked for), else "pil"."""
    if backend not in ("auto", "simplejpeg", "pil"):
        raise ValueError(f"JPEG decoder backend must be 'auto', 'simplejpeg' or 'pil'; got {backend!r}")
    if backend == "simplejpeg" and simplejpeg is None:
        raise ImportError("simplejpeg is not installed: pip install simplejpeg (or use backend 'pil')")
    if backend == "auto":
        return "simplejpeg" if simplejpeg is not None else "pil"
    return backend


@dataclass(frozen=True)
class ImageInfo:
    """An image's size from its header, and whether it is a JPEG libjpeg-turbo can decode (and scale)."""

    height: int
    width: int
    jpeg: bool


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CorruptImageError(f"Cannot read image '{path}': {type(e).__name__}: {e}") from e


def _error(path: str, e: Exception) -> CorruptImageError:
    return CorruptImageError(f"Cannot read image '{path}': {type(e).__name__}: {e}")


def probe(data: bytes, path: str, backend: str = "auto") -> ImageInfo:
    """Size from the header alone; a file neither simplejpeg nor PIL can parse is a CorruptImageError."""
    if data[:2] == _JPEG_SOI and decoder_backend(backend) == "simplejpeg":
        try:
            h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
            return ImageInfo(int(h), int(w), colorspace in _RGB_DECODABLE)
        except ValueError:
            pass  # not a baseline/progressive JPEG simplejpeg understands: let PIL try
    try:
        with Image.open(io.BytesIO(data)) as img:  # lazy: reads the header only
            return ImageInfo(img.height, img.width, img.format == "JPEG" and img.mode in ("RGB", "L"))
    except Exception as e:  # PIL raises several unrelated types for garbage
        raise _error(path, e) from e


def decode_rgb(data: bytes, path: str, shrink: int = 0, backend: str = "auto") -> Tuple[np.ndarray, int]:
    """(HxWx3 uint8 RGB, the shrink achieved): a JPEG decoded at 1/2**shrink of its size, i.e.
    ceil(H / 2**shrink) x ceil(W / 2**shrink); other files (and JPEGs libjpeg-turbo cannot convert to RGB)
    whole, with shrink 0. Truncated or garbled files raise CorruptImageError naming `path`."""
    if not 0 <= shrink <= MAX_SHRINK:
        raise ValueError(f"shrink must be in [0, {MAX_SHRINK}] (scale 1/2**shrink); got {shrink}")
    if decoder_backend(backend) == "simplejpeg" and data[:2] == _JPEG_SOI:
        try:
            h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
            # a header's size is what simplejpeg allocates: beyond PIL's decompression-bomb limit PIL decides
            # (and names the file) instead of a MemoryError for a 65500 x 65500 header
            if colorspace in _RGB_DECODABLE and not (Image.MAX_IMAGE_PIXELS and h * w > Image.MAX_IMAGE_PIXELS):
                f = 1 << shrink
                # simplejpeg picks the smallest libjpeg scale whose output is at least min_height x
                # min_width: asking for ceil(side / 2**shrink) gives exactly the 1/2**shrink scale.
                img = simplejpeg.decode_jpeg(data, "RGB", min_height=-(-h // f) if shrink else 0,
                                             min_width=-(-w // f) if shrink else 0, strict=True)
                return img, shrink
        except ValueError:
            pass  # strict=True raises on truncated/corrupt data too: PIL decides and names the error below
    return _decode_pil(data, path, shrink)


def _decode_pil(data: bytes, path: str, shrink: int) -> Tuple[np.ndarray, int]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            achieved = 0
            if shrink and img.format == "JPEG":
                w, h = img.size
                f = 1 << shrink
                # draft() picks the largest DCT scale whose result is at least the requested size, scale
                # = min(w // req_w, h // req_h): asking for floor(side / f) gives f for any crop-worthy size.
                img.draft("RGB", (max(1, w // f), max(1, h // f)))
                achieved = _achieved_shrink(w, h, img.size)
            return np.asarray(img.convert("RGB")), achieved  # convert() forces the decode: truncation shows here
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
        raise _error(path, e) from e


def _achieved_shrink(w: int, h: int, size: Tuple[int, int]) -> int:
    for k in range(MAX_SHRINK + 1):
        if size == (-(-w // (1 << k)), -(-h // (1 << k))):
            return k
    raise RuntimeError(f"unexpected JPEG draft size {size} for a {w}x{h} image")


def jpeg_looks_complete(data: bytes, tail: int = 1024) -> bool:
    """A cheap check for truncation: a whole JPEG ends with the EOI marker (FFD9), possibly followed by a
    few padding bytes some encoders append. Used where the decoder is on the GPU and a truncated file
    would otherwise only show there."""
    return data[-tail:].rfind(b"\xff\xd9") >= 0


def shrink_for(box_h: float, box_w: float, out_h: int, out_w: int, max_shrink: int = MAX_SHRINK) -> int:
    """The largest k <= max_shrink with box / 2**k still at least the output size on both sides: the
    smallest DCT scale at which a crop of box_h x box_w source pixels keeps the output resolution."""
    k = 0
    while k < max_shrink and box_h / (2 << k) >= out_h and box_w / (2 << k) >= out_w:
        k += 1
    return k


# ---------------------------------------------------------------------------------------------------
# Detection reads: coco.read_image, faster for JPEGs
# ---------------------------------------------------------------------------------------------------
_EXIF_APP1 = b"Exif\x00\x00"


def _exif_orientation(data: bytes) -> int:
    """The EXIF orientation of a JPEG (1 when it has none). Only files that carry an Exif block at all
    are parsed (by PIL, from the header alone, 0.2 ms); the substring test costs microseconds, and a false
    hit in the compressed data merely costs that parse."""
    if _EXIF_APP1 not in data:
        return 1
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.getexif().get(0x0112, 1))
    except Exception:  # an unreadable header: let the reference reader name the problem
        return -1


def read_image_fast(path: str, width: Optional[int] = None, height: Optional[int] = None) -> np.ndarray:
    """`read_image(path, width, height)`: an HxWx3 uint8 RGB array, EXIF orientation applied, checked
    against the JSON's size, ImageFileError naming the file otherwise; JPEGs decoded by simplejpeg."""
    if simplejpeg is None or width is None or height is None:
        return read_image(path, width, height)
    return _read_jpeg_fast(path, (height, width))


def read_any_image_fast(path: str) -> np.ndarray:
    """`read_image(path)` for an image of any size (no JSON to check it against): the same pixels and
    errors, JPEGs decoded by simplejpeg (tools/predict.py's decoding)."""
    if simplejpeg is None:
        return read_image(path)
    return _read_jpeg_fast(path, None)


def _read_jpeg_fast(path: str, size: Optional[Tuple[int, int]]) -> np.ndarray:
    """simplejpeg for a plain JPEG of `size` (h, w; None: any); everything else by read_image."""
    width, height = (size[1], size[0]) if size is not None else (None, None)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return read_image(path, width, height)  # names the file (missing, unreadable)
    if not data.startswith(_JPEG_SOI):
        return read_image(path, width, height)
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if (colorspace not in ("YCbCr", "Gray") or (size is not None and (h, w) != tuple(size))
                or (Image.MAX_IMAGE_PIXELS and h * w > Image.MAX_IMAGE_PIXELS) or _exif_orientation(data) != 1):
            return read_image(path, width, height)
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:  # corrupt, truncated, or a libjpeg warning: the reference reader decides
        return read_image(path, width, height)
