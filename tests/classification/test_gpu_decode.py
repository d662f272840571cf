"""The device decoder (resdet/classification/gpu_decode.py), run on the CPU: torchvision.io.decode_jpeg
decodes there too, and the batched crop/resize/flip is the same code on either device.

Tolerance: its resampling is torchvision's antialiased bilinear filter in float (torch's uint8 kernel
rounds its weights to fixed point), so outputs are within 1 grey level of the CPU path's for
RandomResizedCrop, and of torchvision's v2 pipeline for the scale augmentation (whose fractional box
it resamples exactly).
"""
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2 as T

from resdet.classification.crops import CropSampler
from resdet.classification.decode_crop import DecodeCrop, collate_channels_last
from resdet.classification.device_input import DeviceInput
from resdet.classification.gpu_decode import (ReadEncoded, collate_encoded, decode_batch, jpeg_sof_marker,
                                              resample_weights)
from resdet.classification.transforms import PCALighting, pca_lighting_batch
from resdet.data.folders import CorruptImageError
from resdet.data.jpeg import decode_rgb, read_file

CPU = torch.device("cpu")


def _encoded(paths, aug="rrc", size=224, seed=0):
    loader = ReadEncoded(CropSampler(aug, size))
    torch.manual_seed(seed)
    return collate_encoded([(loader(p), i) for i, p in enumerate(paths)])


def _cpu_path(paths, aug="rrc", size=224, seed=0):
    loader = DecodeCrop(CropSampler(aug, size), max_shrink=0)
    torch.manual_seed(seed)
    return collate_channels_last([(loader(p), i) for i, p in enumerate(paths)])[0]


def test_same_boxes_and_the_cpu_paths_pixels_within_one_level(photos):
    paths = photos.small_paths[:6]
    batch, labels = _encoded(paths)
    out, lab = decode_batch(batch, labels, CPU)
    want = _cpu_path(paths)
    assert out.shape == (6, 3, 224, 224) and out.dtype == torch.uint8 and lab.tolist() == list(range(6))
    assert out.is_contiguous(memory_format=torch.channels_last) and not batch.on_cpu.any()
    assert int((out.int() - want.int()).abs().max()) <= 1
    assert 0 < int(batch.flips.sum()) < 6    # flips happen, and are applied (else the difference would be large)


def test_scale_augmentation_matches_torchvisions_pipeline(photos):
    paths = photos.small_paths[6:10]
    batch, labels = _encoded(paths, "scale", seed=3)
    out, _ = decode_batch(batch, labels, CPU)
    ref = T.Compose([T.RandomShortestSize(list(range(256, 481)), antialias=True), T.RandomCrop(224),
                     T.RandomHorizontalFlip()])
    torch.manual_seed(3)
    wants = []
    for p in paths:  # the reference consumes the same draws as the worker did, image after image
        img = torch.from_numpy(decode_rgb(read_file(p), p)[0]).permute(2, 0, 1).contiguous()
        wants.append(ref(img))
    assert int((out.int() - torch.stack(wants).int()).abs().max()) <= 1


def test_resample_weights_are_torchs_antialiased_resize():
    x = torch.rand(1, 3, 37, 53) * 255
    for out in (16, 37, 90):   # down, same, up
        ry = resample_weights(torch.tensor([0.0]), torch.tensor([37.0]), out, torch.tensor([0]), torch.tensor([37]), 40)
        rx = resample_weights(torch.tensor([0.0]), torch.tensor([53.0]), out, torch.tensor([0]), torch.tensor([53]), 60)
        assert torch.allclose(ry.sum(-1), torch.ones(1, out)) and float(ry[0, :, 37:].abs().sum()) == 0.0
        got = ry[:, None] @ F.pad(x, (0, 7, 0, 3)) @ rx.transpose(1, 2)[:, None]
        want = F.interpolate(x, size=(out, out), mode="bilinear", antialias=True, align_corners=False)
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)


