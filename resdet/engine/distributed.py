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
import inspect
import os
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..utils.env import get_device

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
    "gather_object",
    "broadcast_buffers",
    "reduce_dict",
    "wrap_model",
    "syncs_buffers_every_step",
    "unwrap_model",
    "first_rank_to_stop",
    "cleanup",
]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def init_distributed(backend: Optional[str] = None, device_type: Optional[str] = None, timeout_minutes: float = 30,
                     device: Optional[torch.device] = None) -> bool:
    """Join the process group described by torchrun's environment; return True if distributed.

    `backend` defaults to "nccl" when the process drives a GPU (`device`, else `device_type`, else
    "cuda" if a GPU exists) and "gloo" otherwise. `device` is this process's GPU as
    `resdet.utils.env.get_device` chose it (it handles launchers that show each process one GPU);
    without it, plain "cuda" with LOCAL_RANK is chosen the same way. `timeout_minutes`
    (DIST.TIMEOUT_MINUTES) bounds how long a collective waits for a rank that never arrives. With
    WORLD_SIZE unset or 1 nothing is initialised and False is returned.
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
    if timeout_minutes <= 0:
        raise ValueError(f"DIST.TIMEOUT_MINUTES must be positive; got {timeout_minutes}")
    if device is not None:
        device = torch.device(device)
        device_type = device.type
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if backend is None:
        backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        if device is None or device.index is None:
            device = get_device("cuda", local_rank=int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
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


def gather_object(obj: Any, dst: int = 0) -> Optional[List[Any]]:
    """Every process's `obj` on rank `dst` only (a list indexed by rank); None on the other ranks.

    For results that one process consumes (evaluation): all_gather_object would copy everything to every
    rank. Single process: `[obj]`.
    """
    if not is_distributed():
        return [obj]
    out: Optional[List[Any]] = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (e.g. BN running statistics) to every process, in place.

    For models wrapped with broadcast_buffers=False (detection): before evaluation, so that every
    shard is scored with the buffers of the model that is checkpointed (rank 0's).
    """
    if not is_distributed():
        return
    for buf in unwrap_model(model).buffers():
        dist.broadcast(buf, src)


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


def wrap_model(model: nn.Module, device: torch.device, find_unused_parameters: bool = False,
               broadcast_buffers: bool = True, **ddp_kwargs) -> nn.Module:
    """DistributedDataParallel when distributed, the model itself otherwise.

    device_ids is given only for CUDA (DDP rejects it for CPU modules). DDP broadcasts rank 0's
    parameters and buffers at construction, so every process starts from the same weights. With
    `broadcast_buffers` (DDP's default) it also copies rank 0's buffers to every rank before each
    forward: one more collective per step, useless where buffers never change (frozen BN) or are
    kept in sync by the layer itself (SyncBN), and where they do change (BN) training-mode forwards use
    batch statistics anyway. Detection turns it off (runs/train_det.py).
    """
    if not is_distributed():
        return model
    device = torch.device(device)
    if device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device.index if device.index is not None else torch.cuda.current_device()])
        ddp_kwargs.setdefault("output_device", ddp_kwargs["device_ids"][0])
    if not broadcast_buffers:
        # torch >= 2.14 renamed the per-forward part `forward_sync_buffers` (and warns on the old name);
        # older versions only have broadcast_buffers
        new_name = "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
        ddp_kwargs["forward_sync_buffers" if new_name else "broadcast_buffers"] = False
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters, **ddp_kwargs)


def syncs_buffers_every_step(model: nn.Module) -> bool:
    """Whether a DDP model copies rank 0's buffers to every rank before each forward."""
    return bool(getattr(model, "forward_sync_buffers", getattr(model, "broadcast_buffers", False)))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP and/or torch.compile wrappers (what checkpoints store)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


_FIRST_STOP_KEY = "resdet/first_rank_to_stop"


def first_rank_to_stop() -> int:
    """Record in the process group's store that this rank is stopping on an error, unless another rank
    did so first; return the rank that did it first (this one's own when there is no process group, or
    when the store cannot be reached: it then speaks for itself).

    Used to report a failure once: the first rank says why; ranks whose collectives then fail because it
    is gone ("connection closed by peer") only say that they followed it.
    """
    if not is_distributed():
        return get_rank()
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(datetime.timedelta(seconds=10))  # an error path must not wait for the job's timeout
        return int(store.compare_set(_FIRST_STOP_KEY, "", str(get_rank())))
    except Exception:  # the store's host may be gone already; any failure here just means "speak for yourself"
        return get_rank()


def cleanup() -> None:
    """Leave the process group (call at the end of a distributed run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
