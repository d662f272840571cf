"""The compiled / CUDA-graph training step (resdet/engine/static_step.py) against the eager Trainer, on the CPU.

The same run three ways: eager; SOLVER.STEP_MODE cuda_graph (on the CPU the very step that is captured
on a GPU, run uncaptured); SOLVER.STEP_MODE compiled (inductor). Each static run is interrupted and
resumed from its checkpoint, and the lr drops in between. Tolerances, stated: the static step multiplies
the gradient by the lr and then adds (torch.optim.SGD's foreach path adds with alpha=-lr in one fused
kernel), which differs in the last bit; inductor's fused kernels round differently again. Over 6 steps
that stays below 1e-5 (measured: losses 1e-7 uncaptured, 4e-7 compiled; weights 1e-7 / 2e-6).
"""
import os

import numpy as np
import pytest
import torch

from resdet.backbones.resnet import ResNet
from resdet.classification.model import ImageClassifier
from resdet.config import get_cfg
from resdet.data.folders import DeviceBatches
from resdet.data.samplers import InfiniteSampler
from resdet.engine import (HookBase, build_trainer, build_training_state, default_setup, load_checkpoint,
                           prepare_model, read_metrics)
from resdet.engine.schedules import WarmupCosineLR, WarmupMultiStepLR
from resdet.engine.static_step import StaticStepTrainer
from resdet.runs.train_cls import ClassificationLoss
from tests.classification.helpers import class_image

from .tiny_run import KillAt, TinyNet, loss_fn

CLASSES, BATCH = 4, 8


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images():
    # The tests' class patterns (tests/classification/helpers.py) under a per-channel mean and scale. (With
    # the recipe's per-pixel mean and no scaling, 6 steps at batch 8 of this tiny set are chaotic: last-bit
    # differences grow to 1e-2 in the first conv's momentum, measured, and would hide what is tested.)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, 64)
    x = np.stack([class_image(int(c), rng) for c in labels]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels)


def cifar_run(out, images, mode, resume=False, kill_at=None, **solver):
    """A CIFAR ResNet-8 (one basic block per stage, narrow) on on-device pad-crop-flip batches, through the
    engine's config builders: BN in train mode, per-iteration losses logged, checkpoints every 4 steps."""
    cfg = get_cfg()
    cfg.MODEL.DEVICE, cfg.OUTPUT_DIR, cfg.SEED, cfg.LOG_PERIOD = "cpu", str(out), 0, 1
    s = dict(BASE_LR=0.05, IMS_PER_BATCH=BATCH, MAX_ITER=6, STEPS=(3,), WARMUP_ITERS=0, WARMUP_FACTOR=1.0,
             CHECKPOINT_PERIOD=4, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=1e-4, MOMENTUM=0.9, STEP_MODE=mode)
    s.update(solver)
    for k, v in s.items():
        cfg.SOLVER[k] = v
    cfg, device = default_setup(cfg, distributed=False)
    torch.manual_seed(0)
    net = ResNet("basic", (1, 1, 1), widths=(8, 16, 32), stem="cifar", shortcut="A", num_classes=CLASSES)
    model = prepare_model(ImageClassifier(net, pixel_mean=[120.0] * 3, pixel_std=[60.0] * 3), cfg, device)
    state = build_training_state(cfg, model, resume=resume)
    x, y = images
    sampler = InfiniteSampler(len(y), seed=0, start=state.start_iter * BATCH)
    batches = DeviceBatches(x, y, BATCH, sampler, pad=4, pad_value=[120.0] * 3, seed=0, start_iter=state.start_iter)
    trainer = build_trainer(cfg, model, batches, state, loss_fn=ClassificationLoss(CLASSES), progress_bar=False,
                            extra_hooks=[KillAt(kill_at)] if kill_at is not None else [])
    trainer.train()
    return model, trainer


def _logged(out):
    return [(r["iteration"], r["loss_cls"], r["lr"]) for r in read_metrics(os.path.join(out, "metrics.jsonl"))
            if "loss_cls" in r]


