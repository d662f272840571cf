import random

import numpy as np
import pytest
import torch

from resdet.utils.env import get_device, get_rng_state, seed_all, set_rng_state


def _draw():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seed_all_reproduces_every_rng():
    assert seed_all(7) == 7
    first = _draw()
    seed_all(7)
    assert _draw() == first
    seed_all(8)
    assert _draw() != first


def test_negative_seed_draws_a_valid_one():
    seeds = {seed_all(-1) for _ in range(3)}
    assert all(0 <= s < 2**31 for s in seeds)
    assert len(seeds) > 1  # drawn from the OS, not a constant


def test_seed_all_rejects_non_int():
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_all(1.5)


def test_rng_state_roundtrip_through_checkpoint_file(tmp_path):
    seed_all(3)
    _draw()
    state = get_rng_state()
    expected = [_draw() for _ in range(3)]
    path = tmp_path / "rng.pth"
    torch.save(state, path)
    seed_all(99)  # scramble
    set_rng_state(torch.load(path, weights_only=True))  # plain values only: loads without pickle
    assert [_draw() for _ in range(3)] == expected


def test_get_device_cpu_and_errors():
    assert get_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'gpu0' is not a device name"):
        get_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when there is no GPU")
def test_get_device_cuda_without_gpu_is_an_error():
    with pytest.raises(RuntimeError, match="no CUDA GPU is available.*MODEL.DEVICE cpu"):
        get_device("cuda")


def test_get_device_picks_the_asked_gpu_with_a_faked_device_count():
    # "cuda:N" is GPU N whatever LOCAL_RANK says (tools/eval.py outside torchrun used to take GPU 0)
    assert get_device("cuda:1", local_rank=0, device_count=2) == torch.device("cuda", 1)
    # plain "cuda" is this process's GPU: LOCAL_RANK
    assert get_device("cuda", local_rank=1, device_count=2) == torch.device("cuda", 1)
    assert get_device("cuda", device_count=2) == torch.device("cuda", 0)
    # a launcher that shows each process only its own GPU: LOCAL_RANK 3, one visible device -> that one
    assert get_device("cuda", local_rank=3, device_count=1) == torch.device("cuda", 0)
    # more processes than visible GPUs is a mistake, said as such
    with pytest.raises(RuntimeError, match=r"LOCAL_RANK=3 but this process sees 2 GPUs"):
        get_device("cuda", local_rank=3, device_count=2)
    with pytest.raises(RuntimeError, match=r"GPU index 2\) asked for, but only 2 GPU"):
        get_device("cuda:2", device_count=2)
    with pytest.raises(RuntimeError, match="no CUDA GPU is available"):
        get_device("cuda:0", device_count=0)


def test_get_device_cpu_fallback_warns(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="resdet.utils.env"):
        assert get_device("cuda:1", device_count=0, cpu_fallback=True) == torch.device("cpu")
    assert "no GPU is available: running on the CPU" in caplog.text


def test_peak_memory_names_the_device_and_resets_it(monkeypatch):
    from resdet.utils.env import peak_memory_mib

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: calls.append(("peak", device)) or 3 * 2**20)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append(("reset", device)))
    assert peak_memory_mib("cuda:1") == 3.0
    assert calls == [("peak", torch.device("cuda", 1)), ("reset", torch.device("cuda", 1))]
    assert peak_memory_mib("cpu") is None and len(calls) == 2


def test_cudnn_benchmark_switch():
    from resdet.utils.env import set_cudnn_benchmark, set_deterministic

    try:
        set_deterministic(False)
        set_cudnn_benchmark(True)
        assert torch.backends.cudnn.benchmark is True
        with pytest.raises(ValueError, match="CUDNN_BENCHMARK True and CUDNN_DETERMINISTIC True"):
            set_cudnn_benchmark(True, deterministic=True)
    finally:
        set_cudnn_benchmark(False)
