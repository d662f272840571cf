"""Config -> engine objects, so that tools/train_cls.py and tools/train_det.py stay thin.

A training script is, in order:

    cfg, device = default_setup(cfg)                        # torchrun/DDP, output dir, logger, seed, cuDNN, config.yaml
    model = prepare_model(build_my_model(cfg), cfg, device)  # device, channels_last, DDP, torch.compile
    state = build_training_state(cfg, model, resume=args.resume)   # optimizer, lr schedule, scaler,
                                                             # checkpointer; resumed or MODEL.WEIGHTS loaded
    sampler = InfiniteSampler(len(dataset), seed=cfg.SEED, start=state.start_iter * cfg.SOLVER.IMS_PER_BATCH)
    loader = DataLoader(dataset, batch_size=per_process_batch(cfg), sampler=sampler, ...)
    trainer = build_trainer(cfg, model, loader, state, loss_fn=..., eval_fn=..., sampler=sampler)
    trainer.train()
    cleanup()

`build_trainer` registers, in this order: MetricsLogger(LOG_PERIOD), PeriodicCheckpointer
(CHECKPOINT_PERIOD, storing the sampler position when a sampler is given), EvalHook(TEST.EVAL_PERIOD)
when an eval_fn is given, your `extra_hooks`, PlotHook (OUTPUT_DIR/training_curves.png at each
checkpoint and at the end) and a tqdm progress bar.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..config import save_config
from ..utils.env import get_device, seed_all, set_cudnn_benchmark, set_deterministic
from .checkpoint import Checkpointer
from .distributed import broadcast_object, get_rank, get_world_size, init_distributed, wrap_model
from .hooks import EvalHook, MetricsLogger, PeriodicCheckpointer, ProgressHook
from .logging import MetricWriter, setup_logger
from .plots import PlotHook
from .schedules import build_lr_scheduler, build_optimizer
from .static_step import STEP_MODES, StaticStepTrainer
from .trainer import HookBase, Trainer

__all__ = ["default_setup", "per_process_batch", "prepare_model", "TrainingState", "build_training_state", "build_trainer"]

logger = logging.getLogger(__name__)


def default_setup(cfg, distributed: bool = True) -> Tuple[Any, torch.device]:
    """Join torchrun's process group (if any; timeout DIST.TIMEOUT_MINUTES), create OUTPUT_DIR, set up
    logging, seed every RNG, choose deterministic kernels (CUDNN_DETERMINISTIC), cuDNN autotuning
    (CUDNN_BENCHMARK) and TF32 matmuls (SOLVER.ALLOW_TF32), and save the resolved config as
    OUTPUT_DIR/config.yaml. Returns (cfg, device).

    A negative SEED is drawn once on rank 0, shared with every rank, and recorded in the returned
    config (and config.yaml). Each process seeds with SEED + rank, so data augmentation differs
    between processes while the run stays reproducible; DDP copies rank 0's initial weights anyway.
    """
    # The device is checked first, so that "cuda" without a GPU fails with a clear message.
    device = get_device(cfg.MODEL.DEVICE, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if distributed:
        init_distributed(device=device, timeout_minutes=cfg.DIST.TIMEOUT_MINUTES)
    rank = get_rank()
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    log = setup_logger(cfg.OUTPUT_DIR, rank=rank)
    seed = broadcast_object(seed_all(cfg.SEED) if rank == 0 else None)
    seed_all(seed + rank)
    set_deterministic(cfg.CUDNN_DETERMINISTIC)
    set_cudnn_benchmark(cfg.CUDNN_BENCHMARK, cfg.CUDNN_DETERMINISTIC)
    torch.set_float32_matmul_precision("high" if cfg.SOLVER.ALLOW_TF32 else "highest")
    if seed != cfg.SEED:
        was_frozen = cfg.is_frozen()
        cfg = cfg.clone()
        cfg.defrost()
        cfg.SEED = seed
        if was_frozen:
            cfg.freeze()
    if rank == 0:
        save_config(cfg, os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
    log.info("world size %d, rank %d, device %s, seed %d, torch %s", get_world_size(), rank, device, seed,
             torch.__version__)
    return cfg, device


def per_process_batch(cfg) -> int:
    """SOLVER.IMS_PER_BATCH (the global batch) split over the processes; it must divide evenly."""
    total, world = cfg.SOLVER.IMS_PER_BATCH, get_world_size()
    if total <= 0 or total % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={total} must be a positive multiple of the number of processes ({world})")
    return total // world


def prepare_model(model: nn.Module, cfg, device: torch.device, broadcast_buffers: bool = True) -> nn.Module:
    """Move to `device`, convert to channels_last (SOLVER.CHANNELS_LAST), wrap in DDP when distributed,
    and torch.compile (SOLVER.COMPILE). The memory format is changed before DDP builds its buckets.
    `broadcast_buffers`: DDP copies rank 0's buffers to every rank before each forward (see
    distributed.wrap_model; detection passes False)."""
    model = model.to(device)
    if cfg.SOLVER.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    model = wrap_model(model, device, broadcast_buffers=broadcast_buffers)
    if cfg.DIST.FP16_COMPRESSION:
        compress_gradients_fp16(model)
    if cfg.SOLVER.COMPILE:
        model = torch.compile(model)
    return model


def compress_gradients_fp16(model: nn.Module) -> bool:
    """DIST.FP16_COMPRESSION: a DDP model all-reduces its gradient buckets in fp16 (torch's
    fp16_compress_hook); a model that is not DDP (one process) has nothing to all-reduce. True if set."""
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        return False
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    model.register_comm_hook(None, default_hooks.fp16_compress_hook)
    return True


@dataclasses.dataclass
class TrainingState:
    """What `build_training_state` made, and where training starts."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Optional[torch.amp.GradScaler]
    checkpointer: Checkpointer
    start_iter: int = 0
    resumed: Dict[str, Any] = dataclasses.field(default_factory=dict)  # the checkpoint's other entries

    @property
    def sampler_state(self) -> Optional[Dict[str, Any]]:
        return self.resumed.get("sampler")


