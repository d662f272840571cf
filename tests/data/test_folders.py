"""Image-folder trees, CIFAR python batches, and on-device CIFAR batches (resdet/data/folders.py)."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resdet.data.folders import (CorruptImageError, DeviceBatches, ImageFolderDataset, MissingDatasetError,
                                 dataset_format, decode_image_folder, iterate_in_order, load_cifar10_python,
                                 mean_image, resolve_dataset_root, split_holdout)
from resdet.data.samplers import InfiniteSampler
from tests.classification.helpers import make_cifar_batches, make_image_tree


def test_image_folder_classes_labels_and_images(tmp_path):
    root = make_image_tree(tmp_path, {"train": 4, "val": 2}, num_classes=3)
    ds = ImageFolderDataset(root, "train")
    assert ds.classes == ["class_0", "class_1", "class_2"]
    assert len(ds) == 12 and sorted(set(ds.labels)) == [0, 1, 2]
    img, label = ds[5]
    assert img.mode == "RGB" and img.size == (32, 32) and label == 1


def test_corrupt_and_truncated_images_are_reported_by_path(tmp_path):
    root = make_image_tree(tmp_path, {"train": 2}, num_classes=2)
    garbage = os.path.join(root, "train", "class_1", "garbage.jpg")
    with open(garbage, "wb") as f:
        f.write(b"this is not a JPEG at all")
    good = os.path.join(root, "train", "class_0", "0000.jpg")
    truncated = os.path.join(root, "train", "class_0", "truncated.jpg")
    with open(good, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 3])
    ds = ImageFolderDataset(root, "train")
    for path in (garbage, truncated):
        idx = [p for p, _ in ds.samples].index(path)
        with pytest.raises(CorruptImageError, match=path):
            ds[idx]
    with pytest.raises(CorruptImageError, match="garbage.jpg|truncated.jpg"):
        decode_image_folder(ds)


def test_bad_images_are_skipped_only_when_asked(tmp_path, caplog):
    import logging

    root = make_image_tree(tmp_path, {"train": 2}, num_classes=2)
    garbage = os.path.join(root, "train", "class_0", "0001.jpg")
    with open(garbage, "wb") as f:
        f.write(b"not an image")
    ds = ImageFolderDataset(root, "train", skip_bad_images=True)
    paths = [p for p, _ in ds.samples]
    i = paths.index(garbage)
    with caplog.at_level(logging.WARNING, logger="resdet.data.folders"):
        image, label = ds[i]
    assert garbage in caplog.text and "SKIP_BAD_IMAGES" in caplog.text
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(paths[i + 1]).convert("RGB")))
    assert label == ds.samples[i + 1][1]


def test_missing_data_says_where_it_looked_and_how_to_prepare(tmp_path):
    with pytest.raises(MissingDatasetError) as e:
        ImageFolderDataset(str(tmp_path / "imagenet"), "train")
    assert str(tmp_path / "imagenet" / "train") in str(e.value) and "datasets/README.md" in str(e.value)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(MissingDatasetError, match="No usable images under"):
        ImageFolderDataset(str(tmp_path / "empty"), "train")
    with pytest.raises(MissingDatasetError) as e:
        load_cifar10_python(str(tmp_path), train=True)
    assert os.path.join(str(tmp_path), "cifar-10-batches-py", "test_batch") in str(e.value)
    assert "datasets/README.md" in str(e.value)


def test_dataset_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path))
    assert resolve_dataset_root("cifar10") == os.path.join(str(tmp_path), "cifar10")
    assert resolve_dataset_root("cifar10", "/data/c10") == "/data/c10"


def test_cifar_python_batches(tmp_path):
    root, expected = make_cifar_batches(tmp_path, per_batch=6)
    assert dataset_format(root) == "cifar-python"
    x, y = load_cifar10_python(root, train=True)
    assert x.dtype == torch.uint8 and x.shape == (30, 3, 32, 32) and y.shape == (30,)
    want = np.concatenate([expected[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert np.array_equal(x.numpy(), want)
    assert y.tolist() == sum((expected[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    xt, yt = load_cifar10_python(os.path.join(root, "cifar-10-batches-py"), train=False)  # the folder itself
    assert np.array_equal(xt.numpy(), expected["test_batch"][0]) and yt.tolist() == expected["test_batch"][1]
    os.remove(os.path.join(root, "cifar-10-batches-py", "data_batch_3"))
    with pytest.raises(MissingDatasetError, match="data_batch_3"):
        load_cifar10_python(root, train=True)


def test_decode_image_folder_matches_pil(tmp_path):
    root = make_image_tree(tmp_path, {"train": 3}, num_classes=2, ext="png")  # lossless: exact comparison
    ds = ImageFolderDataset(root, "train")
    x, y = decode_image_folder(ds)
    assert x.shape == (6, 3, 32, 32) and y.tolist() == ds.labels
    for i, (path, _) in enumerate(ds.samples):
        assert np.array_equal(x[i].permute(1, 2, 0).numpy(), np.asarray(Image.open(path).convert("RGB")))
    Image.new("RGB", (40, 32)).save(os.path.join(root, "train", "class_1", "wide.png"))
    with pytest.raises(ValueError, match="wide.png"):
        decode_image_folder(ImageFolderDataset(root, "train"))


def _reference_crop(img, oy, ox, flip, pad, pad_value):
    padded = torch.stack([F.pad(img[c].float(), (pad,) * 4, value=v) for c, v in enumerate(pad_value)])
    out = padded[:, oy:oy + img.shape[1], ox:ox + img.shape[2]]
    return out.flip(-1) if flip else out


def test_device_batches_pad_crop_flip_matches_per_image_reference():
    x = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    pad_value = (125.0, 123.0, 114.0)
    db = DeviceBatches(x, torch.arange(20), 8, iter(range(10**6)), pad=4, pad_value=pad_value, seed=5)
    out = db.augment(x[:8], db._generator())
    g = db._generator()  # the same draws, in the order augment() makes them
    oy, ox = torch.randint(0, 9, (8,), generator=g), torch.randint(0, 9, (8,), generator=g)
    flip = torch.rand(8, generator=g) < 0.5
    assert 0 < int(flip.sum()) < 8 and len(set(oy.tolist())) > 1
    for i in range(8):
        assert torch.equal(out[i], _reference_crop(x[i], int(oy[i]), int(ox[i]), bool(flip[i]), 4, pad_value))
    # A crop at offset 0 starts with 4 rows of padding, and padding takes exactly pad_value.
    i = int((oy == 0).nonzero()[0]) if (oy == 0).any() else None
    if i is not None:
        assert torch.equal(out[i, :, 0], torch.tensor(pad_value).view(3, 1).expand(3, 32))


def test_device_batches_with_a_per_pixel_mean_are_the_papers_crops():
    """The paper: subtract the mean image, pad with zeros, crop, flip. The model subtracts the mean image
    again, so the batches must be exactly crop(flip(pad(x - M))) + M."""
    x = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    m = mean_image(x, chunk=7)
    assert torch.allclose(m, x.double().mean(0).float(), atol=1e-5) and m.shape == (3, 32, 32)
    db = DeviceBatches(x, torch.arange(20), 8, iter(range(10**6)), pad=4, pad_value=m, seed=5)
    out = db.augment(x[:8], db._generator())
    g = db._generator()
    oy, ox = torch.randint(0, 9, (8,), generator=g), torch.randint(0, 9, (8,), generator=g)
    flip = torch.rand(8, generator=g) < 0.5
    for i in range(8):
        paper = F.pad(x[i].float() - m, (4,) * 4)[:, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
        paper = paper.flip(-1) if flip[i] else paper
        torch.testing.assert_close(out[i] - m, paper, rtol=0, atol=1e-4)
    assert int(((out - m).abs() < 1e-4).sum()) > 0  # some padding is in view, and it is zero
    with pytest.raises(ValueError, match="per-pixel mean needs crop == image size"):
        DeviceBatches(x, torch.arange(20), 8, iter(range(10)), crop=28, pad_value=m)
    with pytest.raises(ValueError, match=r"pad_value must be a mean per channel \[3\] or a mean image"):
        DeviceBatches(x, torch.arange(20), 8, iter(range(10)), pad_value=(1.0, 2.0))


def test_device_batches_resume_from_iteration_alone():
    x = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(50)

    def batches(start, n):
        s = InfiniteSampler(50, seed=3, start=start * 16)
        db = DeviceBatches(x, y, 16, s, seed=3, start_iter=start)
        return [next(db) for _ in range(n)]

    full = batches(0, 7)          # crosses two epoch boundaries
    resumed = batches(4, 3)
    for (a, la), (b, lb) in zip(full[4:], resumed):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(full[0][0], full[1][0])


def test_device_batches_two_shards_equal_one_global_batch():
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(40)
    one = DeviceBatches(x, y, 8, InfiniteSampler(40, seed=1, rank=0, world_size=1), seed=1)
    shards = [DeviceBatches(x, y, 4, InfiniteSampler(40, seed=1, rank=r, world_size=2), seed=1, rank=r, world_size=2)
              for r in range(2)]
    for _ in range(3):
        imgs, labels = next(one)
        parts = [next(s) for s in shards]
        # rank r holds global rows r, r + 2, ...
        assert torch.equal(labels[0::2], parts[0][1]) and torch.equal(labels[1::2], parts[1][1])
        assert torch.equal(imgs[0::2], parts[0][0]) and torch.equal(imgs[1::2], parts[1][0])


def test_iterate_in_order_shards_cover_everything_once():
    x = torch.zeros(10, 3, 4, 4, dtype=torch.uint8)
    y = torch.arange(10)
    seen = [int(l) for r in range(3) for _, labels in iterate_in_order(x, y, 2, r, 3) for l in labels]
    assert sorted(seen) == list(range(10))


def test_holdout_split_is_fixed_and_disjoint():
    a_train, a_val = split_holdout(100, 20)
    b_train, b_val = split_holdout(100, 20)
    assert torch.equal(a_val, b_val) and len(a_val) == 20 and len(a_train) == 80
    assert not set(a_train.tolist()) & set(a_val.tolist())
    with pytest.raises(ValueError, match="CLS.DATA.HOLDOUT"):
        split_holdout(10, 10)


def test_real_cifar10_jpeg_tree(cifar10_jpeg):
    ds = ImageFolderDataset(cifar10_jpeg, "test")
    assert len(ds.classes) == 10 and len(ds) == 10000
    ds.samples, ds.targets = ds.samples[::50], ds.targets[::50]   # decode a spread of 200 real JPEGs
    x, y = decode_image_folder(ds)
    assert x.shape == (200, 3, 32, 32) and set(y.tolist()) == set(range(10))
    assert 60 < x.float().mean() < 190   # real photographs, not blank decodes
