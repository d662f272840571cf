"""Distributed training helpers around torch.distributed, for runs started by `torchrun`.

One process per GPU (or several CPU processes), on one machine or many:

    torchrun --nproc_per_node=8 tools/train_det.py CONFIG                  # one machine
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 \\
             --master_addr=10.0.0.1 --master_port=29500 tools/train_det.py CONFIG   # first of two machines

`init_distributed()` reads what torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
and joins the process group: NCCL when the process drives a GPU, gloo otherwise. Started without
torchrun it does nothing and every helper below behaves as for a single process, so the same script
runs both ways. On several machines, OUTPUT_DIR must be shared by all of them, and NCCL_SOCKET_IFNAME /
GLOO_SOCKET_IFNAME pick the network interface if the default one is wrong (DESIGN.md, Engine, Multi-node;
tested by tests/engine/test_multinode.py).
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "init_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "get_local_rank",
    "is_main_process",
    "synchronize",
    "all_gather_object",
    "broadcast_object",
    "reduce_dict",
    "wrap_model",
    "unwrap_model",
    "cleanup",
]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def init_distributed(backend: Optional[str] = None, device_type: Optional[str] = None, timeout_minutes: int = 30) -> bool:
    """Join the process group described by torchrun's environment; return True if distributed.

    `backend` defaults to "nccl" when `device_type` is "cuda" (default: "cuda" if a GPU exists) and
    "gloo" otherwise. With WORLD_SIZE unset or 1 nothing is initialised and False is returned.
    """
    if dist.is_available() and dist.is_initialized():
        return True
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return False
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but the environment lacks {missing}; start the script with torchrun "
            "(which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)"
        )
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if backend is None:
        backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} GPU(s); "
                "use --nproc_per_node no larger than the GPU count"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=int(os.environ["RANK"]),
        world_size=world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK); 0 without torchrun."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """A barrier over all processes; a no-op when not distributed."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_gather_object(obj: Any) -> List[Any]:
    """Each process's `obj` (any picklable value), as a list indexed by rank."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every process (e.g. a seed drawn on rank 0)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def reduce_dict(values: Dict[str, torch.Tensor], average: bool = True) -> Dict[str, torch.Tensor]:
    """Mean (or sum) of each scalar tensor over all processes, for logging losses.

    Every process must pass the same keys; they are sorted so the stacked tensor lines up.
    """
    if not is_distributed() or not values:
        return dict(values)
    names = sorted(values)
    stacked = torch.stack([torch.as_tensor(values[k]).detach().float().reshape(()) for k in names])
    if dist.get_backend() == "nccl" and stacked.device.type != "cuda":
        stacked = stacked.cuda()
    dist.all_reduce(stacked)
    if average:
        stacked /= get_world_size()
    return dict(zip(names, stacked))


def wrap_model(model: nn.Module, device: torch.device, find_unused_parameters: bool = False, **ddp_kwargs) -> nn.Module:
    """DistributedDataParallel when distributed, the model itself otherwise.

    device_ids is given only for CUDA (DDP rejects it for CPU modules). DDP broadcasts rank 0's
    parameters and buffers at construction, so every process starts from the same weights.
    """
    if not is_distributed():
        return model
    device = torch.device(device)
    if device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device.index if device.index is not None else torch.cuda.current_device()])
        ddp_kwargs.setdefault("output_device", ddp_kwargs["device_ids"][0])
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP and/or torch.compile wrappers (what checkpoints store)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def cleanup() -> None:
    """Leave the process group (call at the end of a distributed run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
