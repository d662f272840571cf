"""Count aten ops (kernel launches, roughly) and host reads of tensor data, on any device.

On a GPU every read of tensor data by the host (`.item()`, `bool(t)`, `.tolist()`, `nonzero`, a boolean
mask index, `unique`, a copy to the CPU) waits for the stream to drain, and every aten op is (about) one
kernel launch. Both can be counted on the CPU, where nothing stalls, by watching the ops go through the
dispatcher:

    from resdet.utils.counting import count_ops

    with count_ops() as c:
        losses = model(images, targets)
        sum(losses.values()).backward()
    c.host_reads, c.aten_ops, c.reads_by_kind      # 5, 1830, {"item": 1, "tolist": 1, "nonzero": 3}
    print(c.summary())                              # where each read comes from (file:line, count)

What counts as a host read (the kind names of `reads_by_kind`):
  item        aten._local_scalar_dense / is_nonzero: `.item()`, `bool(t)`, `int(t)`, `float(t)`, f"{t:.2f}"
  tolist, numpy  Tensor.tolist / Tensor.numpy (they bypass the dispatcher, so they are patched here)
  nonzero     aten.nonzero (also `torch.where(mask)` and `mask.nonzero()`); nonzero_static is free
  bool_index  indexing with a boolean mask, read (x[mask]) or written (x[mask] = v) — except the write
              PyTorch turns into masked_fill (one mask, a 0-dim value on the CPU, i.e. a Python number)
  masked_select, unique (all variants), equal (torch.equal returns a Python bool)
  repeat_interleave  with tensor repeats and no output_size (the output length is read)
  bincount    the CUDA kernel reads max() to size its output, so it counts everywhere
  to_host     a copy of a non-CPU tensor to the CPU (`.cpu()`, `.to("cpu")`, `copy_` into a CPU tensor);
              on a CPU-only run these copies do not exist and the tolist/numpy/item that follows counts
Two more kinds of synchronisation are counted apart from the reads:
  nms_calls   torchvision's NMS: on CUDA each call reads its count of kept boxes to the host (a sync)
  h2d_copies  blocking host-to-device copies: on CUDA a copy from host memory without `non_blocking`
              waits for the stream. Seen on a CPU run by what the code asks for: a tensor made from
              host data (Python numbers, lists, numpy arrays) with an explicit `device=` (torch.tensor,
              torch.as_tensor), or a host tensor (made from host data without a device, pinned, computed
              from host tensors only, or marked by `mark_host`) moved by `.to(...)` / `copy_` without
              non_blocking=True. On a GPU run the copies themselves are seen (CPU source, CUDA
              destination, blocking).
`syncs` is their sum with `host_reads`: the budget of resdet/DESIGN.md (at most 8 per training step and
per inference call, at any batch).

A synchronisation the budget allows is written inside `declared_sync(device, what)`: on a GPU run under
`torch.cuda.set_sync_debug_mode("error")` the block lifts the mode, so every other sync raises where it
happens (tests/gpu/test_host_reads.py), and `sync_log()` lists the declared blocks that ran. The counter
records which reads and copies happened outside any declared block (`undeclared`): what the GPU's error
mode would stop at, rehearsed on the CPU.

`aten_ops` counts every op the dispatcher sees below autograd, forward and backward (also views,
which launch no kernel; `kernel_ops` leaves the view and metadata ops out). Ops called inside another
op's kernel (a composite's parts) are not seen, so the counts are of what Python code asks for.
"""
from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import weakref
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCounter", "count_ops", "declared_sync", "sync_log", "copy_is_blocking"]

_aten = torch.ops.aten


def _overloads(*packets) -> set:
    out = set()
    for p in packets:
        for name in p.overloads():
            out.add(getattr(p, name))
    return out


# op -> read kind, for ops that always read tensor data to the host
_READ_OPS: Dict[object, str] = {}
for _op in _overloads(_aten._local_scalar_dense, _aten.is_nonzero):
    _READ_OPS[_op] = "item"
for _op in _overloads(_aten.nonzero):
    _READ_OPS[_op] = "nonzero"
for _op in _overloads(_aten.masked_select):
    _READ_OPS[_op] = "masked_select"
for _op in _overloads(_aten._unique, _aten._unique2, _aten.unique_dim, _aten.unique_consecutive,
                      _aten.unique_dim_consecutive):
    _READ_OPS[_op] = "unique"
for _op in _overloads(_aten.equal):
    _READ_OPS[_op] = "equal"
for _op in _overloads(_aten.bincount):
    _READ_OPS[_op] = "bincount"

_INDEX_OPS = _overloads(_aten.index)
_INDEX_PUT_OPS = _overloads(_aten.index_put, _aten.index_put_, _aten._index_put_impl_, _aten._unsafe_index_put)
_REPEAT_INTERLEAVE_OPS = {_aten.repeat_interleave.Tensor}
_COPY_OPS = _overloads(_aten._to_copy, _aten.copy_, _aten.copy)

