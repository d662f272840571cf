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
