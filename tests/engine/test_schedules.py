import math

import pytest
import torch
from torch import nn

from resdet.config import get_cfg
from resdet.engine.schedules import (
    WarmupCosineLR,
    WarmupMultiStepLR,
    build_lr_scheduler,
    build_optimizer,
    get_param_groups,
    scaled_lr,
)


def _opt(lr=0.1):
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def lr_at(scheduler, it):
    scheduler.last_epoch = it
    return scheduler.get_lr()[0]


def test_paper_cifar_resnet110_schedule():
    """0.01 for the first 400 iterations, then 0.1; / 10 at 32k and 48k (the paper's CIFAR recipe)."""
    s = WarmupMultiStepLR(_opt(0.1), [32000, 48000], gamma=0.1, warmup_factor=0.1, warmup_iters=400,
                          warmup_method="constant")
    expected = {0: 0.01, 1: 0.01, 399: 0.01, 400: 0.1, 31999: 0.1, 32000: 0.01, 47999: 0.01, 48000: 0.001,
                63999: 0.001}
    for it, lr in expected.items():
        assert lr_at(s, it) == pytest.approx(lr, rel=1e-12), it


def test_linear_warmup_values():
    s = WarmupMultiStepLR(_opt(0.02), [100], warmup_factor=0.001, warmup_iters=10, warmup_method="linear")
    assert lr_at(s, 0) == pytest.approx(0.02 * 0.001)
    assert lr_at(s, 5) == pytest.approx(0.02 * (0.001 * 0.5 + 0.5))
    assert lr_at(s, 10) == pytest.approx(0.02)
    assert lr_at(s, 100) == pytest.approx(0.002)


def test_cosine_values():
    s = WarmupCosineLR(_opt(0.4), max_iter=1000, warmup_factor=0.1, warmup_iters=0, end_factor=0.0)
    assert lr_at(s, 0) == pytest.approx(0.4)
    assert lr_at(s, 500) == pytest.approx(0.2)
    assert lr_at(s, 250) == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(s, 1000) == pytest.approx(0.0, abs=1e-12)
    s = WarmupCosineLR(_opt(0.4), max_iter=1000, warmup_factor=0.5, warmup_iters=10, warmup_method="constant",
                       end_factor=0.1)
    assert lr_at(s, 5) == pytest.approx(0.2 * 0.5 * (1 + 0.1 + 0.9 * math.cos(math.pi * 5 / 1000)), rel=1e-3)
    assert lr_at(s, 1000) == pytest.approx(0.04)


