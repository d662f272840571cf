"""The CPU decode-and-crop training input (resdet/classification/decode_crop.py) against torchvision's
transforms on the same photographs with the same seeds.

Tolerances, stated: at full-size decoding RandomResizedCrop is torchvision's output bit for bit. The
scale augmentation's box has fractional edges, which our crop rounds to whole pixels (at most half a
pixel): about 1-2 grey levels mean absolute difference on photographs, per image under 5. Reduced-size
(DCT-scaled) decoding is a slightly different low-pass filter than decode + antialiased resize: per
image mean absolute difference under 10 grey levels (median under 3), PSNR above 24 dB, the same mean
brightness, and at most a few percent less gradient energy (measured: 1.5% at 1/2, 4% at 1/8).
"""
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from resdet.classification.crops import CropSampler
from resdet.classification.decode_crop import ColorJitterUint8, DecodeCrop, collate_channels_last
from resdet.data.folders import CorruptImageError, ImageFolderDataset
from resdet.data.jpeg import decode_rgb, read_file, shrink_for


def _full_decode(path):
    return torch.from_numpy(decode_rgb(read_file(path), path)[0]).permute(2, 0, 1).contiguous()


def _rrc_reference(size):
    return T.Compose([T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip()])


def _scale_reference(size=224, short=(256, 480)):
    return T.Compose([T.RandomShortestSize(list(range(short[0], short[1] + 1)), antialias=True), T.RandomCrop(size),
                      T.RandomHorizontalFlip()])


def _gradient(x):
    x = x.float()
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def test_rrc_at_full_size_is_torchvisions_output_exactly(photos):
    ours = DecodeCrop(CropSampler("rrc", 224))
    flips = 0
    for seed, path in enumerate(photos.small_paths):
        img = _full_decode(path)
        torch.manual_seed(seed)
        box = ours.sampler(*img.shape[1:])
        assert shrink_for(box.height, box.width, 224, 224) == 0   # ImageNet-sized: never reducible at 224
        torch.manual_seed(seed)
        want = _rrc_reference(224)(img)
        torch.manual_seed(seed)
        got = ours(path)
        assert got.dtype == torch.uint8 and got.shape == (3, 224, 224)
        assert torch.equal(got, want), path
        assert got.permute(1, 2, 0).is_contiguous()   # HWC memory: batches stack without a transpose
        flips += box.flip
    assert 0 < flips < len(photos.small_paths)


def test_scale_augmentation_is_close_to_the_reference(photos):
    ours = DecodeCrop(CropSampler("scale", 224), max_shrink=0)
    diffs = []
    for seed, path in enumerate(photos.small_paths[:10]):
        img = _full_decode(path)
        torch.manual_seed(seed)
        want = _scale_reference()(img)
        torch.manual_seed(seed)
        got = ours(path)
        diffs.append(float((got.float() - want.float()).abs().mean()))
    assert max(diffs) < 5.0 and np.median(diffs) < 3.0, diffs


# 224 crops of the big photos, and (the same arithmetic, cheaper) 56 crops of ImageNet-sized ones with the
# scale augmentation's short side range scaled down alike
@pytest.mark.parametrize("aug,size,short,big", [("rrc", 224, None, True), ("rrc", 56, None, False),
                                                ("scale", 56, (64, 120), False)])
def test_reduced_size_decoding_is_close_to_full_decoding(photos, aug, size, short, big):
    ours = DecodeCrop(CropSampler(aug, size, short_side=short or (256, 480)))
    ref = _rrc_reference(size) if aug == "rrc" else _scale_reference(size, short)
    seen, rows = set(), []
    paths = photos.big_paths * 2 if big else photos.small_paths[:12]
    for seed, path in enumerate(paths):
        img = _full_decode(path)
        torch.manual_seed(seed)
        box = ours.sampler(*img.shape[1:])
        k = shrink_for(box.height, box.width, size, size)
        torch.manual_seed(seed)
        want = ref(img)
        torch.manual_seed(seed)
        got = ours(path)
        d = (got.float() - want.float())
        psnr = 10 * np.log10(255.0 ** 2 / max(float((d ** 2).mean()), 1e-9))
        seen.add(k)
        if k:
            rows.append((float(d.abs().mean()), psnr, float(d.mean()), _gradient(got) / _gradient(want)))
    assert seen & {1, 2, 3}, "no crop was decoded at a reduced size"
    rows = np.array(rows)
    assert rows[:, 0].max() < 10.0 and np.median(rows[:, 0]) < 3.0, rows[:, 0]
    assert rows[:, 1].min() > 24.0, rows[:, 1]
    assert abs(rows[:, 2].mean()) < 0.5                   # no brightness shift
    assert 0.93 < rows[:, 3].mean() <= 1.01               # a hair softer at most


def test_png_and_bad_files(tmp_path, photos, caplog):
    root = tmp_path / "tree"
    (root / "train" / "a").mkdir(parents=True)
    arr = np.array(Image.open(photos.small_paths[0]).convert("RGB"))
    Image.fromarray(arr).save(root / "train" / "a" / "0.png")
    good = root / "train" / "a" / "1.jpg"
    Image.fromarray(arr).save(good, quality=90)
    data = good.read_bytes()
    (root / "train" / "a" / "2_truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "train" / "a" / "3_garbage.jpg").write_bytes(b"no image here")
    loader = DecodeCrop(CropSampler("rrc", 64))
    # a PNG is decoded whole and cropped like a JPEG: lossless, so exactly torchvision's output
    torch.manual_seed(3)
    want = _rrc_reference(64)(torch.from_numpy(arr).permute(2, 0, 1).contiguous())
    torch.manual_seed(3)
    assert torch.equal(loader(str(root / "train" / "a" / "0.png")), want)
    ds = ImageFolderDataset(str(root), "train", loader=loader)
    for name in ("2_truncated.jpg", "3_garbage.jpg"):
        with pytest.raises(CorruptImageError, match=name):
            ds[[os.path.basename(p) for p, _ in ds.samples].index(name)]
    skipping = ImageFolderDataset(str(root), "train", loader=loader, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="resdet.data.folders"):
        img, label = skipping[2]      # the truncated file: reported, and the next good one... wraps to 0.png
    assert "2_truncated.jpg" in caplog.text and "3_garbage.jpg" in caplog.text and img.shape == (3, 64, 64)


def test_batches_are_uint8_channels_last_and_jitter_keeps_the_layout(photos):
    loader = DecodeCrop(CropSampler("rrc", 64))
    jitter = ColorJitterUint8(0.4)
    items = [(jitter(loader(p)), i) for i, p in enumerate(photos.small_paths[:4])]
    images, labels = collate_channels_last(items)
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8 and labels.tolist() == [0, 1, 2, 3]
    assert images.is_contiguous(memory_format=torch.channels_last)
    for i, (im, _) in enumerate(items):
        assert torch.equal(images[i], im)
