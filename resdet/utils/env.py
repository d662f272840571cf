"""Run environment: seeding, device selection, and random-number-generator state for exact resume.

    seed = seed_all(cfg.SEED)                  # python, numpy, torch (CPU and every GPU); < 0 draws one
    device = get_device(cfg.MODEL.DEVICE)      # "cuda" without a GPU is an error, never a silent CPU run
    state = get_rng_state()                    # goes into the checkpoint ...
    set_rng_state(state)                       # ... and comes back on resume

The RNG state is stored as plain Python values and tensors only (numpy's key array becomes a tensor),
so checkpoints load with `torch.load(weights_only=True)` and never need to unpickle arbitrary objects.
"""
from __future__ import annotations

import logging
import os
import random
from typing import Any, Dict, Optional

import numpy as np
import torch

__all__ = ["seed_all", "DeviceError", "get_device", "get_rng_state", "set_rng_state", "set_deterministic",
           "set_cudnn_benchmark", "peak_memory_mib"]

logger = logging.getLogger(__name__)

_MAX_SEED = 2**31 - 1


def seed_all(seed: int) -> int:
    """Seed Python's `random`, numpy and torch (CPU and all CUDA devices); return the seed used.

    A negative seed draws a fresh one from the OS, so the caller can record it (e.g. in the saved
    config) and reproduce the run later.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int; got {seed!r} of type {type(seed).__name__}")
    seed = int(seed)
    if seed < 0:
        seed = int.from_bytes(os.urandom(4), "little") & _MAX_SEED
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


class DeviceError(ValueError, RuntimeError):
    """MODEL.DEVICE names no device, or one this machine does not have; the message says which."""


def get_device(name: str = "cuda", local_rank: Optional[int] = None, *, device_count: Optional[int] = None,
               cpu_fallback: bool = False) -> torch.device:
    """The torch device for a config string ("cuda", "cuda:N", "cpu", "mps").

    "cuda:N" is GPU N, whatever the rank. Plain "cuda" means this process's GPU: `cuda:<local_rank>`
    (torchrun's LOCAL_RANK; 0 without it) -- except where the launcher shows each process only its own
    GPU (CUDA_VISIBLE_DEVICES per process, as SLURM or some container setups do): then LOCAL_RANK may be
    1, 2, ... while this process sees one device, and that one device is meant. Asking for a GPU that does
    not exist is an error that says so, rather than a slow run on the CPU; with `cpu_fallback` (inference)
    a missing GPU gives the CPU and a warning instead. `device_count` stands in for
    torch.cuda.device_count() (tests, or a caller that knows better); 0 means no GPU.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"MODEL.DEVICE: '{name}' is not a device name (expected 'cuda', 'cuda:N' or 'cpu')") from e
    if device.type == "cuda":
        count = torch.cuda.device_count() if device_count is None else int(device_count)
        available = torch.cuda.is_available() if device_count is None else count > 0
        if not available:
            if cpu_fallback:
                logger.warning("MODEL.DEVICE is %r but no GPU is available: running on the CPU", name)
                return torch.device("cpu")
            raise DeviceError(
                f"MODEL.DEVICE is '{name}' but no CUDA GPU is available to this process "
                "(torch.cuda.is_available() is False); set MODEL.DEVICE cpu to run on the CPU"
            )
        if device.index is not None:
            index = device.index
        else:
            index = local_rank or 0
            if index >= count:
                if count != 1:
                    raise DeviceError(
                        f"LOCAL_RANK={index} but this process sees {count} GPUs: start at most {count} processes "
                        "per machine (torchrun --nproc_per_node), or show each process one GPU"
                    )
                index = 0  # one visible GPU per process: LOCAL_RANK counts processes, not this process's GPUs
        if index >= count:
            raise DeviceError(f"MODEL.DEVICE '{name}' (GPU index {index}) asked for, but only {count} GPU(s) exist")
        return torch.device("cuda", index)
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError(f"MODEL.DEVICE is '{name}' but the MPS backend is not available")
    return device


def set_deterministic(enabled: bool) -> None:
    """Use deterministic kernels where PyTorch has them (CUDNN_DETERMINISTIC); slower, for debugging.

    It also turns cudnn.benchmark off; `set_cudnn_benchmark` may turn it on afterwards for runs whose
    shapes never change.
    """
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = bool(enabled)
    if enabled:
        # cuBLAS needs this workspace setting to be deterministic; it must be set before the first matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(enabled), warn_only=True)


def set_cudnn_benchmark(enabled: bool, deterministic: bool = False) -> None:
    """cuDNN autotuning (CUDNN_BENCHMARK): each new input shape first times every convolution algorithm
    and keeps the fastest. It pays only when shapes repeat, as in fixed-size classification crops; with
    shapes that change every step (detection: image sizes, the mask head's RoI count) it re-tunes nearly
    every step (measured on an H200: torchvision's Mask R-CNN trained at 9.95 img/s with it, 53.3
    without). It cannot be combined with CUDNN_DETERMINISTIC (autotuning may pick a different algorithm
    each run)."""
    if enabled and deterministic:
        raise ValueError("CUDNN_BENCHMARK True and CUDNN_DETERMINISTIC True cannot both hold: autotuning picks "
                         "algorithms by timing, which differs between runs; turn one of them off")
    torch.backends.cudnn.benchmark = bool(enabled)


def peak_memory_mib(device: Any, reset: bool = True) -> Optional[float]:
    """The most memory tensors held on CUDA `device` (MiB) since the last reset, then reset it; None for
    other devices. Both calls name the device: torch's default is the *current* device, which is not
    `device` when a run uses "cuda:N" without making it current."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return peak


def get_rng_state() -> Dict[str, Any]:
    """Every RNG state a training step may draw from, as plain values and tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what `get_rng_state` captured (CUDA states only where this process has GPUs)."""
    missing = [k for k in ("python", "numpy", "torch") if k not in state]
    if missing:
        raise KeyError(f"RNG state is missing {missing}; it has {sorted(state)}")
    py = state["python"]
    # Checkpoint loading may turn the inner tuple into a list; random.setstate insists on tuples.
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(
        (npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