# ops that only make a new view or read metadata: no kernel runs
_VIEW_OPS = set()
for _name in ("view", "_unsafe_view", "reshape", "as_strided", "t", "transpose", "permute", "expand", "squeeze",
              "unsqueeze", "slice", "select", "split", "split_with_sizes", "unbind", "chunk", "narrow", "detach",
              "alias", "view_as", "expand_as", "flatten", "unflatten", "diagonal", "lift_fresh", "sym_size",
              "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size", "_reshape_alias", "movedim",
              "numpy_T", "real", "view_as_real", "view_as_complex", "_local_scalar_dense"):
    _packet = getattr(_aten, _name, None)
    if _packet is not None:
        _VIEW_OPS |= _overloads(_packet)

# frames from these files are skipped when saying where a read comes from
_SKIP_FILES = (os.path.abspath(__file__), os.sep + "torch" + os.sep, os.sep + "contextlib.py", os.sep + "runpy.py")


class _TensorSet:
    """Tensors by identity, held weakly. (A WeakSet compares its members with ==, which for tensors is
    elementwise: `t in weakset` raises for a tensor of more than one element.)"""

    def __init__(self):
        self._items: "weakref.WeakValueDictionary[int, torch.Tensor]" = weakref.WeakValueDictionary()

    def add(self, t: torch.Tensor) -> None:
        self._items[id(t)] = t

    def __contains__(self, t) -> bool:
        return self._items.get(id(t)) is t

    def __len__(self) -> int:
        return len(self._items)


def _is_bool_index(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)


