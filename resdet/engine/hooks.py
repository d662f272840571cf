"""Trainer hooks: periodic checkpoints, periodic evaluation, windowed metrics, a progress bar.

Every hook runs on every process (checkpointing and metric reduction are collectives); writing to
disk happens on the main process only. Periods count completed iterations: with period 100, the
hooks act after iterations 100, 200, ... (trainer.iter + 1 == 100, ...).
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from numbers import Number
from typing import Any, Callable, Dict, Optional

import torch

from ..utils.env import get_rng_state, peak_memory_mib, set_rng_state
from .distributed import get_world_size, is_main_process, reduce_dict, synchronize
from .logging import ProgressBar
from .trainer import HookBase

__all__ = ["PeriodicCheckpointer", "EvalHook", "MetricsLogger", "ProgressHook", "flatten_results"]

logger = logging.getLogger(__name__)


def _due(next_iter: int, period: int, max_iter: int) -> bool:
    return period > 0 and next_iter % period == 0 and next_iter < max_iter


class PeriodicCheckpointer(HookBase):
    """Save `<prefix>_<iteration>` every `period` iterations and `final_name` at the end.

    `extra_fn(next_iter) -> dict` adds values to each checkpoint (e.g. the sampler position
    `{"sampler": sampler.state_dict(consumed=next_iter * global_batch)}`).
    """

    def __init__(self, checkpointer, period: int, extra_fn: Optional[Callable[[int], Dict[str, Any]]] = None,
                 final_name: str = "model_final"):
        if period < 0:
            raise ValueError(f"SOLVER.CHECKPOINT_PERIOD must be >= 0 (0: only the final one); got {period}")
        self.checkpointer = checkpointer
        self.period = period
        self.extra_fn = extra_fn
        self.final_name = final_name

    def _save(self, name: str, next_iter: int) -> None:
        extra = self.extra_fn(next_iter) if self.extra_fn is not None else {}
        self.checkpointer.save(name, iteration=next_iter, **extra)

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if _due(next_iter, self.period, self.trainer.max_iter):
            self._save(f"{self.checkpointer.prefix}_{next_iter:07d}", next_iter)
        elif next_iter == self.trainer.max_iter:
            self._save(self.final_name, next_iter)


def flatten_results(results: Dict[str, Any], prefix: str = "") -> Dict[str, float]:
    """{"bbox": {"AP": 40.1}} -> {"bbox/AP": 40.1}; non-numeric leaves (tables, lists) are left out."""
    flat: Dict[str, float] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_results(value, name + "/"))
        elif isinstance(value, torch.Tensor) and value.numel() == 1:
            flat[name] = float(value)
        elif isinstance(value, Number) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


class EvalHook(HookBase):
    """Run `eval_fn() -> dict of results` every `period` iterations and after the last one.

    Results (nested dicts are flattened to "bbox/AP" names) go to the trainer's metric writer at the
    iteration count they were measured at; the latest are kept in `self.results`. eval_fn runs on
    every process (so it can gather over them) under torch.no_grad; the model is put back in train
    mode afterwards, and every RNG (Python, numpy, torch CPU and CUDA) is put back where it was: an
    evaluation draws random numbers (a DataLoader draws its workers' base seed from torch's generator at
    each pass), and training after it must draw what it would have drawn without it. Otherwise
    TEST.EVAL_PERIOD would change the training run (RoI sampling, dropout and augmentation all draw), and a
    run resumed from a checkpoint written before an evaluation would part from the uninterrupted one.
    """

    def __init__(self, period: int, eval_fn: Callable[[], Dict[str, Any]], eval_at_end: bool = True):
        if period < 0:
            raise ValueError(f"TEST.EVAL_PERIOD must be >= 0 (0: only at the end); got {period}")
        self.period = period
        self.eval_fn = eval_fn
        self.eval_at_end = eval_at_end
        self.results: Dict[str, float] = {}

    def _evaluate(self, iteration: int) -> None:
        start = time.perf_counter()
        rng = get_rng_state()
        try:
            with torch.no_grad():
                results = self.eval_fn()
        finally:
            set_rng_state(rng)
        self.trainer.model.train()
        if results is None:
            results = {}
        if not isinstance(results, dict):
            raise TypeError(f"eval_fn must return a dict of results; got {type(results).__name__}")
        self.results = flatten_results(results)
        if self.trainer.writer is not None and self.results:
            self.trainer.writer.write(iteration, **self.results)
        logger.info("Evaluation at iteration %d (%.1fs): %s", iteration, time.perf_counter() - start,
                    ", ".join(f"{k}={v:.4g}" for k, v in self.results.items()))
        synchronize()

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if _due(next_iter, self.period, self.trainer.max_iter):
            self._evaluate(next_iter)

    def after_train(self) -> None:
        # Only when training reached max_iter: a crash should not be followed by a long evaluation.
        if self.eval_at_end and self.trainer.iter >= self.trainer.max_iter:
            self._evaluate(self.trainer.max_iter)


class MetricsLogger(HookBase):
    """Every `period` iterations (and at the last): losses averaged over the period and over processes,
    lr, seconds per iteration, data-loading seconds, ETA, and on CUDA the peak memory of the period
    (`max_mem_mb`, reset after each period); to the metric writer and the log.

    Step metrics may be device tensors (resdet/engine/static_step.py): they are summed on the device and
    read to the host once per period, in one copy."""

    def __init__(self, period: int = 20):
        if period <= 0:
            raise ValueError(f"LOG_PERIOD must be positive; got {period}")
        self.period = period
        self._reset()

    def _reset(self) -> None:
        self._sums: Dict[str, float] = defaultdict(float)
        self._count = 0
        self._time = 0.0

    def before_train(self) -> None:
        self._reset()
        self._train_start = time.perf_counter()
        peak_memory_mib(self.trainer.device)  # the first period's peak starts here, not at start-up

    def after_step(self) -> None:
        m = self.trainer.step_metrics
        for name, value in m["losses"].items():
            self._sums[name] += value
        self._sums["total_loss"] += m["total_loss"]
        self._sums["data_time"] += m["data_time"]
        if "grad_norm" in m:
            self._sums["grad_norm"] += m["grad_norm"]
        self._time += m["time"]
        self._count += 1
        next_iter = self.trainer.iter + 1
        if next_iter % self.period == 0 or next_iter == self.trainer.max_iter:
            self._flush(next_iter, m["lr"])

    def _flush(self, next_iter: int, lr: float) -> None:
        on_device = [k for k, v in self._sums.items() if isinstance(v, torch.Tensor)]
        if on_device:  # one device-to-host copy for all of them
            values = torch.stack([self._sums[k].detach().double().reshape(()) for k in on_device]).cpu().tolist()
            self._sums.update(zip(on_device, values))
        scalars = {k: v / self._count for k, v in self._sums.items()}
        if get_world_size() > 1:
            # The losses (and the grad norm, computed from all-reduced gradients) are the same on every
            # rank already (the Trainer all-reduces them each step); data time is this rank's own.
            scalars["data_time"] = float(reduce_dict({"data_time": torch.tensor(scalars["data_time"])})["data_time"])
        sec_per_iter = self._time / self._count
        scalars.update(lr=lr, time=sec_per_iter, eta_seconds=sec_per_iter * (self.trainer.max_iter - next_iter))
        peak = peak_memory_mib(self.trainer.device)  # this period's peak (reset for the next)
        if peak is not None:
            scalars["max_mem_mb"] = peak
        if self.trainer.writer is not None:
            self.trainer.writer.write(next_iter, **scalars)
        if is_main_process():
            eta = int(scalars["eta_seconds"])
            losses = "  ".join(f"{k}: {v:.4g}" for k, v in scalars.items() if k.startswith("loss") or k == "total_loss")
            logger.info("iter %d/%d  %s  lr: %.4g  time: %.4fs  data: %.4fs  eta: %d:%02d:%02d",
                        next_iter, self.trainer.max_iter, losses, lr, sec_per_iter, scalars["data_time"],
                        eta // 3600, eta // 60 % 60, eta % 60)
        self._reset()


class ProgressHook(HookBase):
    """A tqdm bar over the whole run (it starts at start_iter on resume) with the last total loss."""

    def __init__(self, enabled: Optional[bool] = None):
        self.enabled = enabled

    def before_train(self) -> None:
        self._bar = ProgressBar(self.trainer.max_iter, self.trainer.start_iter, enabled=self.enabled)

    def after_step(self) -> None:
        m = self.trainer.step_metrics
        if isinstance(m["total_loss"], torch.Tensor):  # a device value: showing it would read it every step
            self._bar.update(1, lr=m["lr"])
        else:
            self._bar.update(1, loss=m["total_loss"], lr=m["lr"])

    def after_train(self) -> None:
        self._bar.close()