def test_chunked_canvases_give_the_same_batch(photos):
    batch, labels = _encoded(photos.small_paths[:4], size=64, seed=1)
    whole, _ = decode_batch(batch, labels, CPU)
    pieces, _ = decode_batch(batch, labels, CPU, max_canvas_bytes=1)   # one image per canvas
    assert torch.equal(whole, pieces)


def test_non_jpeg_progressive_and_truncated_files_are_decoded_in_the_worker(photos, tmp_path):
    arr = np.asarray(Image.open(photos.small_paths[0]).convert("RGB"))
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(arr).save(tmp_path / "p.jpg", quality=90, progressive=True)
    Image.fromarray(arr).save(tmp_path / "b.jpg", quality=90)
    data = (tmp_path / "b.jpg").read_bytes()
    assert jpeg_sof_marker(data) == 0xC0 and jpeg_sof_marker((tmp_path / "p.jpg").read_bytes()) == 0xC2
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    paths = [str(tmp_path / n) for n in ("a.png", "p.jpg", "b.jpg")]
    batch, labels = _encoded(paths, size=96, seed=2)
    assert batch.on_cpu.tolist() == [True, True, False] and batch.decoded.shape == (2, 3, 96, 96)
    out, _ = decode_batch(batch, labels, CPU)
    assert torch.equal(out[:2], batch.decoded)
    with pytest.raises(CorruptImageError, match="t.jpg"):   # no EOI marker: the worker's CPU decoder names it
        ReadEncoded(CropSampler("rrc", 96))(str(tmp_path / "t.jpg"))
    # a grayscale JPEG goes to the device decoder and comes out RGB, like the CPU path's
    Image.fromarray(arr).convert("L").save(tmp_path / "g.jpg", quality=90)
    batch, labels = _encoded([str(tmp_path / "g.jpg")], size=96, seed=5)
    assert not batch.on_cpu.any()
    out, _ = decode_batch(batch, labels, CPU)
    want = _cpu_path([str(tmp_path / "g.jpg")], size=96, seed=5)
    assert out.shape == (1, 3, 96, 96) and int((out.int() - want.int()).abs().max()) <= 1


def _corrupt_scan(data: bytes) -> bytes:
    # garble the entropy-coded data but keep the markers: only decoding itself can find it
    sos = data.index(b"\xff\xda")
    body = bytearray(data)
    for i in range(sos + 40, len(body) - 10, 7):
        if body[i] != 0xFF and body[i - 1] != 0xFF:
            body[i] = 0xFF
    return bytes(body)


def test_a_file_the_device_decoder_rejects_is_named_or_skipped(photos, tmp_path, caplog):
    good = read_file(photos.small_paths[1])
    bad = _corrupt_scan(good)
    (tmp_path / "bad.jpg").write_bytes(bad)
    paths = [photos.small_paths[1], str(tmp_path / "bad.jpg"), photos.small_paths[2]]
    batch, labels = _encoded(paths, size=64, seed=4)
    assert not batch.on_cpu.any()   # header and EOI are intact: it reaches the device decoder
    with pytest.raises(CorruptImageError, match="bad.jpg"):
        decode_batch(batch, labels, CPU)
    with caplog.at_level(logging.WARNING, logger="resdet.classification.gpu_decode"):
        out, lab = decode_batch(batch, labels, CPU, skip_bad_images=True)
    assert "bad.jpg" in caplog.text
    assert lab.tolist() == [0, 0, 2] and torch.equal(out[1], out[0])   # its slot took another image


def test_pca_lighting_on_the_device_batch_is_pcalighting_per_image():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    ref = PCALighting(0.1)
    wants, alphas = [], []
    for i in range(4):
        torch.manual_seed(i)
        wants.append(ref(x[i]))                 # PCALighting draws alpha = randn(3) * std
        torch.manual_seed(i)
        alphas.append(torch.randn(3) * 0.1)
    out = pca_lighting_batch(x, torch.stack(alphas))
    assert out.dtype == torch.uint8 and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, torch.stack(wants)) and not torch.equal(out, x)


