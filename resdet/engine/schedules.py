"""Optimizers and iteration-based learning-rate schedules.

    optimizer = build_optimizer(cfg, model)            # SGD (momentum, nesterov) or AdamW
    scheduler = build_lr_scheduler(cfg, optimizer)     # call scheduler.step() once per iteration

Learning rate: SOLVER.BASE_LR is for SOLVER.IMS_PER_BATCH images per step; with
SOLVER.REFERENCE_WORLD_BATCH > 0 it is scaled linearly (Goyal et al. 2017): lr = BASE_LR * IMS_PER_BATCH
/ REFERENCE_WORLD_BATCH. Weight decay: norm layers' affine parameters and all biases get
SOLVER.WEIGHT_DECAY_NORM, every other parameter SOLVER.WEIGHT_DECAY.

Schedules count iterations (optimizer steps), not epochs, and compute the lr in closed form from the
iteration, so a resumed scheduler (its state is `last_epoch`, the iteration count) gives exactly the
lr of an uninterrupted run. Warm-up multiplies the lr by a factor during the first WARMUP_ITERS steps:
"linear" ramps the factor from WARMUP_FACTOR to 1, "constant" holds it at WARMUP_FACTOR. The paper's
CIFAR recipe for ResNet-110 ("0.01 until training error is below 80% (about 400 iterations), then back
to 0.1") is constant warm-up with factor 0.1 for 400 iterations.

Both schedules also give their lr as a device tensor of a device iteration counter,
`scheduler.lr_tensor(iteration) -> float64 [num groups]`, the same float64 values get_lr() computes
(same operations in the same order), so that a compiled or CUDA-graph-captured training step
(resdet/engine/static_step.py) follows the schedule with no host work and no re-capture at an lr drop.
"""
from __future__ import annotations

import logging
import math
from bisect import bisect_right
from typing import Any, Dict, List, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from ..config import ConfigError
from .distributed import unwrap_model

logger = logging.getLogger(__name__)

__all__ = [
    "scaled_lr",
    "get_param_groups",
    "make_optimizer",
    "build_optimizer",
    "WarmupMultiStepLR",
    "WarmupCosineLR",
    "build_lr_scheduler",
    "resolve_training_length",
]

# Layers whose affine parameters count as "norm" for weight decay. FrozenBatchNorm2d has buffers only.
_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def scaled_lr(base_lr: float, ims_per_batch: int, reference_world_batch: int = 0) -> float:
    """The linear scaling rule: BASE_LR tuned for `reference_world_batch` images, used with `ims_per_batch`."""
    if reference_world_batch < 0:
        raise ValueError(f"SOLVER.REFERENCE_WORLD_BATCH must be >= 0; got {reference_world_batch}")
    if reference_world_batch == 0:
        return float(base_lr)
    if ims_per_batch <= 0:
        raise ValueError(f"SOLVER.IMS_PER_BATCH must be positive; got {ims_per_batch}")
    return float(base_lr) * ims_per_batch / reference_world_batch


def get_param_groups(model: nn.Module, lr: float, weight_decay: float, weight_decay_norm: float) -> List[Dict[str, Any]]:
    """Two parameter groups: decayed (weights) and norm/bias (WEIGHT_DECAY_NORM).

    Frozen parameters (requires_grad=False) are left out; a parameter shared by several modules is
    counted once. Empty groups are dropped.
    """
    model = unwrap_model(model)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, _NORM_TYPES) or name == "bias" or name.endswith("_bias"):
                no_decay.append(param)
            else:
                decay.append(param)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": weight_decay_norm},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (all requires_grad=False)")
    return groups


