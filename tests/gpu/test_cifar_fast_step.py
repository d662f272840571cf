"""The fast CIFAR step on a GPU (SOLVER.STEP_MODE cuda_graph / compiled) against eager, its host reads,
and the study's smoke run with the captured step. Marker `gpu`; skipped without a CUDA device.

    python -m pytest tests/gpu/test_cifar_fast_step.py -m gpu                   # on a GPU machine
    python -m pytest tests/gpu/test_cifar_fast_step.py --gpu-device cpu         # rehearsal (CPU: uncaptured;
                                                      # or RESDET_GPU_DEVICE=cpu where --gpu-device is not known)

Written without a GPU at hand (none in the session that wrote it); rehearsed on the CPU (cuda_graph
uncaptured). The comparison runs ResNet-20 with the recipe's model (per-pixel mean, unscaled inputs) at
batch 128 for 12 steps, at lr 0.01: at the recipe's 0.1 the first steps are chaotic enough that the last-bit
difference of the update grows to 0.6% in the loss by step 6 (measured on the CPU), which says nothing
about the step. At 0.01 the CPU rehearsal measured 3.4e-4 (largest relative loss difference) and 5.1e-5
(relative difference of the parameter vector); the bounds are 2e-3 for both. The runs' own setup
(engine.build.default_setup) decides cuDNN determinism and TF32 from the config, whatever the fixture
set before: the config here says CUDNN_DETERMINISTIC True, CUDNN_BENCHMARK False, SOLVER.ALLOW_TF32
False, so that eager itself repeats exactly (checked by a test of its own, apart from the comparisons).
"""
import json
import os

import pytest
import torch

from resdet.config import get_cfg
from resdet.data.folders import DeviceBatches, mean_image
from resdet.data.samplers import InfiniteSampler
from resdet.engine import HookBase, build_trainer, build_training_state, default_setup, prepare_model, read_metrics
from resdet.engine.static_step import StaticStepTrainer
from resdet.runs.train_cls import ClassificationLoss

pytestmark = pytest.mark.gpu

BATCH = 128
LOSS_REL, WEIGHT_REL = 2e-3, 2e-3


@pytest.fixture(scope="module")
def gpu(request):
    # --gpu-device (tests/gpu's option, where registered) or $RESDET_GPU_DEVICE; "cpu" rehearses
    name = request.config.getoption("--gpu-device", default=None) or os.environ.get("RESDET_GPU_DEVICE", "cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("no CUDA device visible (torch.cuda.is_available() is False): run on a GPU machine with "
                    "`pytest -m gpu`, or rehearse with --gpu-device cpu")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.get_num_threads())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    if name == "cpu":
        torch.set_num_threads(1)
    yield torch.device(name)
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.deterministic) = saved[:3]
    torch.set_num_threads(saved[3])


@pytest.fixture(scope="module")
def photos():
    pytest.importorskip("skimage", reason="the photographs come with scikit-image (pip install -e '.[dev]')")
    from resdet.benchmarks.cifar import photo_cifar_images

    return photo_cifar_images(1024)


class _Kill(HookBase):
    def __init__(self, at):
        self.at = at

    def before_step(self):
        if self.trainer.iter == self.at:
            raise KeyboardInterrupt(f"killed at {self.at}")


def _run(out, device, images, mode, resume=False, kill_at=None, max_iter=12, hooks=(), log_period=1, **solver):
    """ResNet-20 with the recipe (per-pixel mean, SGD 0.1, momentum, decay) on on-device photo crops."""
    from resdet.benchmarks.cifar import cifar_classifier

    cfg = get_cfg()
    cfg.MODEL.DEVICE, cfg.OUTPUT_DIR, cfg.SEED, cfg.LOG_PERIOD = str(device), str(out), 0, log_period
    # default_setup applies these (the fixture's settings alone would be overridden by the defaults:
    # cuDNN free to pick nondeterministic kernels, TF32 matmuls)
    cfg.CUDNN_DETERMINISTIC, cfg.CUDNN_BENCHMARK, cfg.SOLVER.ALLOW_TF32 = True, False, False
    s = dict(BASE_LR=0.01, IMS_PER_BATCH=BATCH, MAX_ITER=max_iter, STEPS=(6,), WARMUP_ITERS=0, WARMUP_FACTOR=1.0,
             CHECKPOINT_PERIOD=8, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=1e-4, MOMENTUM=0.9, STEP_MODE=mode)
    s.update(solver)
    for k, v in s.items():
        cfg.SOLVER[k] = v
    cfg, device = default_setup(cfg, distributed=False)
    torch.manual_seed(0)
    x, y = images
    mean = mean_image(x)
    model = prepare_model(cifar_classifier(20, mean), cfg, device)
    state = build_training_state(cfg, model, resume=resume)
    sampler = InfiniteSampler(len(y), seed=0, start=state.start_iter * BATCH)
    batches = DeviceBatches(x.to(device), y.to(device), BATCH, sampler, pad=4, pad_value=mean.to(device), seed=0,
                            start_iter=state.start_iter)
    extra = list(hooks) + ([_Kill(kill_at)] if kill_at is not None else [])
    trainer = build_trainer(cfg, model, batches, state, loss_fn=ClassificationLoss(10), progress_bar=False,
                            extra_hooks=extra)
    trainer.train()
    return model, trainer