def test_device_input_draws_per_iteration_and_splits_the_global_batch_by_rank():
    x = torch.full((4, 3, 4, 4), 128, dtype=torch.uint8)
    y = torch.arange(4)
    one = DeviceInput(iter([(x, y)] * 2), CPU, pca_std=0.1, seed=7, start_iter=5)
    a1, _ = next(one)
    a2, _ = next(one)
    assert not torch.equal(a1, a2)                       # iteration 5 and 6 draw differently
    again, _ = next(DeviceInput(iter([(x, y)]), CPU, pca_std=0.1, seed=7, start_iter=6))
    assert torch.equal(again, a2)                        # resuming at 6 draws what iteration 6 drew
    x8 = torch.full((8, 3, 4, 4), 128, dtype=torch.uint8)
    full, _ = next(DeviceInput(iter([(x8, torch.arange(8))]), CPU, pca_std=0.1, seed=7, start_iter=5))
    r1, _ = next(DeviceInput(iter([(x, y)]), CPU, pca_std=0.1, seed=7, start_iter=5, rank=1, world_size=2))
    assert torch.equal(r1, full[1::2])                   # rank 1 of 2 = every other row of the global batch


def test_decode_batch_makes_no_synchronisation(photos, tmp_path):
    # host metadata reaches the device by non-blocking copies from pinned memory (on CUDA) and nothing
    # is read back; the counter sees what a GPU would wait for (resdet/utils/counting.py)
    from resdet.utils.counting import count_ops

    arr = np.asarray(Image.open(photos.small_paths[0]).convert("RGB"))
    Image.fromarray(arr).save(tmp_path / "a.png")          # decoded in the worker: the on_cpu rows
    paths = [str(tmp_path / "a.png"), *photos.small_paths[1:4]]
    batch, labels = _encoded(paths, size=64, seed=3)
    assert batch.on_cpu.tolist() == [True, False, False, False]
    with count_ops() as c:
        c.mark_host(batch.boxes, batch.clamp, batch.flips, batch.on_cpu, batch.decoded, batch.data, labels)
        decode_batch(batch, labels, CPU)
    assert c.h2d_copies == 0 and not c.undeclared, c.summary()
    assert c.host_reads == 0, c.summary()  # on_cpu is host metadata: reading it waits for nothing


def test_a_bad_file_is_found_with_few_batched_calls_and_decoded_alone_on_the_cpu(photos, tmp_path, monkeypatch):
    import resdet.classification.gpu_decode as gd

    bad = _corrupt_scan(read_file(photos.small_paths[1]))
    (tmp_path / "bad.jpg").write_bytes(bad)
    paths = [photos.small_paths[i % 4] for i in range(7)] + [str(tmp_path / "bad.jpg")]
    batch, labels = _encoded(paths, size=64, seed=4)
    calls = []
    real = gd._decode_on_device

    def spy(data, device):
        calls.append(len(data))
        return real(data, device)

    monkeypatch.setattr(gd, "_decode_on_device", spy)
    out, lab = decode_batch(batch, labels, CPU, skip_bad_images=True)
    # 8 -> 4 + 4 -> 2 + 2 -> 1 + 1: the good files in a few batched calls, never one call per image
    assert calls == [8, 4, 4, 2, 2, 1, 1] and lab.tolist() == list(range(7)) + [0]
    assert torch.equal(out[7], out[0])
    calls.clear()
    good, _ = decode_batch(*_encoded(paths[:7], size=64, seed=4), CPU)
    assert calls == [7] and torch.equal(out[:7], good)  # the same pixels as without the bad file


def test_device_input_works_one_batch_ahead_and_ends_with_the_loader():
    pulled = []

    def loader():
        for i in range(3):
            pulled.append(i)
            yield torch.full((2, 3, 4, 4), i, dtype=torch.uint8), torch.tensor([i, i])

    batches = DeviceInput(loader(), CPU)
    seen = []
    for images, labels in batches:
        # while batch i is handed out, batch i + 1 is already on its way to the device
        assert pulled == list(range(min(labels[0].item() + 2, 3)))
        seen.append(int(images[0, 0, 0, 0]))
    assert seen == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(batches)
    with pytest.raises(StopIteration):
        next(DeviceInput(iter(()), CPU))