def make_optimizer(
    model: nn.Module,
    *,
    name: str = "SGD",
    lr: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 1e-4,
    weight_decay_norm: float = 0.0,
    betas: Sequence[float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW, over `get_param_groups(model)`."""
    groups = get_param_groups(model, lr, weight_decay, weight_decay_norm)
    key = name.upper()
    if key == "SGD":
        cls, kwargs = torch.optim.SGD, dict(lr=lr, momentum=momentum, nesterov=nesterov)
    elif key == "ADAMW":
        cls, kwargs = torch.optim.AdamW, dict(lr=lr, betas=tuple(betas))
    else:
        raise ValueError(f"SOLVER.OPTIMIZER: unknown optimizer '{name}'; expected 'SGD' or 'AdamW'")
    # The fused kernel updates every parameter of a group in one launch (foreach: a few launches per
    # group; the default on the CPU is a Python loop over parameters, three or four ops each).
    params = [p for g in groups for p in g["params"]]
    if all(p.device.type in ("cuda", "cpu") and p.is_floating_point() for p in params):
        try:
            return cls(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a dtype or device this torch's fused kernel lacks
            pass
    return cls(groups, foreach=True, **kwargs)


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer described by cfg.SOLVER, with the linearly scaled lr."""
    s = cfg.SOLVER
    return make_optimizer(
        model,
        name=s.OPTIMIZER,
        lr=scaled_lr(s.BASE_LR, s.IMS_PER_BATCH, s.REFERENCE_WORLD_BATCH),
        momentum=s.MOMENTUM,
        nesterov=s.NESTEROV,
        weight_decay=s.WEIGHT_DECAY,
        weight_decay_norm=s.WEIGHT_DECAY_NORM,
        betas=s.ADAMW_BETAS,
    )


def _warmup_factor(method: str, it: int, warmup_iters: int, warmup_factor: float) -> float:
    if it >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = it / warmup_iters
        return warmup_factor * (1.0 - alpha) + alpha
    raise ValueError(f"SOLVER.WARMUP_METHOD: unknown warm-up '{method}'; expected 'linear' or 'constant'")


def _warmup_factor_tensor(method: str, it: torch.Tensor, warmup_iters: int, warmup_factor: float) -> torch.Tensor:
    """_warmup_factor for a 0-dim integer tensor `it`, in float64 (the same operations as the float version)."""
    one = torch.ones((), dtype=torch.float64, device=it.device)
    if warmup_iters <= 0:
        return one
    if method == "constant":
        factor = torch.full((), warmup_factor, dtype=torch.float64, device=it.device)
    else:
        alpha = it.to(torch.float64) / warmup_iters
        factor = warmup_factor * (1.0 - alpha) + alpha
    return torch.where(it < warmup_iters, factor, one)


class _LrTensorMixin:
    """Device copies of a schedule's constants for lr_tensor, made on first use (before any CUDA-graph
    capture, which may not copy from the host) and kept out of state_dict (they follow from it)."""

    def _device_constant(self, device: torch.device, values, dtype=torch.float64) -> torch.Tensor:
        cache = self.__dict__.setdefault("_lr_constants", {})
        key = (str(device), dtype, tuple(values))   # keyed by value: load_state_dict may change them
        if key not in cache:
            cache[key] = torch.tensor(list(values), dtype=dtype, device=device)
        return cache[key]

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state.pop("_lr_constants", None)
        return state


def _check_warmup(method: str, warmup_iters: int, warmup_factor: float) -> None:
    _warmup_factor(method, 0, 1, 1.0)  # validates the name
    if warmup_iters < 0:
        raise ValueError(f"SOLVER.WARMUP_ITERS must be >= 0; got {warmup_iters}")
    if not 0.0 < warmup_factor <= 1.0:
        raise ValueError(f"SOLVER.WARMUP_FACTOR must be in (0, 1]; got {warmup_factor}")


class WarmupMultiStepLR(_LrTensorMixin, LRScheduler):
    """lr = base_lr * warmup(it) * gamma ** (number of milestones <= it)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ):
        milestones = [int(m) for m in milestones]
        if milestones != sorted(milestones):
            raise ValueError(f"SOLVER.STEPS must be increasing; got {milestones}")
        _check_warmup(warmup_method, warmup_iters, warmup_factor)
        self.milestones = milestones
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        it = self.last_epoch
        factor = _warmup_factor(self.warmup_method, it, self.warmup_iters, self.warmup_factor)
        decay = self.gamma ** bisect_right(self.milestones, it)
        return [base * factor * decay for base in self.base_lrs]

    _get_closed_form_lr = get_lr

    def lr_tensor(self, iteration: torch.Tensor) -> torch.Tensor:
        """get_lr() at the 0-dim int64 tensor `iteration`, as float64 [num groups] on its device."""
        d = iteration.device
        base = self._device_constant(d, self.base_lrs)
        milestones = self._device_constant(d, self.milestones, torch.int64)
        # gamma ** k as get_lr's Python pow gives it, for k = 0 .. len(milestones)
        decays = self._device_constant(d, [self.gamma ** k for k in range(len(self.milestones) + 1)])
        factor = _warmup_factor_tensor(self.warmup_method, iteration, self.warmup_iters, self.warmup_factor)
        # bisect_right(milestones, it) == the count of milestones <= it; index_select, because indexing with
        # a 0-dim tensor would read it to the host
        passed = (milestones <= iteration).sum().reshape(1) if len(self.milestones) else iteration.new_zeros(1)
        return base * factor * decays.index_select(0, passed)[0]


class WarmupCosineLR(_LrTensorMixin, LRScheduler):
    """lr = base_lr * warmup(it) * (end + (1 - end) * (1 + cos(pi * it / max_iter)) / 2).

    After warm-up this is timm's CosineLRScheduler per iteration (tests/engine/test_schedules.py checks
    the two agree). It is written here rather than wrapped because timm's takes the floor and the
    warm-up start as absolute lrs shared by all parameter groups and has no "constant" warm-up (the
    paper's CIFAR ResNet-110 recipe), while the engine needs factors of each group's lr and one
    torch LRScheduler interface for both schedules (state_dict, exact resume from the iteration).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        end_factor: float = 0.0,
        last_epoch: int = -1,
    ):
        if max_iter <= 0:
            raise ValueError(f"SOLVER.MAX_ITER must be positive for a cosine schedule; got {max_iter}")
        _check_warmup(warmup_method, warmup_iters, warmup_factor)
        self.max_iter = max_iter
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        self.end_factor = end_factor
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        it = self.last_epoch
        factor = _warmup_factor(self.warmup_method, it, self.warmup_iters, self.warmup_factor)
        progress = min(it, self.max_iter) / self.max_iter
        cosine = self.end_factor + (1.0 - self.end_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return [base * factor * cosine for base in self.base_lrs]

    _get_closed_form_lr = get_lr

    def lr_tensor(self, iteration: torch.Tensor) -> torch.Tensor:
        """get_lr() at the 0-dim int64 tensor `iteration`, as float64 [num groups] on its device (torch's
        float64 cos may differ from math.cos in the last bit)."""
        base = self._device_constant(iteration.device, self.base_lrs)
        factor = _warmup_factor_tensor(self.warmup_method, iteration, self.warmup_iters, self.warmup_factor)
        progress = iteration.clamp(max=self.max_iter).to(torch.float64) / self.max_iter
        cosine = self.end_factor + (1.0 - self.end_factor) * 0.5 * (1.0 + torch.cos(math.pi * progress))
        return base * factor * cosine


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRScheduler:
    """The schedule named by SOLVER.LR_SCHEDULER_NAME, with SOLVER's warm-up settings."""
    s = cfg.SOLVER
    warmup = dict(warmup_factor=s.WARMUP_FACTOR, warmup_iters=s.WARMUP_ITERS, warmup_method=s.WARMUP_METHOD)
    if s.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        late = [m for m in s.STEPS if m > s.MAX_ITER]
        if late:  # common in shortened test runs, so a warning rather than an error
            logger.warning("SOLVER.STEPS %s has steps after SOLVER.MAX_ITER=%d that will never be reached: %s",
                           list(s.STEPS), s.MAX_ITER, late)
        return WarmupMultiStepLR(optimizer, s.STEPS, gamma=s.GAMMA, **warmup)
    if s.LR_SCHEDULER_NAME == "WarmupCosineLR":
        return WarmupCosineLR(optimizer, s.MAX_ITER, end_factor=s.COSINE_END_FACTOR, **warmup)
    raise ValueError(
        f"SOLVER.LR_SCHEDULER_NAME: unknown schedule '{s.LR_SCHEDULER_NAME}'; "
        "expected 'WarmupMultiStepLR' or 'WarmupCosineLR'"
    )


def _check_fraction(key: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{key} must be a fraction of training in (0, 1]; got {value}")


def resolve_training_length(cfg, num_images: int):
    """The config with its training-length keys in epochs and fractions turned into iterations.

    SOLVER.MAX_EPOCHS > 0 sets MAX_ITER = ceil(MAX_EPOCHS * num_images / IMS_PER_BATCH); then
    SOLVER.STEPS_FRACTIONS sets STEPS, SOLVER.CHECKPOINT_PERIOD_FRACTION sets CHECKPOINT_PERIOD and
    TEST.EVAL_PERIOD_FRACTION sets TEST.EVAL_PERIOD, each from the (resolved) MAX_ITER. Keys left at 0
    / () keep the values as given. Returns `cfg` itself when nothing is to resolve, else a resolved
    copy (frozen like `cfg`), so that config.yaml and the checkpoints hold the numbers actually used.
    """
    s, t = cfg.SOLVER, cfg.TEST
    if not (s.MAX_EPOCHS or s.STEPS_FRACTIONS or s.CHECKPOINT_PERIOD_FRACTION or t.EVAL_PERIOD_FRACTION):
        return cfg
    if s.MAX_EPOCHS < 0:
        raise ConfigError(f"SOLVER.MAX_EPOCHS must be >= 0 (0: use SOLVER.MAX_ITER); got {s.MAX_EPOCHS}")
    max_iter = s.MAX_ITER
    if s.MAX_EPOCHS > 0:
        if num_images <= 0:
            raise ConfigError(f"SOLVER.MAX_EPOCHS {s.MAX_EPOCHS} needs training images; the training set has none")
        max_iter = max(1, math.ceil(s.MAX_EPOCHS * num_images / s.IMS_PER_BATCH))
    resolved: Dict[str, Any] = {"SOLVER.MAX_ITER": max_iter}
    if s.STEPS_FRACTIONS:
        for f in s.STEPS_FRACTIONS:
            _check_fraction("each of SOLVER.STEPS_FRACTIONS", f)
        if list(s.STEPS_FRACTIONS) != sorted(s.STEPS_FRACTIONS):
            raise ConfigError(f"SOLVER.STEPS_FRACTIONS must increase; got {tuple(s.STEPS_FRACTIONS)}")
        resolved["SOLVER.STEPS"] = tuple(int(round(f * max_iter)) for f in s.STEPS_FRACTIONS)
    if s.CHECKPOINT_PERIOD_FRACTION:
        _check_fraction("SOLVER.CHECKPOINT_PERIOD_FRACTION", s.CHECKPOINT_PERIOD_FRACTION)
        resolved["SOLVER.CHECKPOINT_PERIOD"] = max(1, int(round(s.CHECKPOINT_PERIOD_FRACTION * max_iter)))
    if t.EVAL_PERIOD_FRACTION:
        _check_fraction("TEST.EVAL_PERIOD_FRACTION", t.EVAL_PERIOD_FRACTION)
        resolved["TEST.EVAL_PERIOD"] = max(1, int(round(t.EVAL_PERIOD_FRACTION * max_iter)))
    out = cfg.clone()
    out.defrost()
    for key, value in resolved.items():
        section, name = key.split(".")
        out[section][name] = value
    if cfg.is_frozen():
        out.freeze()
    source = (f"SOLVER.MAX_EPOCHS {s.MAX_EPOCHS:g} of {num_images} images at {s.IMS_PER_BATCH} per step"
              if s.MAX_EPOCHS > 0 else f"SOLVER.MAX_ITER {max_iter}")
    logger.info("Training length from %s: %s", source, ", ".join(f"{k} {v}" for k, v in resolved.items()))
    return out