@pytest.fixture(scope="module")
def eager_reference(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("eager")
    model, _ = cifar_run(out, images, "eager")
    return {k: v.clone() for k, v in model.state_dict().items()}, _logged(out), load_checkpoint(str(out / "model_0000004.pth"))


@pytest.mark.parametrize("mode", ["cuda_graph", "compiled"])
def test_static_step_equals_eager_across_an_lr_drop_and_a_resume(mode, images, eager_reference, tmp_path):
    ref_weights, ref_log, ref_ckpt = eager_reference
    with pytest.raises(KeyboardInterrupt):
        cifar_run(tmp_path, images, mode, kill_at=5)        # killed after the checkpoint at 4
    ckpt = load_checkpoint(str(tmp_path / "model_0000004.pth"))
    # the checkpoint is the eager trainer's: SGD state with momentum buffers, the scheduler at iteration 4
    assert ckpt["scheduler"]["last_epoch"] == ref_ckpt["scheduler"]["last_epoch"] == 4
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [g["lr"] for g in ref_ckpt["optimizer"]["param_groups"]]
    assert "_lr_constants" not in ckpt["scheduler"]
    for k, v in ref_ckpt["optimizer"]["state"].items():
        torch.testing.assert_close(ckpt["optimizer"]["state"][k]["momentum_buffer"], v["momentum_buffer"],
                                   rtol=1e-5, atol=1e-5)
    model, trainer = cifar_run(tmp_path, images, mode, resume=True)
    assert isinstance(trainer, StaticStepTrainer) and trainer.start_iter == 4
    log = _logged(tmp_path)
    assert [r[0] for r in log] == [r[0] for r in ref_log] == [1, 2, 3, 4, 5, 6]
    assert [r[2] for r in log] == [r[2] for r in ref_log] == pytest.approx([0.05] * 3 + [0.005] * 3)  # drop at 3
    for (_, a, _), (_, b, _) in zip(log, ref_log):
        assert a == pytest.approx(b, rel=1e-5)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref_weights[k], rtol=1e-5, atol=1e-5, msg=k)


def test_schedules_give_their_lr_as_a_device_tensor_of_the_iteration():
    def opt():
        p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
        return torch.optim.SGD([{"params": [p], "lr": 0.1}, {"params": [q], "lr": 0.3}], lr=0.1)

    schedules = [
        WarmupMultiStepLR(opt(), [5, 9], gamma=0.1, warmup_iters=4, warmup_factor=0.1, warmup_method="constant"),
        WarmupMultiStepLR(opt(), [5, 9], gamma=0.2, warmup_iters=4, warmup_factor=0.001, warmup_method="linear"),
        WarmupMultiStepLR(opt(), [], warmup_iters=0),
        WarmupCosineLR(opt(), max_iter=12, warmup_iters=3, warmup_factor=0.01, end_factor=0.05),
    ]
    for s in schedules:
        for it in range(15):
            assert s.last_epoch == it
            got = s.lr_tensor(torch.tensor(it))
            assert got.dtype == torch.float64 and got.tolist() == s.get_lr(), (type(s).__name__, it)
            s.optimizer.step()
            s.step()
        assert "_lr_constants" not in s.state_dict()


class _CountHostReads(HookBase):
    """Host reads of tensor data (`.item()`/`int()`/`float()` dispatch aten._local_scalar_dense; `tolist`
    and `numpy` bypass the dispatcher and are patched) per training step."""

    def __init__(self, monkeypatch):
        from torch.utils._python_dispatch import TorchDispatchMode

        hook = self
        self.total, self.per_step = 0, []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default:
                    hook.total += 1
                return func(*args, **(kwargs or {}))

        self.mode = Mode()
        for name in ("tolist", "numpy"):
            real = getattr(torch.Tensor, name)

            def counted(t, *a, _real=real, **k):
                hook.total += 1
                return _real(t, *a, **k)
            monkeypatch.setattr(torch.Tensor, name, counted)

    def before_train(self):
        self.mode.__enter__()

    def after_train(self):
        self.mode.__exit__(None, None, None)

    def before_step(self):
        self._start = self.total

    def after_step(self):
        self.per_step.append(self.total - self._start)


