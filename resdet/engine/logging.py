"""Training output: Python logging, metrics as JSON lines + TensorBoard events, a progress bar with ETA.

    logger = setup_logger(cfg.OUTPUT_DIR, rank=get_rank())     # console + <OUTPUT_DIR>/log.txt
    writer = MetricWriter(cfg.OUTPUT_DIR, start_iter=start_iter)
    writer.write(100, total_loss=0.53, lr=0.1)                 # metrics.jsonl + TensorBoard, rank 0 only

`metrics.jsonl` holds one JSON object per line, each with "iteration" and the scalars written at that
iteration (`{"iteration": 100, "total_loss": 0.53, "lr": 0.1}`); evaluation results are lines of their
own. On resume (start_iter > 0) lines the interrupted run wrote after start_iter are dropped, and
TensorBoard purges its events from there, so a resumed run's files read like an uninterrupted run's.
(A line at iteration N describes the first N steps, which the checkpoint at N includes, so it stays.)
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from numbers import Number
from typing import Any, Optional

import torch
from tqdm import tqdm

from .checkpoint import atomic_write_text
from .distributed import is_main_process

__all__ = ["setup_logger", "MetricWriter", "ProgressBar", "read_metrics", "json_safe", "write_json"]

_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


def setup_logger(output_dir: Optional[str] = None, rank: int = 0, name: str = "resdet") -> logging.Logger:
    """Configure the `name` logger: console (INFO on rank 0, WARNING elsewhere) and a file in output_dir.

    Rank 0 writes `log.txt`, other ranks `log.rank<N>.txt` (their warnings and errors are easier to
    find there). Calling it again replaces the handlers it added before.
    """
    log = logging.getLogger(name)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    for h in list(log.handlers):
        if getattr(h, "_resdet", False):
            log.removeHandler(h)
            h.close()
    fmt = logging.Formatter(_FORMAT, datefmt="%m/%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console.setFormatter(fmt)
    handlers = [console]
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fname = "log.txt" if rank == 0 else f"log.rank{rank}.txt"
        fh = logging.FileHandler(os.path.join(output_dir, fname), encoding="utf-8")
        fh.setLevel(logging.DEBUG if rank == 0 else logging.WARNING)
        fh.setFormatter(fmt)
        handlers.append(fh)
    for h in handlers:
        h._resdet = True
        log.addHandler(h)
    return log


def _scalar(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric '{name}' must be a scalar; got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if not isinstance(value, Number) or isinstance(value, bool):
        raise TypeError(f"metric '{name}' must be a number; got {value!r} of type {type(value).__name__}")
    return float(value)


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN / infinity (floats, numpy or 0-d tensor scalars) replaced by None, inside
    dicts, lists and tuples: JSON has no NaN, and Python's json writes a bare NaN other readers reject."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        obj = obj.item()
    if isinstance(obj, Number) and not isinstance(obj, (bool, int)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def write_json(obj: Any, path: str, indent: Optional[int] = 1) -> str:
    """`obj` as strict JSON (NaN -> null), written atomically."""
    text = json.dumps(json_safe(obj), indent=indent, allow_nan=False)
    return atomic_write_text(text + "\n", path)


def read_metrics(path: str) -> list:
    """All records of a metrics.jsonl file; a malformed line is an error naming the file and line."""
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON object: {e}") from e
    return records


class MetricWriter:
    """Scalars to `<output_dir>/metrics.jsonl` and TensorBoard events (main process only)."""

    def __init__(self, output_dir: str, start_iter: int = 0, tensorboard: bool = True, enabled: Optional[bool] = None,
                 truncate: bool = True):
        """`truncate`: drop lines after start_iter left by an earlier run in the same folder (all of them
        for a fresh run). Pass False to only append (e.g. an --eval-only run adding its results)."""
        self.enabled = is_main_process() if enabled is None else enabled
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self._tb = None
        if not self.enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        if truncate and os.path.isfile(self.path):
            self._truncate(start_iter)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops the events after start_iter that an interrupted run left behind.
            self._tb = SummaryWriter(log_dir=output_dir, purge_step=start_iter + 1 if start_iter > 0 else None)
        self._file = open(self.path, "a", encoding="utf-8")

    def _truncate(self, start_iter: int) -> None:
        kept = [r for r in read_metrics(self.path) if r.get("iteration", 0) <= start_iter]
        atomic_write_text("".join(json.dumps(r) + "\n" for r in kept), self.path)

    def write(self, iteration: int, **scalars: Any) -> None:
        """One JSON line with "iteration" and the scalars; each scalar also as a TensorBoard point."""
        if not self.enabled:
            return
        values = {name: _scalar(name, value) for name, value in scalars.items()}  # all checked before any write
        record = {"iteration": int(iteration)}
        for name, v in values.items():
            record[name] = v if math.isfinite(v) else None  # JSON has no NaN/inf: null, as json_safe
            if self._tb is not None:
                self._tb.add_scalar(name, v, int(iteration))
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()

    def flush(self) -> None:
        if self.enabled:
            self._file.flush()
            if self._tb is not None:
                self._tb.flush()

    def close(self) -> None:
        if self.enabled and not self._file.closed:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


class ProgressBar:
    """tqdm over [start_iter, max_iter): its rate and ETA count only the iterations this run did."""

    def __init__(self, max_iter: int, start_iter: int = 0, enabled: Optional[bool] = None, desc: str = "train",
                 file=None, mininterval: float = 1.0):
        enabled = is_main_process() if enabled is None else enabled
        # mininterval: at most one refresh a second, so redirected output stays readable
        self._bar = tqdm(total=max_iter, initial=start_iter, desc=desc, dynamic_ncols=True, disable=not enabled,
                         smoothing=0.05, mininterval=mininterval, file=file)

    def update(self, n: int = 1, **postfix: float) -> None:
        if postfix:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()