class OpCounter(TorchDispatchMode):
    """A dispatch mode counting aten ops and host reads; use through `count_ops()`.

    Attributes after the block: `aten_ops`, `kernel_ops`, `host_reads`, `reads_by_kind` (kind -> count),
    `ops_by_name` (op name -> count), `nms_calls`, `h2d_copies`, `syncs` (reads + copies + NMS calls),
    `reads` (one (kind, where) per read or blocking copy, `where` the innermost frames outside torch, for
    `summary()`), and `undeclared` (the (kind, where) of those outside any `declared_sync` block).
    `stack_depth` frames are kept per read (0: none).
    """

    def __init__(self, stack_depth: int = 3):
        super().__init__()
        self.stack_depth = stack_depth
        self.aten_ops = 0
        self.kernel_ops = 0
        self.nms_calls = 0
        self.h2d_copies = 0
        self.undeclared: List[Tuple[str, Tuple[str, ...]]] = []
        self.ops_by_name: collections.Counter = collections.Counter()
        self.reads_by_kind: collections.Counter = collections.Counter()
        self.reads: List[Tuple[str, Tuple[str, ...]]] = []
        self._patched: List[Tuple[object, str, object]] = []
        # host copies already counted (their .tolist()/.numpy()/.item() is no second read), and a flag
        # set while a patched tolist/numpy runs (its own device-to-host copy is that one read)
        self._host_copies = _TensorSet()
        self._in_patched = False
        # tensors that live on the host on any device: made from host data without a device, or pinned
        self._host_tensors = _TensorSet()

    # ------------------------------------------------------------------ results
    @property
    def host_reads(self) -> int:
        return sum(self.reads_by_kind.values())

    @property
    def syncs(self) -> int:
        """Every synchronisation counted: host reads, blocking host-to-device copies, NMS calls."""
        return self.host_reads + self.h2d_copies + self.nms_calls

    def summary(self, limit: int = 20) -> str:
        """The read sites, most frequent first: `count  kind  file:line (caller ...)`."""
        sites = collections.Counter(self.reads)
        lines = [f"{self.syncs} syncs: {self.host_reads} host reads ({dict(self.reads_by_kind)}), "
                 f"{self.h2d_copies} blocking host-to-device copies, {self.nms_calls} NMS calls; "
                 f"{self.aten_ops} aten ops ({self.kernel_ops} not views)"]
        for (kind, where), n in sites.most_common(limit):
            lines.append(f"{n:6d}  {kind:<17} {' <- '.join(where) or '?'}")
        if len(sites) > limit:
            lines.append(f"   ... {len(sites) - limit} more sites")
        for kind, where in self.undeclared[:limit]:
            lines.append(f"  undeclared {kind:<17} {' <- '.join(where) or '?'}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ recording
    def _where(self) -> Tuple[str, ...]:
        if self.stack_depth <= 0:
            return ()
        out, frame = [], sys._getframe(1)
        while frame is not None and len(out) < self.stack_depth:  # frame walking: no source lines read
            path = frame.f_code.co_filename
            if not any(s in path for s in _SKIP_FILES):
                out.append(f"{_short(path)}:{frame.f_lineno} {frame.f_code.co_name}")
            frame = frame.f_back
        return tuple(out)

    def record_read(self, kind: str) -> None:
        where = self._where()
        self.reads_by_kind[kind] += 1
        self._record(kind, where)

    def record_h2d(self) -> None:
        self.h2d_copies += 1
        self._record("h2d_copy", self._where())

    def _record(self, kind: str, where: Tuple[str, ...]) -> None:
        self.reads.append((kind, where))
        if not _declared_depth():
            self.undeclared.append((kind, where))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.aten_ops += 1
        self.ops_by_name[str(func.overloadpacket)] += 1
        if func not in _VIEW_OPS:
            self.kernel_ops += 1
        kind = None if self._in_patched else self._read_kind(func, args, kwargs)
        if (kind == "item" and isinstance(args[0], torch.Tensor)
                and (args[0] in self._host_copies or args[0] in self._host_tensors)):
            kind = None  # a value already on the host
        if kind is not None:
            self.record_read(kind)
        elif func.name().startswith("torchvision::nms"):
            self.nms_calls += 1
            if not _declared_depth():
                self.undeclared.append(("nms", self._where()))
        elif func in _COPY_OPS and _device_copy_blocks(func, args, kwargs):
            self.record_h2d()  # a real device: the copy itself is seen
        out = func(*args, **kwargs)
        if kind == "to_host" and isinstance(out, torch.Tensor):
            self._host_copies.add(out)
        if self._host_tensors and func not in _COPY_OPS:
            # what is computed from host tensors alone stays on the host (e.g. a slice of a pinned batch)
            inputs = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
            if inputs and all(a in self._host_tensors for a in inputs):
                for o in pytree.tree_leaves(out):
                    if isinstance(o, torch.Tensor):
                        self._host_tensors.add(o)
        return out

    def mark_host(self, *tensors: torch.Tensor) -> None:
        """Say that these tensors live on the host on any device (e.g. a batch a DataLoader made before
        the block): copying them to the device without non_blocking then counts as a blocking copy."""
        for t in tensors:
            self._host_tensors.add(t)

    @staticmethod
    def _read_kind(func, args, kwargs) -> Optional[str]:
        kind = _READ_OPS.get(func)
        if kind is not None:
            return kind
        if func in _INDEX_OPS:
            return "bool_index" if any(_is_bool_index(i) for i in args[1] if i is not None) else None
        if func in _INDEX_PUT_OPS:
            indices = args[1]
            if not any(_is_bool_index(i) for i in indices if i is not None):
                return None
            values = args[2]
            accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
            # PyTorch runs `x[mask] = number` as masked_fill (no read): one mask, a 0-dim CPU value
            if (len(indices) == 1 and not accumulate and values.dim() == 0 and values.device.type == "cpu"):
                return None
            return "bool_index"
        if func in _REPEAT_INTERLEAVE_OPS:
            return "repeat_interleave" if kwargs.get("output_size", args[1] if len(args) > 1 else None) is None else None
        if func in _COPY_OPS:
            src = args[1] if func.overloadpacket in (_aten.copy_, _aten.copy) else args[0]
            dst_device = args[0].device if func.overloadpacket in (_aten.copy_, _aten.copy) else kwargs.get("device")
            if (isinstance(src, torch.Tensor) and src.device.type not in ("cpu", "meta") and dst_device is not None
                    and torch.device(dst_device).type == "cpu"):
                return "to_host"
        return None

    # ------------------------------------------------------------------ enter / exit
    def __enter__(self):
        counter = self
        self._patch_copies()
        for name in ("tolist", "numpy"):
            original = getattr(torch.Tensor, name)

            def patched(t, *a, __original=original, __kind=name, **k):
                if counter._in_patched or t in counter._host_copies or t in counter._host_tensors:
                    return __original(t, *a, **k)  # host memory: reading it waits for nothing
                counter.record_read(__kind)
                counter._in_patched = True
                try:
                    return __original(t, *a, **k)
                finally:
                    counter._in_patched = False

            self._patched.append((torch.Tensor, name, original))
            setattr(torch.Tensor, name, patched)
        return super().__enter__()

    def _patch_copies(self) -> None:
        """Patch the Python entry points of host-to-device copies (see the module docstring): on a CPU
        run no copy happens, so what the code asks for is what is counted."""
        counter = self

        def made_from_host(original):
            def patched(data, *a, **k):
                device = k.get("device")
                if isinstance(data, torch.Tensor):  # as_tensor of a tensor: a move, like .to(device)
                    if (device is not None and data in counter._host_tensors
                            and torch.device(device).type == "cpu"):
                        counter.record_h2d()
                    return original(data, *a, **k)
                out = original(data, *a, **k)
                if device is None:
                    counter._host_tensors.add(out)
                elif not counter._in_patched:
                    counter.record_h2d()  # built on the host, then copied to `device` and waited for
                return out
            return patched

        def from_numpy(original):
            def patched(array):
                out = original(array)
                counter._host_tensors.add(out)
                return out
            return patched

        def to(original):
            def patched(t, *a, **k):
                device, _, non_blocking, _ = torch._C._nn._parse_to(*a, **k)
                out = original(t, *a, **k)
                if (device is not None and device.type == "cpu" and not non_blocking and t.device.type == "cpu"
                        and t in counter._host_tensors):
                    counter.record_h2d()  # on a GPU this is a blocking copy from host memory
                return out
            return patched

        def copy_(original):
            def patched(dst, src, non_blocking=False):
                if (isinstance(src, torch.Tensor) and not non_blocking and src.device.type == "cpu"
                        and dst.device.type == "cpu" and src in counter._host_tensors
                        and dst not in counter._host_tensors):
                    counter.record_h2d()
                return original(dst, src, non_blocking)
            return patched

        def pin_memory(original):
            def patched(t, *a, **k):
                out = original(t, *a, **k)
                counter._host_tensors.add(out)
                return out
            return patched

        for owner, name, wrap in ((torch, "tensor", made_from_host), (torch, "as_tensor", made_from_host),
                                  (torch, "from_numpy", from_numpy), (torch.Tensor, "to", to),
                                  (torch.Tensor, "copy_", copy_), (torch.Tensor, "pin_memory", pin_memory)):
            original = getattr(owner, name)
            self._patched.append((owner, name, original))
            setattr(owner, name, wrap(original))

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            for owner, name, original in reversed(self._patched):
                setattr(owner, name, original)
            self._patched.clear()


def copy_is_blocking(src_device: str, dst_device: str, non_blocking: bool) -> bool:
    """Whether a copy between these device types makes the host wait for a CUDA stream: host to device
    without non_blocking (from pageable memory the copy is staged and the stream synchronised; with
    non_blocking it is queued). Device-to-host copies are host reads (kind `to_host`)."""
    return src_device == "cpu" and dst_device not in ("cpu", "meta") and not non_blocking


def _device_copy_blocks(func, args, kwargs) -> bool:
    if func.overloadpacket in (_aten.copy_, _aten.copy):
        dst, src = args[0], args[1]
        non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
        return isinstance(src, torch.Tensor) and copy_is_blocking(src.device.type, dst.device.type, non_blocking)
    src, device = args[0], kwargs.get("device")
    return (isinstance(src, torch.Tensor) and device is not None
            and copy_is_blocking(src.device.type, torch.device(device).type, kwargs.get("non_blocking", False)))


# ----------------------------------------------------------------------------------------------------
# declared synchronisations: the budget's own reads, named where they are made
# ----------------------------------------------------------------------------------------------------
_local = threading.local()
_logs: List[List[str]] = []


def _declared_depth() -> int:
    return getattr(_local, "depth", 0)


@contextlib.contextmanager
def declared_sync(device, what: str) -> Iterator[None]:
    """Mark a host synchronisation the budget allows (a read of sizes, the losses, an NMS call) and name
    it. On CUDA under a sync debug mode ("warn"/"error") the mode is lifted inside the block, so the
    GPU check stops only at undeclared syncs; `sync_log()` records `what`; OpCounter treats reads and
    copies inside as declared. Costs two Python calls elsewhere."""
    dev = device if isinstance(device, torch.device) else torch.device(device)
    mode = 0
    if dev.type == "cuda":
        mode = torch.cuda.get_sync_debug_mode()
        if mode:
            torch.cuda.set_sync_debug_mode(0)
    _local.depth = _declared_depth() + 1
    for log in _logs:
        log.append(what)
    try:
        yield
    finally:
        _local.depth -= 1
        if mode:
            torch.cuda.set_sync_debug_mode(mode)


@contextlib.contextmanager
def sync_log() -> Iterator[List[str]]:
    """`with sync_log() as log:` the `what` of every declared_sync block that ran inside, in order."""
    log: List[str] = []
    _logs.append(log)
    try:
        yield log
    finally:
        _logs.remove(log)


def _short(path: str) -> str:
    """A path relative to the repository (or to site-packages), short enough for a summary line."""
    for marker in (os.sep + "resdet" + os.sep, os.sep + "torchvision" + os.sep, os.sep + "tests" + os.sep,
                   os.sep + "tools" + os.sep):
        i = path.rfind(marker)
        if i >= 0:
            return path[i + 1:]
    return os.path.basename(path)


@contextlib.contextmanager
def count_ops(stack_depth: int = 3) -> Iterator[OpCounter]:
    """`with count_ops() as c:` counts the block's aten ops and host reads (see the module docstring)."""
    counter = OpCounter(stack_depth)
    with counter:
        yield counter
