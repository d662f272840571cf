"""Every image mode decodes to the right 8-bit RGB pixels, in detection (read_image) and classification
(read_image_rgb) alike; modes with no 8-bit reading and decompression bombs are errors naming the file."""

import cv2
import numpy as np
import pytest
from PIL import Image

from resdet.data.coco import ImageFileError, check_image_file, read_image
from resdet.data.folders import CorruptImageError, read_image_rgb

H, W = 24, 32


def _ramp16():
    return (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 85).astype(np.uint16)  # 0 .. 65195


def _save(tmp_path, name, img, **kw):
    path = str(tmp_path / name)
    img.save(path, **kw)
    return path


def _rgb_pixels(seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _cases(tmp_path):
    """(path, expected HxWx3 uint8) for each mode."""
    cases = {}
    g16 = _ramp16()
    path = _save(tmp_path, "grey16.png", Image.fromarray(g16))
    assert Image.open(path).mode == "I;16"
    cases["16-bit grey"] = (path, np.repeat((g16 >> 8).astype(np.uint8)[..., None], 3, -1))

    rgb16 = np.stack([g16, 65535 - g16, np.full_like(g16, 40000)], -1)
    path = str(tmp_path / "rgb16.png")
    cv2.imwrite(path, rgb16[..., ::-1])  # PIL cannot write 16-bit RGB; OpenCV writes BGR
    cases["16-bit RGB"] = (path, (rgb16 >> 8).astype(np.uint8))

    bits = (np.indices((H, W)).sum(0) % 3 == 0)
    cases["1-bit"] = (_save(tmp_path, "bits.png", Image.fromarray(bits)),
                      np.repeat(np.where(bits, 255, 0).astype(np.uint8)[..., None], 3, -1))

    palette_rgb = np.array([[255, 0, 0], [0, 128, 255], [10, 200, 30]], np.uint8)
    index = (np.arange(H * W).reshape(H, W) % 3).astype(np.uint8)
    pal = Image.fromarray(index, "P")
    pal.putpalette(palette_rgb.flatten().tolist())
    cases["palette"] = (_save(tmp_path, "palette.png", pal), palette_rgb[index])
    cases["palette + transparency"] = (_save(tmp_path, "palette_t.png", pal, transparency=1), palette_rgb[index])

    rgb = _rgb_pixels()
    alpha = np.random.default_rng(1).integers(0, 256, size=(H, W), dtype=np.uint8)
    cases["RGBA"] = (_save(tmp_path, "rgba.png", Image.fromarray(np.dstack([rgb, alpha]), "RGBA")), rgb)
    grey = rgb[..., 0]
    cases["LA"] = (_save(tmp_path, "la.png", Image.fromarray(np.dstack([grey, alpha]), "LA")),
                   np.repeat(grey[..., None], 3, -1))

    cmyk = Image.fromarray(rgb).convert("CMYK")
    cases["CMYK"] = (_save(tmp_path, "cmyk.tif", cmyk), np.array(cmyk.convert("RGB")))

    # 16-bit grey stored 32 wide x 24 high with EXIF "rotate 90 clockwise" (6): upright it is 24 x 32
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = g16.T.copy()  # 32 x 24 stored, so that the upright image is H x W again after transposing back
    path = _save(tmp_path, "grey16_exif.png", Image.fromarray(stored), exif=exif)
    upright = np.rot90(stored, k=-1)  # orientation 6: rotate the stored pixels 90 degrees clockwise
    cases["16-bit grey, EXIF-rotated"] = (path, np.repeat((upright >> 8).astype(np.uint8)[..., None], 3, -1))
    return cases


def test_every_mode_decodes_to_the_right_8_bit_rgb(tmp_path):
    for name, (path, expected) in _cases(tmp_path).items():
        got = read_image(path)
        assert got.dtype == np.uint8 and got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)
        if "EXIF" not in name:  # classification reads pixels as stored (torchvision's ImageFolder does too)
            np.testing.assert_array_equal(np.array(read_image_rgb(path)), expected, err_msg=name)
    # the failure this fixes: PIL's own conversion clips 16-bit grey to white
    assert np.array(Image.open(str(tmp_path / "grey16.png")).convert("RGB")).mean() > 250
    assert read_image(str(tmp_path / "grey16.png")).mean() < 130


def test_modes_without_an_8_bit_reading_are_errors_naming_the_file(tmp_path):
    wide = (np.arange(H * W, dtype=np.int32).reshape(H, W) * 1000)  # up to ~768k: not 8- or 16-bit
    path = _save(tmp_path, "wide.tif", Image.fromarray(wide, "I"))
    with pytest.raises(ImageFileError, match=r"wide.tif.*mode 'I'.*0\.\.767000"):
        read_image(path)
    path = _save(tmp_path, "float.tif", Image.fromarray(np.ones((H, W), np.float32)))
    with pytest.raises(ImageFileError, match=r"float.tif.*mode 'F'"):
        read_image(path)
    with pytest.raises(CorruptImageError, match=r"float.tif.*mode 'F'"):
        read_image_rgb(path)
    small = _save(tmp_path, "small_i.tif", Image.fromarray((wide % 256).astype(np.int32), "I"))
    np.testing.assert_array_equal(read_image(small)[..., 0], wide % 256)  # 8-bit values in 32 bits: as they are


def test_a_decompression_bomb_is_an_error_naming_the_file(tmp_path, monkeypatch):
    path = _save(tmp_path, "bomb.png", Image.fromarray(_rgb_pixels()))
    # PIL refuses images over 2 x MAX_IMAGE_PIXELS when it opens them; lower the limit instead of
    # writing a gigapixel file
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", (H * W) // 4)
    for call in (lambda: check_image_file(path, W, H, decode=False), lambda: read_image(path)):
        with pytest.raises(ImageFileError, match=r"bomb.png.*DecompressionBombError.*raise that limit"):
            call()
    with pytest.raises(CorruptImageError, match="bomb.png.*DecompressionBombError"):
        read_image_rgb(path)