@pytest.mark.parametrize("mode", ["eager", "cuda_graph"])
def test_the_static_step_reads_the_device_only_at_log_and_checkpoint_boundaries(mode, tmp_path, monkeypatch):
    from .tiny_run import make_cfg

    cfg = make_cfg(tmp_path, MAX_ITER=12, STEPS=(6,), CHECKPOINT_PERIOD=6, STEP_MODE=mode)
    cfg.LOG_PERIOD = 4
    cfg, device = default_setup(cfg, distributed=False)
    model = prepare_model(TinyNet(0.0), cfg, device)
    state = build_training_state(cfg, model)
    g = torch.Generator().manual_seed(0)
    batches = iter([(torch.randn(8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(12)])
    counter = _CountHostReads(monkeypatch)
    trainer = build_trainer(cfg, model, batches, state, loss_fn=loss_fn, progress_bar=False, extra_hooks=[counter])
    trainer.train()
    # the hooks after the counter (the tqdm bar, plots) do not read tensors; logging, checkpoints and the
    # non-finite check happen in or before the counter's step
    reading = [i + 1 for i, n in enumerate(counter.per_step) if n]
    if mode == "eager":
        assert reading == list(range(1, 13))   # the eager step reads its losses every step
    else:
        assert reading == [4, 6, 8, 12], counter.per_step   # LOG_PERIOD 4, CHECKPOINT_PERIOD 6, the end
    logged = [r["iteration"] for r in read_metrics(str(tmp_path / "metrics.jsonl")) if "loss_cls" in r]
    assert logged == [4, 8, 12]


class _BadBatches:
    """Batches whose inputs are NaN at one iteration."""

    def __init__(self, bad_iteration):
        self.bad, self.i, self.g = bad_iteration, 0, torch.Generator().manual_seed(0)

    def __iter__(self):
        return self

    def __next__(self):
        x, y = torch.randn(8, 8, generator=self.g), torch.randint(0, 3, (8,), generator=self.g)
        if self.i == self.bad:
            x[0, 0] = float("nan")
        self.i += 1
        return x, y


def test_a_non_finite_loss_stops_training_before_the_next_checkpoint(tmp_path):
    from .tiny_run import make_cfg

    cfg = make_cfg(tmp_path, MAX_ITER=12, CHECKPOINT_PERIOD=4, STEP_MODE="cuda_graph")
    cfg.LOG_PERIOD = 20
    cfg, device = default_setup(cfg, distributed=False)
    model = prepare_model(TinyNet(0.0), cfg, device)
    state = build_training_state(cfg, model)
    trainer = build_trainer(cfg, model, _BadBatches(5), state, loss_fn=loss_fn, progress_bar=False)
    with pytest.raises(FloatingPointError, match="non-finite at iteration 5 .*after iteration 7"):
        trainer.train()
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == ["model_0000004.pth"]


def test_unsupported_settings_are_errors_that_name_them(tmp_path):
    from .tiny_run import make_cfg

    def build(**solver):
        cfg = make_cfg(tmp_path, **solver)
        cfg, device = default_setup(cfg, distributed=False)
        model = prepare_model(TinyNet(0.0), cfg, device)
        return build_trainer(cfg, model, iter([]), build_training_state(cfg, model), loss_fn=loss_fn,
                             progress_bar=False)

    with pytest.raises(ValueError, match="SOLVER.STEP_MODE must be one of"):
        build(STEP_MODE="graph")
    with pytest.raises(ValueError, match="SGD only; got AdamW"):
        build(STEP_MODE="compiled", OPTIMIZER="AdamW")
    with pytest.raises(ValueError, match="'fp16'"):
        build(STEP_MODE="cuda_graph", AMP="fp16")
    trainer = build(STEP_MODE="cuda_graph")   # on the CPU: the same step, uncaptured
    assert isinstance(trainer, StaticStepTrainer) and not trainer.capture
    with pytest.raises(ValueError, match="needs a CUDA device"):
        StaticStepTrainer(TinyNet(), torch.optim.SGD(TinyNet().parameters(), lr=0.1), iter([]), max_iter=1,
                          step_mode="cuda_graph", capture=True)
