"""Header reads and reduced-size JPEG decoding (resdet/data/jpeg.py), with both backends."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from resdet.data.folders import CorruptImageError
from resdet.data.jpeg import decode_rgb, jpeg_looks_complete, probe, shrink_for

BACKENDS = ["simplejpeg", "pil"]


def _photo(h=301, w=457, seed=0):
    # smooth colour gradients plus texture: a photograph-like signal (noise alone is the worst case for JPEG)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(x / 37.0), 128 + 100 * np.cos(y / 23.0), (x + y) % 256], -1)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def _encode(img, fmt="JPEG", mode="RGB", **kw):
    b = io.BytesIO()
    Image.fromarray(img).convert(mode).save(b, fmt, **kw)
    return b.getvalue()


@pytest.mark.parametrize("backend", BACKENDS)
def test_jpeg_decodes_at_each_dct_scale_with_ceil_sizes(backend):
    img = _photo()
    data = _encode(img, quality=90)
    info = probe(data, "x.jpg", backend)
    assert (info.height, info.width, info.jpeg) == (301, 457, True)
    full, k = decode_rgb(data, "x.jpg", 0, backend)
    assert k == 0 and full.shape == (301, 457, 3)
    assert np.array_equal(full, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))  # same libjpeg-turbo
    for shrink in (1, 2, 3):
        out, k = decode_rgb(data, "x.jpg", shrink, backend)
        f = 1 << shrink
        assert k == shrink and out.shape == (-(-301 // f), -(-457 // f), 3)
        # a DCT-scaled decode is close to the full decode averaged over f x f blocks
        pooled = full[: 301 // f * f, : 457 // f * f].reshape(301 // f, f, 457 // f, f, 3).mean((1, 3))
        diff = np.abs(out[: 301 // f, : 457 // f].astype(float) - pooled)
        assert diff.mean() < 4.0, (shrink, diff.mean())


@pytest.mark.parametrize("backend", BACKENDS)
def test_png_grayscale_and_cmyk_decode_whole(backend):
    img = _photo(64, 80)
    png, k = decode_rgb(_encode(img, "PNG"), "x.png", 2, backend)
    assert k == 0 and np.array_equal(png, img) and not probe(_encode(img, "PNG"), "x.png", backend).jpeg
    gray = _encode(img, mode="L")
    out, k = decode_rgb(gray, "g.jpg", 1, backend)
    assert out.shape == (32, 40, 3) and k == 1 and probe(gray, "g.jpg", backend).jpeg
    cmyk = _encode(img, mode="CMYK")
    assert not probe(cmyk, "c.jpg", backend).jpeg      # libjpeg-turbo does not convert CMYK: PIL does
    out, k = decode_rgb(cmyk, "c.jpg", 0, backend)
    assert k == 0 and np.array_equal(out, np.asarray(Image.open(io.BytesIO(cmyk)).convert("RGB")))
    out, k = decode_rgb(cmyk, "c.jpg", 1, backend)   # PIL's draft still scales it
    assert k == 1 and out.shape == (32, 40, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_files_are_named(backend, tmp_path):
    data = _encode(_photo(), quality=90)
    with pytest.raises(CorruptImageError, match="garbage.jpg"):
        probe(b"not an image at all", "garbage.jpg", backend)
    truncated = data[: len(data) // 3]
    assert not jpeg_looks_complete(truncated) and jpeg_looks_complete(data)
    for shrink in (0, 1):
        with pytest.raises(CorruptImageError, match="cut.jpg"):
            decode_rgb(truncated, "cut.jpg", shrink, backend)
    from resdet.data.jpeg import read_file

    with pytest.raises(CorruptImageError, match="missing.jpg"):
        read_file(os.path.join(str(tmp_path), "missing.jpg"))


def test_shrink_for_keeps_the_crop_at_the_output_size():
    assert shrink_for(447, 1000, 224, 224) == 0      # a 447-px side would drop below 224 at 1/2
    assert shrink_for(448, 448, 224, 224) == 1
    assert shrink_for(1000, 900, 224, 224) == 2
    assert shrink_for(5000, 5000, 224, 224) == 3     # 1/8 is the smallest libjpeg scale
    assert shrink_for(5000, 5000, 224, 224, max_shrink=1) == 1