def _losses(out):
    return [(r["iteration"], r["loss_cls"], r["lr"]) for r in read_metrics(os.path.join(out, "metrics.jsonl"))
            if "loss_cls" in r]


@pytest.fixture(scope="module")
def eager(gpu, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("eager")
    model, _ = _run(out, gpu, photos, "eager")
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, _losses(out)


def test_eager_repeats_itself_under_the_determinism_keys(gpu, photos, eager, tmp_path):
    # the reference of the comparisons below: with CUDNN_DETERMINISTIC and without TF32, bit for bit
    weights, log = eager
    model, _ = _run(tmp_path, gpu, photos, "eager")
    assert _losses(tmp_path) == log, "eager itself does not repeat: a nondeterministic kernel?"
    for k, v in model.state_dict().items():
        assert torch.equal(v.detach().cpu(), weights[k]), k


@pytest.mark.parametrize("mode", ["cuda_graph", "compiled"])
def test_fast_step_equals_eager_across_an_lr_drop_and_a_resume(mode, gpu, photos, eager, tmp_path):
    weights, log = eager
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, gpu, photos, mode, kill_at=10)       # after the checkpoint at 8 (the capture was at 3)
    model, trainer = _run(tmp_path, gpu, photos, mode, resume=True)   # captures again after its warm-up
    assert isinstance(trainer, StaticStepTrainer) and trainer.start_iter == 8
    if gpu.type == "cuda" and mode == "cuda_graph":
        assert trainer.capture
    got = _losses(tmp_path)
    assert [r[0] for r in got] == [r[0] for r in log] == list(range(1, 13))
    assert [r[2] for r in got] == pytest.approx([r[2] for r in log])            # 0.1, then 0.01 from step 6
    loss_rel = max(abs(a - b) / abs(b) for (_, a, _), (_, b, _) in zip(got, log))
    # all trained parameters as one vector (single small tensors, e.g. a BN bias near 0, exaggerate)
    names = [k for k, _ in model.named_parameters()]
    ours = torch.cat([model.state_dict()[k].detach().cpu().double().flatten() for k in names])
    ref = torch.cat([weights[k].double().flatten() for k in names])
    weight_rel = float((ours - ref).norm() / ref.norm())
    print(f"{mode} on {gpu}: largest relative loss difference {loss_rel:.2e}, relative difference of the "
          f"parameter vector {weight_rel:.2e}")
    assert loss_rel < LOSS_REL, loss_rel
    assert weight_rel < WEIGHT_REL, weight_rel


class _SyncsAreErrors(HookBase):
    """torch.cuda.set_sync_debug_mode("error") over steps [start, stop): any host sync there raises."""

    def __init__(self, start, stop):
        self.start, self.stop, self.checked = start, stop, 0

    def before_step(self):
        if self.trainer.iter == self.start:
            torch.cuda.set_sync_debug_mode("error")

    def after_step(self):
        if self.start <= self.trainer.iter < self.stop:
            self.checked += 1
        if self.trainer.iter == self.stop - 1:
            torch.cuda.set_sync_debug_mode("default")

    def after_train(self):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("mode", ["cuda_graph", "compiled"])
def test_steps_between_log_boundaries_never_wait_for_the_gpu(mode, gpu, photos, tmp_path):
    if gpu.type != "cuda":
        pytest.skip("host syncs exist on CUDA only")
    # LOG_PERIOD 50: the steps 8..45 (after warm-up and capture, before the first boundary) must not sync:
    # data (pinned index prefetch, on-device crop/flip), the replayed step, the metrics hook's device sums
    guard = _SyncsAreErrors(8, 46)
    _run(tmp_path, gpu, photos, mode, max_iter=60, hooks=[guard], log_period=50, STEPS=(30,), CHECKPOINT_PERIOD=0)
    assert guard.checked == 38


def test_the_study_smoke_runs_with_the_captured_step(gpu, tmp_path):
    if gpu.type != "cuda":
        pytest.skip("the study picks the captured step on CUDA only (its CPU smoke is tests/runs/test_reproduce.py)")
    from resdet.runs.reproduce import main
    from tests.classification.helpers import make_cifar_batches

    root, _ = make_cifar_batches(tmp_path / "c10", per_batch=64)
    out = tmp_path / "study"
    assert main(["cifar10", "--smoke", "--data", root, "--output", str(out), "--depths", "20", "--plain", "20",
                 "--device", str(gpu)]) == 0
    rep = json.load(open(out / "report.json"))
    assert rep["recipe"]["step_mode"] == "cuda_graph"
    for m in rep["models"].values():
        assert m["runs"][0]["finished"] and 0 <= m["runs"][0]["test_error"] <= 100
    log = open(out / "runs" / "resnet20" / "run0" / "log.txt").read()
    assert "Captured the training step in a CUDA graph" in log
