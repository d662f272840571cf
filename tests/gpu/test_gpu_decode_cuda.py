"""CLS.DATA.DECODE "gpu" on a real GPU: nvJPEG's batched decode and the batched crop/resize on CUDA give
the CPU path's images (within 2 grey levels: nvJPEG's IDCT and colour conversion differ from
libjpeg-turbo's by a level here and there, TF32 matmuls add rounding), and the throughput is printed.

Run: python -m pytest tests/gpu -m gpu -q -s
"""
import time

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG decoding)")]


def test_cuda_decode_matches_the_cpu_path_and_reports_throughput(photos):
    from resdet.classification.crops import CropSampler
    from resdet.classification.decode_crop import DecodeCrop, collate_channels_last
    from resdet.classification.gpu_decode import ReadEncoded, collate_encoded, decode_batch

    paths = photos.small_paths
    enc, cpu = ReadEncoded(CropSampler("rrc", 224)), DecodeCrop(CropSampler("rrc", 224), max_shrink=0)
    torch.manual_seed(0)
    batch, labels = collate_encoded([(enc(p), i) for i, p in enumerate(paths)])
    torch.manual_seed(0)
    want, _ = collate_channels_last([(cpu(p), i) for i, p in enumerate(paths)])
    dev = torch.device("cuda")
    out, lab = decode_batch(batch, labels, dev)
    assert out.device.type == "cuda" and out.is_contiguous(memory_format=torch.channels_last)
    d = (out.cpu().int() - want.int()).abs()
    assert int(d.max()) <= 2 and float(d.float().mean()) < 0.5, (int(d.max()), float(d.float().mean()))
    # throughput of the device stage alone on a 256-image batch made of these photos
    big, labels = collate_encoded([(enc(paths[i % len(paths)]), 0) for i in range(256)])
    decode_batch(big, labels, dev)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        decode_batch(big, labels, dev)
    torch.cuda.synchronize()
    print(f"\ndevice decode + crop/resize/flip: {5 * 256 / (time.perf_counter() - t0):.0f} img/s "
          f"({torch.cuda.get_device_name()})")