def test_cosine_equals_timm_after_warmup():
    """timm's CosineLRScheduler (per iteration) is the reference curve; warm-up differs on purpose (ours
    multiplies the cosine, timm's replaces it), so compare from WARMUP_ITERS on."""
    from timm.scheduler import CosineLRScheduler

    base, end, max_iter, warm = 0.4, 0.05, 900, 50
    ours = WarmupCosineLR(_opt(base), max_iter=max_iter, warmup_factor=0.1, warmup_iters=warm, end_factor=end)
    opt = _opt(base)
    timm_sched = CosineLRScheduler(opt, t_initial=max_iter, lr_min=base * end, warmup_t=warm,
                                   warmup_lr_init=base * 0.1, t_in_epochs=False)
    for it in list(range(warm, max_iter, 37)) + [max_iter - 1]:
        timm_sched.step_update(it)
        assert lr_at(ours, it) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), it
    timm_sched.step_update(warm // 2)  # linear warm-up from the same start: timm's value, ours x cosine
    cosine = end + (1 - end) * 0.5 * (1 + math.cos(math.pi * (warm // 2) / max_iter))
    assert lr_at(ours, warm // 2) == pytest.approx(opt.param_groups[0]["lr"] * cosine, rel=1e-9)


def test_stepping_matches_closed_form_and_resumes_exactly():
    cfg = get_cfg()
    cfg.SOLVER.merge_from_list(["BASE_LR", 0.1, "STEPS", (30, 60), "MAX_ITER", 80, "WARMUP_ITERS", 20])
    opt = _opt(0.1)
    sched = build_lr_scheduler(cfg, opt)
    seen = []
    for it in range(50):
        seen.append(opt.param_groups[0]["lr"])  # the lr the step at `it` uses
        opt.step()
        sched.step()
    ref = WarmupMultiStepLR(_opt(0.1), [30, 60], warmup_factor=cfg.SOLVER.WARMUP_FACTOR, warmup_iters=20)
    assert seen == pytest.approx([lr_at(ref, i) for i in range(50)], rel=1e-12)
    # resume: fresh optimizer + scheduler from their state dicts continue the same sequence
    opt2 = _opt(0.1)
    sched2 = build_lr_scheduler(cfg, opt2)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for it in range(50, 80):
        assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-15)
        assert opt2.param_groups[0]["lr"] == pytest.approx(lr_at(ref, it), rel=1e-12), it
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()


def test_schedule_config_errors():
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME = "Poly"
    with pytest.raises(ValueError, match="unknown schedule 'Poly'"):
        build_lr_scheduler(cfg, _opt())
    cfg = get_cfg()
    cfg.SOLVER.WARMUP_METHOD = "exp"
    with pytest.raises(ValueError, match="unknown warm-up 'exp'"):
        build_lr_scheduler(cfg, _opt())
    cfg = get_cfg()
    cfg.SOLVER.STEPS = (100, 50)
    with pytest.raises(ValueError, match=r"SOLVER.STEPS must be increasing; got \[100, 50\]"):
        build_lr_scheduler(cfg, _opt())


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_param_groups_weight_decay():
    net = _Net()
    groups = get_param_groups(net, lr=0.1, weight_decay=1e-4, weight_decay_norm=0.0)
    by_id = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert by_id[id(net.conv.weight)] == 1e-4
    assert by_id[id(net.fc.weight)] == 1e-4
    for p in (net.bn.weight, net.bn.bias, net.gn.weight, net.gn.bias, net.fc.bias):
        assert by_id[id(p)] == 0.0
    assert id(net.frozen.weight) not in by_id and id(net.frozen.bias) not in by_id
    assert len(by_id) == 7


def test_build_optimizer_linear_scaling_and_kinds():
    cfg = get_cfg()
    cfg.SOLVER.merge_from_list(["BASE_LR", 0.1, "IMS_PER_BATCH", 512, "REFERENCE_WORLD_BATCH", 256,
                                "NESTEROV", True, "WEIGHT_DECAY_NORM", 1e-5])
    opt = build_optimizer(cfg, _Net())
    assert isinstance(opt, torch.optim.SGD)
    assert all(g["lr"] == pytest.approx(0.2) for g in opt.param_groups)
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [1e-5, 1e-4]
    cfg.SOLVER.OPTIMIZER = "AdamW"
    cfg.SOLVER.REFERENCE_WORLD_BATCH = 0
    opt = build_optimizer(cfg, _Net())
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == pytest.approx(0.1)
    cfg.SOLVER.OPTIMIZER = "Lion"
    with pytest.raises(ValueError, match="unknown optimizer 'Lion'"):
        build_optimizer(cfg, _Net())
    assert scaled_lr(0.1, 128, 256) == pytest.approx(0.05)


def test_training_length_in_epochs_and_fractions():
    from resdet.config import ConfigError, load_config
    from resdet.engine.schedules import resolve_training_length

    cfg = load_config(None, ["SOLVER.MAX_EPOCHS", "36", "SOLVER.IMS_PER_BATCH", "4", "SOLVER.STEPS_FRACTIONS",
                             "(0.8, 0.95)", "SOLVER.CHECKPOINT_PERIOD_FRACTION", "0.25",
                             "TEST.EVAL_PERIOD_FRACTION", "0.25"])
    out = resolve_training_length(cfg, num_images=170)
    # 36 passes over 170 images at 4 per step: ceil(1530) steps; lr steps, checkpoints, evaluations follow
    assert out.SOLVER.MAX_ITER == 1530 and out.SOLVER.STEPS == (1224, 1454)
    assert out.SOLVER.CHECKPOINT_PERIOD == 382 and out.TEST.EVAL_PERIOD == 382
    assert out.is_frozen() and cfg.SOLVER.MAX_ITER == 90000  # a resolved copy; the input is unchanged
    assert resolve_training_length(cfg, 171).SOLVER.MAX_ITER == 1539  # 36 * 171 / 4 = 1539 exactly
    # fractions alone apply to MAX_ITER as given; nothing to resolve returns the config itself
    only = load_config(None, ["SOLVER.MAX_ITER", "1000", "TEST.EVAL_PERIOD_FRACTION", "0.1"])
    assert resolve_training_length(only, 0).TEST.EVAL_PERIOD == 100
    plain = load_config(None)
    assert resolve_training_length(plain, 170) is plain
    with pytest.raises(ConfigError, match="TEST.EVAL_PERIOD_FRACTION must be a fraction of training in \\(0, 1\\]; got 2.0"):
        resolve_training_length(load_config(None, ["TEST.EVAL_PERIOD_FRACTION", "2.0"]), 10)
    with pytest.raises(ConfigError, match="SOLVER.STEPS_FRACTIONS must increase"):
        resolve_training_length(load_config(None, ["SOLVER.STEPS_FRACTIONS", "(0.9, 0.5)"]), 10)
    with pytest.raises(ConfigError, match="training set has none"):
        resolve_training_length(load_config(None, ["SOLVER.MAX_EPOCHS", "2"]), 0)
