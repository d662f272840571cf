"""A training step without per-iteration host work: compiled (torch.compile) or captured in one CUDA graph.

    trainer = StaticStepTrainer(model, optimizer, loader, step_mode="cuda_graph", max_iter=64000, ...)
    trainer.train()      # the Trainer's hooks, checkpoints, exact resume and metrics, unchanged
    # from a config: SOLVER.STEP_MODE "compiled" | "cuda_graph" (resdet/engine/build.py: build_trainer)

Why: the paper's CIFAR recipe is 64k steps of 128 32x32 images. A ResNet-20 step is a few hundred small
kernels, so eagerly the Python and the kernel launches set the pace, not the GPU. This trainer makes the
step a fixed program over fixed tensors:

- the batch is copied into static input buffers (the on-device CIFAR batches of resdet/data/folders.py,
  with their per-step seeded crops and flips, are produced eagerly as before and copied in);
- the lr is the schedule's closed form of a device iteration counter (`scheduler.lr_tensor`), so an lr
  drop needs no re-capture; the host-side scheduler and param-group lr are still advanced every step
  (plain Python, no device work) so checkpoints and logs are the eager trainer's;
- the SGD update is foreach ops on a tensor lr over the optimizer's own momentum buffers. It is written
  here because torch.optim.SGD's foreach path turns a tensor lr into a Python number (a host read, which
  a CUDA graph cannot contain) outside torch.compile; the formula is torch's (weight decay added to the
  gradient, buf = momentum * buf + grad, optional Nesterov, p -= lr * buf), and checkpoints stay ordinary
  SGD state dicts, so a run can resume in another step mode;
- losses stay on the device: `step_metrics["losses"]` and `["total_loss"]` are device scalars that
  MetricsLogger sums on the device and reads once per LOG_PERIOD. The first iteration with a non-finite
  loss is recorded on the device and read at every log, checkpoint and evaluation boundary and at the
  end, before those hooks run, so no checkpoint is written after a non-finite step goes unnoticed;
- BatchNorm in train mode works as is (its running statistics are updated by in-place kernels).

Modes:
- "compiled": torch.compile of forward + loss (AOTAutograd compiles the backward with it) and of the
  update; on CUDA in "reduce-overhead" mode, i.e. with CUDA graphs (cudagraph trees).
- "cuda_graph": the whole step (forward, loss, backward, clipping, update, counters) captured once in a
  torch.cuda.CUDAGraph after `warmup_steps` real steps run uncaptured on a side stream (they count as
  training steps), then replayed. With SOLVER.COMPILE the model inside is inductor-compiled as well.
  `capture=False` runs the very same step uncaptured (how the CPU tests check its arithmetic).

Limits, each an error naming the setting: SGD (the paper's optimizer) only; no fp16 (its GradScaler reads
the device every step; use bf16 or float32); one process; batches of one fixed shape (CUDA graphs).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.utils._pytree as pytree

from .distributed import get_world_size
from .trainer import Trainer, _as_loss_dict

__all__ = ["StaticStepTrainer", "STEP_MODES"]

logger = logging.getLogger(__name__)

STEP_MODES = ("eager", "compiled", "cuda_graph")


class StaticStepTrainer(Trainer):
    """Trainer whose step is compiled or CUDA-graph captured; see the module docstring."""

    def __init__(self, model, optimizer, data_loader, *, step_mode: str = "compiled", capture: Optional[bool] = None,
                 warmup_steps: int = 3, sync_periods: Sequence[int] = (20,), compile_mode: Optional[str] = None,
                 **kwargs: Any):
        super().__init__(model, optimizer, data_loader, **kwargs)
        if step_mode not in ("compiled", "cuda_graph"):
            raise ValueError(f"SOLVER.STEP_MODE: StaticStepTrainer runs 'compiled' or 'cuda_graph'; got {step_mode!r} "
                             f"(expected one of {STEP_MODES}; 'eager' is the plain Trainer)")
        where = f"SOLVER.STEP_MODE {step_mode!r}"
        if not isinstance(optimizer, torch.optim.SGD):
            raise ValueError(f"{where} supports SOLVER.OPTIMIZER SGD only; got {type(optimizer).__name__} "
                             "(use SOLVER.STEP_MODE eager)")
        for g in optimizer.param_groups:
            if g.get("dampening", 0) != 0 or g.get("maximize", False) or g.get("differentiable", False):
                raise ValueError(f"{where}: SGD with dampening, maximize or differentiable is not supported")
        if self.grad_scaler is not None:
            raise ValueError(f"{where} does not support SOLVER.AMP 'fp16': its GradScaler reads the device every "
                             "step to skip overflowing steps; use 'bf16' or '' (float32)")
        if kwargs.get("scheduler") is not None and not hasattr(kwargs["scheduler"], "lr_tensor"):
            raise ValueError(f"{where} needs a schedule with a device closed form (lr_tensor): WarmupMultiStepLR or "
                             f"WarmupCosineLR; got {type(kwargs['scheduler']).__name__}")
        if get_world_size() > 1 or isinstance(model, torch.nn.parallel.DistributedDataParallel):
            raise ValueError(f"{where} runs in a single process; with several processes use SOLVER.STEP_MODE eager")
        self.capture = (self.device.type == "cuda") if capture is None else bool(capture)
        if step_mode == "cuda_graph" and self.capture and self.device.type != "cuda":
            raise ValueError(f"{where} captures CUDA graphs, which needs a CUDA device (MODEL.DEVICE is "
                             f"{self.device}); pass capture=False to run the same step uncaptured")
        if step_mode == "cuda_graph" and not self.capture:
            logger.warning("%s on %s: no CUDA graph there; running the same static step uncaptured", where, self.device)
        if warmup_steps < 1 and self.capture:
            raise ValueError(f"warmup_steps must be >= 1 before a CUDA graph capture; got {warmup_steps}")
        self.step_mode = step_mode
        self.warmup_steps = int(warmup_steps)
        self.sync_periods = tuple(int(p) for p in sync_periods if p and p > 0)
        self.compile_mode = compile_mode
        # the compiled step compiles the plain module itself (SOLVER.COMPILE's wrapper would nest two compiles)
        self._net = getattr(model, "_orig_mod", model) if step_mode == "compiled" else model
        self._prepared = False
        self._graph = None
        self._compiled_forward = self._compiled_update = None

    # ------------------------------------------------------------------ set-up (once per train())
    def _prepare(self) -> None:
        # After any checkpoint was restored into the optimizer, whose momentum tensors the step then owns.
        self._groups: List[tuple] = []
        for g in self.optimizer.param_groups:
            params = [p for p in g["params"] if p.requires_grad]
            bufs = []
            if g["momentum"] != 0:
                for p in params:
                    state = self.optimizer.state[p]
                    if state.get("momentum_buffer") is None:
                        # zeros: momentum * 0 + grad == grad, exactly SGD's first-step clone of the gradient
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    bufs.append(state["momentum_buffer"])
            self._groups.append((params, bufs, float(g["weight_decay"]), float(g["momentum"]), bool(g["nesterov"])))
        self._params = [p for params, *_ in self._groups for p in params]
        self._iteration = torch.full((), self.start_iter, dtype=torch.int64, device=self.device)
        self._first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        self._const_lrs = torch.tensor([g["lr"] for g in self.optimizer.param_groups], dtype=torch.float64,
                                       device=self.device)
        self._lr_now()  # makes the schedule's device constants now, outside any capture or trace
        if self.step_mode == "compiled":
            mode = self.compile_mode or ("reduce-overhead" if self.device.type == "cuda" else None)
            if self.device.type == "cuda":
                for t in [self._iteration, self._first_bad] + [b for _, bufs, *_ in self._groups for b in bufs]:
                    torch._dynamo.mark_static_address(t)  # updated in place: cudagraphs must not copy them
            self._compiled_forward = torch.compile(self._forward_losses, mode=mode, dynamic=False)
            self._compiled_update = torch.compile(self._update, mode=mode, dynamic=False)
        self._graph, self._warm_done = None, 0
        self._side_stream = torch.cuda.Stream(self.device) if self.capture else None
        self._prepared = True

    def train(self) -> None:
        self._prepare()
        try:
            super().train()
        finally:
            self._graph = None  # frees the graph's memory pool; the next train() captures afresh

    # ------------------------------------------------------------------ the step's pieces
    def _lr_now(self) -> torch.Tensor:
        if self.scheduler is None:
            return self._const_lrs
        return self.scheduler.lr_tensor(self._iteration)

    def _forward_losses(self, batch):
        # cache_enabled=False: autocast's weight-cast cache may not outlive a CUDA graph capture
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None, cache_enabled=False):
            out = self.loss_fn(self._net, batch)
        if isinstance(out, torch.Tensor):
            out = {"loss": out}
        total = sum(out.values()) if isinstance(out, dict) and out else out
        return out, total

    @torch.no_grad()
    def _update(self, total: torch.Tensor):
        grad_norm = None
        if self.clip_grad_norm > 0:
            # foreach norm and a clamped scale; nothing is read back (error_if_nonfinite stays False)
            grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self._params if p.grad is not None],
                                                       self.clip_grad_norm)
        lrs = self._lr_now()
        for gi, (params, bufs, weight_decay, momentum, nesterov) in enumerate(self._groups):
            live = [i for i, p in enumerate(params) if p.grad is not None]
            if not live:
                continue
            ps = [params[i] for i in live]
            grads = [ps[j].grad for j in range(len(ps))]
            lr = lrs[gi].to(ps[0].dtype)  # float32, as SGD's alpha=-lr becomes in its float32 kernels
            if weight_decay != 0:
                grads = torch._foreach_add(grads, ps, alpha=weight_decay)
            if momentum != 0:
                bs = [bufs[i] for i in live]
                torch._foreach_mul_(bs, momentum)
                torch._foreach_add_(bs, grads)
                grads = torch._foreach_add(grads, bs, alpha=momentum) if nesterov else bs
            torch._foreach_add_(ps, torch._foreach_mul(grads, -lr))
        bad = ~torch.isfinite(total.detach())
        self._first_bad.copy_(torch.where(bad & (self._first_bad < 0), self._iteration, self._first_bad))
        self._iteration.add_(1)
        return grad_norm

    def _static_step(self, batch):
        """forward, backward, update; the unit that is run uncaptured or captured in the CUDA graph."""
        self.optimizer.zero_grad(set_to_none=True)  # Python only: backward then writes fresh gradients
        out, total = self._forward_losses(batch)
        losses = _as_loss_dict(out, self.iter)
        total.backward()
        grad_norm = self._update(total)
        return {k: v.detach().float().reshape(()) for k, v in losses.items()}, total.detach().float(), grad_norm

    def _graph_step(self, batch):
        leaves, spec = pytree.tree_flatten(batch)
        if self._graph is not None:
            for static, new in zip(self._static_leaves, leaves):
                if static.shape != new.shape:
                    raise ValueError(f"SOLVER.STEP_MODE 'cuda_graph' needs batches of one shape: captured "
                                     f"{tuple(static.shape)}, got {tuple(new.shape)} at iteration {self.iter}")
                static.copy_(new, non_blocking=True)
            self._graph.replay()
            return self._outputs
        if not self.capture:
            return self._static_step(batch)
        if self._warm_done < self.warmup_steps:
            # Real training steps, uncaptured, on a side stream: cuDNN/cuBLAS set themselves up here, not
            # during the capture (PyTorch's recipe for whole-network capture).
            side, main = self._side_stream, torch.cuda.current_stream(self.device)
            side.wait_stream(main)
            with torch.cuda.stream(side):
                out = self._static_step(batch)
            main.wait_stream(side)
            self._warm_done += 1
            return out
        # Capture (nothing runs while capturing), then replay for this step.
        self._static_leaves = [t.clone() for t in leaves]  # the static inputs, allocated outside the graph
        static_batch = pytree.tree_unflatten(self._static_leaves, spec)
        self.optimizer.zero_grad(set_to_none=True)  # the gradients are allocated inside the graph's pool
        graph = torch.cuda.CUDAGraph()
        # "thread_local": only this thread's CUDA calls are checked against the capture. With the default
        # "global", a DataLoader's pin-memory thread (ImageNet input: a pinned copy per batch) making a
        # CUDA call during the capture would make it fail (cudaErrorStreamCaptureUnsupported).
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._outputs = self._static_step(static_batch)
        self._graph = graph
        logger.info("Captured the training step in a CUDA graph at iteration %d", self.iter)
        graph.replay()
        return self._outputs

    def _advance_host_schedule(self) -> None:
        # What scheduler.step() would leave behind (last_epoch, group lr, last lr), without its overhead;
        # checkpoints then hold the eager trainer's optimizer and scheduler state.
        if self.scheduler is None:
            return
        self.scheduler.last_epoch = self.iter + 1
        lrs = self.scheduler.get_lr()
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr
        self.scheduler._last_lr = list(lrs)

    def _sync_due(self, next_iter: int) -> bool:
        return next_iter >= self.max_iter or any(next_iter % p == 0 for p in self.sync_periods)

    def check_finite(self) -> None:
        """Read the device's first-non-finite-iteration flag (one host read) and raise if it is set."""
        bad = int(self._first_bad)
        if bad >= 0:
            raise FloatingPointError(
                f"Loss became non-finite at iteration {bad} (noticed after iteration {self.iter}: SOLVER.STEP_MODE "
                f"{self.step_mode!r} checks at each log, checkpoint and evaluation); lower SOLVER.BASE_LR, add "
                "warm-up or gradient clipping, or rerun with SOLVER.STEP_MODE eager to see every loss"
            )

    def run_step(self) -> None:
        if not self._prepared:
            self._prepare()
        start = time.perf_counter()
        batch, data_time = self.next_batch()
        lr = self.optimizer.param_groups[0]["lr"]
        if self.step_mode == "compiled":
            if self.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            self.optimizer.zero_grad(set_to_none=True)
            out, total = self._compiled_forward(batch)
            losses = _as_loss_dict(out, self.iter)
            total.backward()
            grad_norm = self._compiled_update(total)
            losses = {k: v.detach().float().reshape(()) for k, v in losses.items()}
            total = total.detach().float()
        else:
            losses, total, grad_norm = self._graph_step(batch)
        self._advance_host_schedule()
        self.step_metrics = {"losses": losses, "total_loss": total, "lr": lr, "data_time": data_time,
                             "time": time.perf_counter() - start}
        if grad_norm is not None:
            self.step_metrics["grad_norm"] = grad_norm
        if self._sync_due(self.iter + 1):
            self.check_finite()


def step_mode_summary(trainer: Trainer) -> Dict[str, Any]:
    """What a run used, for logs and reports: {"step_mode", "captured"}."""
    if isinstance(trainer, StaticStepTrainer):
        return {"step_mode": trainer.step_mode, "captured": bool(trainer.capture and trainer.step_mode == "cuda_graph")}
    return {"step_mode": "eager", "captured": False}
