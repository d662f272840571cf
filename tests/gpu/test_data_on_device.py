"""Data on the device: the in-memory CIFAR recipe's batches, and pinned non-blocking copies."""
import os

import pytest
import torch
import torch.nn.functional as F

from resdet.config import load_config
from resdet.data.folders import DeviceBatches, mean_image
from resdet.data.samplers import InfiniteSampler
from resdet.engine.trainer import move_to_device

from .helpers import CONFIGS

pytestmark = pytest.mark.gpu


def test_in_memory_cifar_batches_are_the_recipe(device):
    """Every sample is crop(flip(pad(x - m))) + m of its own image, exactly (m: the per-pixel mean), with
    crop offsets uniform over the 2*PAD+1 positions, flips at rate 1/2, each image once per epoch."""
    from resdet.benchmarks.photos import photo_batch

    cfg = load_config(os.path.join(CONFIGS, "cifar10_resnet20.yaml"))
    pad, crop, batch = cfg.CLS.INPUT.PAD, cfg.CLS.INPUT.CROP_SIZE, cfg.SOLVER.IMS_PER_BATCH
    n, steps = 4 * batch, 16
    images = photo_batch(n, crop, crop, seed=2)
    labels = torch.arange(n)  # the label names the image a sample came from
    mean = mean_image(images)
    assert cfg.CLS.DATA.PER_PIXEL_MEAN and cfg.CLS.INPUT.HFLIP
    batches = DeviceBatches(images.to(device), labels.to(device), batch, InfiniteSampler(n, seed=0), pad=pad,
                            crop=crop, hflip=True, pad_value=mean.to(device), seed=0)
    # every (offset y, offset x, flip) a sample can have, computed on the CPU
    padded = F.pad(images.float() - mean, (pad, pad, pad, pad))
    positions = [(oy, ox, f) for oy in range(2 * pad + 1) for ox in range(2 * pad + 1) for f in (False, True)]
    seen = []
    for step in range(steps):
        out, idx = next(batches)
        assert out.device.type == device.type and out.dtype == torch.float32 and out.shape == (batch, 3, crop, crop)
        out, idx = out.cpu(), idx.cpu()
        if step % 4 == 0:  # one epoch: every image exactly once
            epoch = [idx]
        else:
            epoch.append(idx)
        if step % 4 == 3:
            assert torch.equal(torch.cat(epoch).sort().values, torch.arange(n))
        for sample, i in zip(out, idx.tolist()):
            match = None
            for oy, ox, f in positions:
                window = padded[i, :, oy:oy + crop, ox:ox + crop]
                expected = (window.flip(-1) if f else window) + mean
                if torch.equal(sample, expected):
                    match = (oy, ox, f)
                    break
            assert match is not None, f"step {step}: a sample of image {i} is no pad-crop-flip of it"
            seen.append(match)
    total = len(seen)
    flips = sum(f for _, _, f in seen) / total
    assert abs(flips - 0.5) < 5 * (0.25 / total) ** 0.5, flips  # 5 sigma
    for axis in (0, 1):
        counts = torch.bincount(torch.tensor([s[axis] for s in seen]), minlength=2 * pad + 1).float()
        expected = total / (2 * pad + 1)
        sigma = (expected * (1 - 1 / (2 * pad + 1))) ** 0.5
        assert counts.min() > expected - 5 * sigma and counts.max() < expected + 5 * sigma, counts


def test_pinned_non_blocking_batches_equal_plain_ones(cuda_only, tmp_path):
    """The detection loader pins its batches on a CUDA machine; the trainer's non-blocking copies of
    them equal plain blocking copies of the same batches, even while the loader keeps producing."""
    from resdet.data.loader import build_detection_train_loader

    device = cuda_only
    cfg = load_config(os.path.join(CONFIGS, "quickstart_shapes.yaml"),
                      ["MODEL.DEVICE", str(device), "DATASETS.SHAPES.ROOT", str(tmp_path / "shapes"),
                       "DATASETS.SHAPES.NUM_TRAIN", 16, "DATALOADER.NUM_WORKERS", 2, "SOLVER.IMS_PER_BATCH", 4])
    loader = build_detection_train_loader(cfg)
    assert loader.pin_memory
    moved, kept = [], []
    for step, batch in enumerate(loader):
        images, targets = batch
        assert all(im.is_pinned() for im in images)
        moved.append(move_to_device(batch, device))  # non_blocking=True copies, as every training step
        kept.append(([im.clone() for im in images], [{k: v.clone() for k, v in t.items()} for t in targets]))
        if step == 5:
            break
    torch.cuda.synchronize(device)
    for (images, targets), (ref_images, ref_targets) in zip(moved, kept):
        for a, b in zip(images, ref_images):
            assert torch.equal(a.cpu(), b)
        for a, b in zip(targets, ref_targets):
            assert all(torch.equal(a[k].cpu(), b[k]) for k in b)
