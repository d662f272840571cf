"""The training loop: one plain, iteration-based loop with hooks (Detectron2's SimpleTrainer + AMPTrainer idea).

    trainer = Trainer(model, optimizer, data_loader, scheduler=scheduler, max_iter=90000,
                      start_iter=start_iter, amp="bf16", clip_grad_norm=0.0,
                      hooks=[MetricsLogger(20), PeriodicCheckpointer(ckpt, 5000)],
                      writer=MetricWriter(out_dir, start_iter), rng_state=resumed.get("rng"))
    trainer.train()

Each step: next batch -> device -> forward under autocast -> dict of losses -> sum -> backward (through
a GradScaler for fp16) -> optional clipping of the global grad norm -> optimizer step -> lr scheduler
step. `loss_fn(model, batch)` returns the loss dict; by default the model is called with the batch
(`model(*batch)` for a tuple/list, `model(**batch)` for a dict), which suits detection models that
return their losses in training mode. A non-finite loss stops training with a FloatingPointError that
names the iteration and the loss. Under DDP the losses of all ranks are all-reduced once per step (the
logged losses are their mean), so a non-finite loss on any rank stops every rank at the same step with
one message naming the rank(s).

`trainer.iter` is the step being run (0-based); after step i, i + 1 steps are complete. Hooks see
`trainer.step_metrics` (the last step's losses, lr, times) in after_step.

Exact resume: pass the checkpoint's "iteration" as start_iter and its "rng" as rng_state; the RNG is
restored after the data iterator and the hooks are set up, right before the first resumed step, so
the step sees the same random numbers as in an uninterrupted run.
"""
from __future__ import annotations

import logging
import math
import re
import time
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ..utils.counting import declared_sync
from ..utils.env import set_rng_state
from .distributed import first_rank_to_stop, get_rank, get_world_size, unwrap_model

__all__ = ["HookBase", "Trainer", "default_loss_fn", "move_to_device"]

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class HookBase:
    """Called by the Trainer around training and each step; `self.trainer` is set on registration."""

    trainer: "Trainer" = None

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass


def default_loss_fn(model: nn.Module, batch: Any):
    """Call the model with the batch: positional for a tuple/list, keywords for a dict."""
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (list, tuple)):
        return model(*batch)
    return model(batch)


