"""CLS.DATA.DECODE "gpu" on a real GPU: nvJPEG's batched decode and the batched crop/resize on CUDA.

- Pixels against the CPU path: nvJPEG's IDCT and chroma upsampling differ from libjpeg-turbo's, most at
  colour edges, so this tests what torchvision tests for its CUDA decoder (mean absolute difference
  under 2 grey levels) plus a high percentile (99% of values within 8 levels), not every pixel.
- Crop geometry exactly: the device resampling of the CPU decoder's own pixels (the same image data,
  uploaded) equals the CPU path within 1 level at every pixel.
- No synchronisation: decode_batch runs under sync debug mode "error" (pinned non-blocking copies, no
  read back), and DeviceInput hands out batch k while batch k + 1 decodes on its side stream, giving
  the same batches as decoding on the step's stream.
- The throughput of the device stage is printed.

Run: python -m pytest tests/gpu -m gpu -q -s
"""
import time

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG decoding)")]


def _batches(paths, size=224, seed=0):
    from resdet.classification.crops import CropSampler
    from resdet.classification.decode_crop import DecodeCrop, collate_channels_last
    from resdet.classification.gpu_decode import ReadEncoded, collate_encoded

    enc, cpu = ReadEncoded(CropSampler("rrc", size)), DecodeCrop(CropSampler("rrc", size), max_shrink=0)
    torch.manual_seed(seed)
    batch, labels = collate_encoded([(enc(p), i) for i, p in enumerate(paths)])
    torch.manual_seed(seed)
    want, _ = collate_channels_last([(cpu(p), i) for i, p in enumerate(paths)])
    return batch, labels, want


def test_cuda_decode_matches_the_cpu_path_and_reports_throughput(photos):
    from resdet.classification.gpu_decode import _resample, collate_encoded, decode_batch
    from resdet.data.jpeg import decode_rgb

    paths = photos.small_paths
    batch, labels, want = _batches(paths)
    dev = torch.device("cuda")
    out, lab = decode_batch(batch, labels, dev)
    assert out.device.type == "cuda" and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(lab.cpu(), labels)
    d = (out.cpu().float() - want.float()).abs()
    mean, p99 = float(d.mean()), float(torch.quantile(d.flatten()[::7], 0.99))
    print(f"\nnvJPEG + device resampling vs the CPU path: mean |diff| {mean:.3f}, 99th percentile {p99:.1f}, "
          f"max {float(d.max()):.0f} grey levels")
    assert mean < 2 and p99 <= 8, (mean, p99)
    # the geometry alone: the CPU decoder's pixels resampled on the device
    images = [torch.from_numpy(decode_rgb(open(p, "rb").read(), p)[0]).permute(2, 0, 1).to(dev) for p in paths]
    geo = _resample(images, batch.boxes.to(dev), batch.clamp.to(dev), batch.flips.to(dev), batch.size)
    assert int((geo.cpu().int() - want.int()).abs().max()) <= 1
    # throughput of the device stage alone on a 256-image batch made of these photos
    from resdet.classification.crops import CropSampler
    from resdet.classification.gpu_decode import ReadEncoded

    enc = ReadEncoded(CropSampler("rrc", 224))
    big, labels = collate_encoded([(enc(paths[i % len(paths)]), 0) for i in range(256)])
    decode_batch(big, labels, dev)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        decode_batch(big, labels, dev)
    torch.cuda.synchronize()
    print(f"device decode + crop/resize/flip: {5 * 256 / (time.perf_counter() - t0):.0f} img/s "
          f"({torch.cuda.get_device_name()})")


def test_decoding_makes_no_synchronisation_and_runs_one_batch_ahead_on_a_side_stream(photos):
    from resdet.classification.device_input import DeviceInput
    from resdet.classification.gpu_decode import decode_batch

    dev = torch.device("cuda")
    loader = [_batches(photos.small_paths, seed=s)[:2] for s in range(3)]
    for batch, _ in loader:
        batch.pin_memory()  # as DataLoader(pin_memory=True) leaves it
    decode_batch(*loader[0], dev)  # warm-up: nvJPEG handles, the pinned-memory cache
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        decode_batch(*loader[1], dev)
        got = [images.clone() for images, _ in DeviceInput(iter(loader), dev)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    want = [decode_batch(*b, dev)[0] for b in loader]
    assert len(got) == 3 and all(torch.equal(a, b) for a, b in zip(got, want))
