"""read_image_fast must be read_image: the same pixels for every JPEG it decodes itself, and the same
result or the same named error for everything it hands back to read_image."""
import os

import numpy as np
import pytest
from PIL import Image

from resdet.data.coco import ImageFileError, read_image
from resdet.data.jpeg import HAVE_SIMPLEJPEG, read_image_fast

pytestmark = pytest.mark.skipif(not HAVE_SIMPLEJPEG, reason="simplejpeg not installed: read_image_fast is read_image")


def _photo_like(h=72, w=96, seed=0):
    """Smooth colour content (blurred noise), so JPEG has real detail and chroma to decode."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _save(path, pixels, **kwargs):
    Image.fromarray(pixels).save(path, **kwargs)
    return str(path)


@pytest.mark.parametrize("kind", ["420", "444", "progressive", "grey"])
def test_same_pixels_as_pil(tmp_path, kind, monkeypatch):
    from resdet.data import jpeg

    pixels = _photo_like()
    if kind == "grey":
        path = _save(tmp_path / "g.jpg", pixels[..., 0], quality=90)
    else:
        opts = {"420": {"subsampling": 2}, "444": {"subsampling": 0}, "progressive": {"progressive": True}}[kind]
        path = _save(tmp_path / "c.jpg", pixels, quality=90, **opts)
    ref = read_image(path, 96, 72)
    monkeypatch.setattr(jpeg, "read_image", None)  # these must not fall back to PIL
    ours = read_image_fast(path, 96, 72)
    assert ours.dtype == np.uint8 and ours.shape == (72, 96, 3) and ours.flags.writeable
    assert np.array_equal(ours, ref)


def test_cases_left_to_read_image_give_its_result(tmp_path):
    pixels = _photo_like()
    # EXIF orientation 6 (rotate 90): stored 96x72, shown 72x96
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "rot.jpg", quality=90, exif=exif)
    Image.fromarray(pixels).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=90)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    for name, (w, h) in {"rot.jpg": (72, 96), "cmyk.jpg": (96, 72), "p.png": (96, 72)}.items():
        path = str(tmp_path / name)
        assert np.array_equal(read_image_fast(path, w, h), read_image(path, w, h)), name


def test_bad_files_raise_read_images_errors(tmp_path):
    path = _save(tmp_path / "ok.jpg", _photo_like(), quality=90)
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8" + os.urandom(300))
    for bad, w, h in [(str(truncated), 96, 72), (str(garbage), 96, 72), (str(tmp_path / "missing.jpg"), 96, 72),
                      (path, 100, 72)]:  # last: the JSON says another size
        with pytest.raises(ImageFileError) as ref:
            read_image(bad, w, h)
        with pytest.raises(ImageFileError) as ours:
            read_image_fast(bad, w, h)
        assert str(ours.value) == str(ref.value) and os.path.basename(bad) in str(ours.value)