def move_to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Tensors anywhere in nested lists/tuples/dicts onto `device` (4-D ones channels_last if asked)."""
    if isinstance(batch, torch.Tensor):
        out = batch.to(device, non_blocking=True)
        if channels_last and out.dim() == 4:
            out = out.contiguous(memory_format=torch.channels_last)
        return out
    if isinstance(batch, dict):
        return {k: move_to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to_device(v, device, channels_last) for v in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    return batch


def _as_loss_dict(out: Any, iteration: int) -> Dict[str, torch.Tensor]:
    if isinstance(out, torch.Tensor):
        out = {"loss": out}
    if not isinstance(out, dict) or not out:
        raise TypeError(
            f"At iteration {iteration}: loss_fn (or the model in training mode) must return a non-empty dict "
            f"of scalar loss tensors; got {type(out).__name__}"
        )
    for name, value in out.items():
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise TypeError(f"At iteration {iteration}: loss '{name}' must be a scalar tensor; got {shape}")
    return out


class Trainer:
    """Runs `max_iter - start_iter` optimisation steps; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: Iterable,
        *,
        max_iter: int,
        start_iter: int = 0,
        loss_fn: Optional[Callable[[nn.Module, Any], Dict[str, torch.Tensor]]] = None,
        scheduler: Optional[Any] = None,
        amp: str = "",
        grad_scaler: Optional[torch.amp.GradScaler] = None,
        channels_last: bool = False,
        clip_grad_norm: float = 0.0,
        device: Optional[torch.device] = None,
        hooks: Sequence[HookBase] = (),
        writer: Optional[Any] = None,
        rng_state: Optional[Dict[str, Any]] = None,
    ):
        if amp not in _AMP_DTYPES:
            raise ValueError(f"SOLVER.AMP: unknown mode '{amp}'; expected '' (float32), 'fp16' or 'bf16'")
        if not 0 <= start_iter <= max_iter:
            raise ValueError(f"start_iter={start_iter} must be in [0, max_iter={max_iter}]")
        if clip_grad_norm < 0:
            raise ValueError(f"SOLVER.CLIP_GRAD_NORM must be >= 0; got {clip_grad_norm}")
        self.model = model
        self.optimizer = optimizer
        self.data_loader = data_loader
        self.max_iter = int(max_iter)
        self.start_iter = int(start_iter)
        self.iter = self.start_iter
        self.loss_fn = loss_fn or default_loss_fn
        self.scheduler = scheduler
        self.device = torch.device(device) if device is not None else next(unwrap_model(model).parameters()).device
        self.amp_dtype = _AMP_DTYPES[amp]
        if amp == "fp16" and grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(self.device.type)
        self.grad_scaler = grad_scaler if amp == "fp16" else None
        self.channels_last = channels_last
        self.clip_grad_norm = float(clip_grad_norm)
        self.writer = writer
        self.rng_state = rng_state
        self.step_metrics: Dict[str, Any] = {}
        self.hooks: List[HookBase] = []
        self.register_hooks(hooks)

    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        for h in hooks:
            if not isinstance(h, HookBase):
                raise TypeError(f"hooks must be HookBase instances; got {type(h).__name__}")
            h.trainer = self
            self.hooks.append(h)

    def _call_hooks(self, stage: str) -> None:
        for h in self.hooks:
            getattr(h, stage)()

    def train(self) -> None:
        logger.info("Training from iteration %d to %d", self.start_iter, self.max_iter)
        self.iter = self.start_iter
        self.model.train()
        self._data_iter = iter(self.data_loader)
        completed = False
        try:
            self._call_hooks("before_train")
            if self.rng_state is not None:
                set_rng_state(self.rng_state)
            for self.iter in range(self.start_iter, self.max_iter):
                self._call_hooks("before_step")
                self.run_step()
                self._call_hooks("after_step")
            self.iter = self.max_iter  # after_train sees max_iter when the loop ran to the end
            completed = True
        except BaseException as e:
            self._report_stop(e)
            raise
        finally:
            try:
                self._call_hooks("after_train")
            except Exception:
                if completed:
                    raise
                # Keep the error that stopped training as the one the user sees.
                logger.exception("A hook failed in after_train while training was stopping")
            finally:
                if self.writer is not None:
                    self.writer.close()

    def _report_stop(self, error: BaseException) -> None:
        """One message for the user when training stops early.

        A stop every rank decided together (a non-finite loss on some rank) is logged by rank 0 only, so
        it appears once. Anything else happened on this rank alone: the first rank to stop says which rank,
        at which iteration and why (an error); ranks that stop after it (their collective failed because it
        is gone) only say so (a warning). The other ranks are then blocked in a collective: torchrun (or
        mp.spawn) ends them as soon as this process exits, and DIST.TIMEOUT_MINUTES bounds their wait
        under other launchers.
        """
        what = f"{type(error).__name__}: {error}"
        rank, world = get_rank(), get_world_size()
        if getattr(error, "stops_every_rank", False):
            if rank == 0:
                logger.error("Training stopped during iteration %d: %s", self.iter, what)
        elif world > 1:
            first = first_rank_to_stop()
            if first == rank:
                logger.error("Training stopped during iteration %d on rank %d of %d: %s", self.iter, rank, world, what)
            else:  # most likely a collective that failed because the first rank is gone: its message says why
                logger.warning("Rank %d stopped during iteration %d after rank %d did (see rank %d's message): %s",
                               rank, self.iter, first, first, what[:300])
        else:
            logger.error("Training stopped during iteration %d: %s", self.iter, what)

    def next_batch(self) -> Tuple[Any, float]:
        """(the next batch on the device, seconds spent waiting for the loader)."""
        start = time.perf_counter()
        try:
            batch = next(self._data_iter)
        except StopIteration:
            raise RuntimeError(
                f"The data loader ran out at iteration {self.iter} (max_iter={self.max_iter}); training needs an "
                "endless one, e.g. a DataLoader over resdet.data.samplers.InfiniteSampler"
            ) from None
        data_time = time.perf_counter() - start
        return move_to_device(batch, self.device, self.channels_last), data_time

    def run_step(self) -> None:
        start = time.perf_counter()
        batch, data_time = self.next_batch()

        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            loss_dict = _as_loss_dict(self.loss_fn(self.model, batch), self.iter)
        total = sum(loss_dict.values())

        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(total).backward()
        else:
            total.backward()
        grad_norm = None
        if self.clip_grad_norm > 0:
            if self.grad_scaler is not None:
                self.grad_scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            with warnings.catch_warnings():
                # After a step the GradScaler skipped, torch warns that the scheduler steps "before
                # optimizer.step()"; the schedule counts iterations, so that is intended.
                warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                self.scheduler.step()

        # One device->host copy for all losses and the grad norm (a single sync per step), made after the
        # whole step is queued so that the wait overlaps the GPU's work. A non-finite loss stops training.
        names = list(loss_dict)
        local = torch.stack([loss_dict[k].detach().float().reshape(()) for k in names])
        world = get_world_size()
        if world > 1:
            # One collective per step, also the loss averaging the logger needs: each rank writes its
            # losses into its own row of a [world, K] table and a summing all_reduce gives every rank all
            # ranks' losses (a rank's NaN stays in its own row: nan + 0 is nan). So every rank sees the
            # same non-finite rows and all stop at this iteration with the same message, instead of the
            # healthy ranks waiting in the next collective for the process-group timeout.
            table = local.new_zeros(world, len(names))
            if dist.get_backend() == "nccl" and table.device.type != "cuda":
                table = table.cuda()  # losses computed on the CPU under NCCL (a custom loss_fn)
            table[get_rank()] = local
            dist.all_reduce(table)
            local = table.reshape(-1)
        scalars = [local]
        if grad_norm is not None:
            scalars.append(grad_norm.detach().float().reshape(1))
        with declared_sync(local.device, "losses"):
            values = torch.cat(scalars).cpu().tolist()
        if grad_norm is not None:
            grad_norm = values.pop()
        rows = [values[r * len(names):(r + 1) * len(names)] for r in range(world)]
        bad = {r: {k: v for k, v in zip(names, row) if not math.isfinite(v)} for r, row in enumerate(rows)}
        bad = {r: b for r, b in bad.items() if b}
        if bad:
            hint = "; lower SOLVER.BASE_LR, add warm-up or gradient clipping"
            if world == 1:
                message = (f"Loss became non-finite at iteration {self.iter}: "
                           + ", ".join(f"{k}={v}" for k, v in bad[0].items())
                           + f" (all losses: {dict(zip(names, rows[0]))})" + hint)
            else:
                detail = "; ".join(f"rank {r}: " + ", ".join(f"{k}={v}" for k, v in b.items())
                                   + f", all its losses {dict(zip(names, rows[r]))}" for r, b in bad.items())
                message = (f"Loss became non-finite at iteration {self.iter} on rank{'s' if len(bad) > 1 else ''} "
                           f"{', '.join(str(r) for r in bad)} ({detail}); all {world} ranks stop here" + hint)
            err = FloatingPointError(message)
            err.stops_every_rank = True  # decided together: Trainer.train reports it once (rank 0)
            raise err
        # the mean over ranks (one process: its own losses)
        losses = {k: sum(row[i] for row in rows) / world for i, k in enumerate(names)}
        self.step_metrics = {
            "losses": losses,
            "total_loss": sum(losses.values()),
            "lr": lr,
            "data_time": data_time,
            "time": time.perf_counter() - start,
        }
        if grad_norm is not None:
            self.step_metrics["grad_norm"] = grad_norm