def build_training_state(cfg, model: nn.Module, resume: bool = False, **extra_objects: Any) -> TrainingState:
    """Optimizer, lr scheduler, grad scaler (fp16 only) and checkpointer for `model`; then resume from
    the newest checkpoint in OUTPUT_DIR (with `resume`) or load MODEL.WEIGHTS into the model.

    `extra_objects` (anything with state_dict/load_state_dict, e.g. an EMA model) are checkpointed
    and restored with the rest.
    """
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    device_type = next(model.parameters()).device.type
    scaler = torch.amp.GradScaler(device_type) if cfg.SOLVER.AMP == "fp16" else None
    checkpointer = Checkpointer(cfg.OUTPUT_DIR, model, optimizer, scheduler, scaler,
                                max_keep=cfg.SOLVER.CHECKPOINT_MAX_KEEP, config=cfg, **extra_objects)
    resumed = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    start_iter = int(resumed.get("iteration", 0))
    if start_iter > cfg.SOLVER.MAX_ITER:
        raise ValueError(f"Resumed at iteration {start_iter}, beyond SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER}")
    return TrainingState(optimizer, scheduler, scaler, checkpointer, start_iter, resumed)


def build_trainer(
    cfg,
    model: nn.Module,
    data_loader,
    state: TrainingState,
    *,
    loss_fn: Optional[Callable] = None,
    eval_fn: Optional[Callable[[], Dict[str, Any]]] = None,
    sampler: Optional[Any] = None,
    device: Optional[torch.device] = None,
    extra_hooks: Sequence[HookBase] = (),
    progress_bar: bool = True,
) -> Trainer:
    """A Trainer with the standard hooks, configured from cfg.SOLVER / TEST / LOG_PERIOD."""
    extra_fn = None
    if sampler is not None:
        global_batch = cfg.SOLVER.IMS_PER_BATCH

        def extra_fn(next_iter: int) -> Dict[str, Any]:
            return {"sampler": sampler.state_dict(consumed=next_iter * global_batch)}

    hooks = [MetricsLogger(cfg.LOG_PERIOD), PeriodicCheckpointer(state.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, extra_fn)]
    if eval_fn is not None:
        hooks.append(EvalHook(cfg.TEST.EVAL_PERIOD, eval_fn))
    hooks.extend(extra_hooks)
    hooks.append(PlotHook(cfg.OUTPUT_DIR, period=cfg.SOLVER.CHECKPOINT_PERIOD))  # after eval: draws its results
    if progress_bar:
        hooks.append(ProgressHook())
    # SOLVER.STEP_MODE: the plain loop, or a compiled / CUDA-graph step (resdet/engine/static_step.py) that
    # reads the device only at log, checkpoint and evaluation boundaries.
    mode = cfg.SOLVER.STEP_MODE
    if mode not in STEP_MODES:
        raise ValueError(f"SOLVER.STEP_MODE must be one of {STEP_MODES}; got {mode!r}")
    trainer_cls, fast = Trainer, {}
    if mode != "eager":
        trainer_cls = StaticStepTrainer
        fast = dict(step_mode=mode, sync_periods=(cfg.LOG_PERIOD, cfg.SOLVER.CHECKPOINT_PERIOD, cfg.TEST.EVAL_PERIOD))
    return trainer_cls(
        model,
        state.optimizer,
        data_loader,
        **fast,
        max_iter=cfg.SOLVER.MAX_ITER,
        start_iter=state.start_iter,
        loss_fn=loss_fn,
        scheduler=state.scheduler,
        amp=cfg.SOLVER.AMP,
        grad_scaler=state.scaler,
        channels_last=cfg.SOLVER.CHANNELS_LAST,
        clip_grad_norm=cfg.SOLVER.CLIP_GRAD_NORM,
        device=device,
        hooks=hooks,
        writer=MetricWriter(cfg.OUTPUT_DIR, start_iter=state.start_iter),
        rng_state=state.resumed.get("rng"),
    )
