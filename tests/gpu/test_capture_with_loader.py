"""CUDA-graph capture of a training step (SOLVER.STEP_MODE cuda_graph) while a DataLoader feeds it through
worker processes and a pin-memory thread, as streamed ImageNet input does (DeviceInput, batches copied
from pinned memory one batch ahead). The capture runs with capture_error_mode="thread_local"
(engine/static_step.py): with torch's default "global", a CUDA call the pin-memory thread makes during
the capture invalidates it. Rehearsed on the CPU uncaptured (the same loop, no graph)."""
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from resdet.classification.device_input import DeviceInput
from resdet.config import get_cfg
from resdet.data.folders import mean_image
from resdet.engine import build_trainer, build_training_state, default_setup, prepare_model
from resdet.engine.static_step import StaticStepTrainer
from resdet.runs.train_cls import ClassificationLoss

pytestmark = pytest.mark.gpu

BATCH, STEPS = 32, 12


def test_capture_with_a_live_pin_memory_loader(device, tmp_path):
    from resdet.benchmarks.cifar import cifar_classifier, photo_cifar_images

    pytest.importorskip("skimage", reason="the photographs come with scikit-image")
    images, labels = photo_cifar_images(256)
    cfg = get_cfg()
    cfg.MODEL.DEVICE, cfg.OUTPUT_DIR, cfg.SEED, cfg.LOG_PERIOD = str(device), str(tmp_path), 0, 4
    for k, v in dict(BASE_LR=0.01, IMS_PER_BATCH=BATCH, MAX_ITER=STEPS, STEPS=(8,), WARMUP_ITERS=0, CHECKPOINT_PERIOD=0,
                     STEP_MODE="cuda_graph").items():
        cfg.SOLVER[k] = v
    cfg, device = default_setup(cfg, distributed=False)
    model = prepare_model(cifar_classifier(20, mean_image(images)), cfg, device)
    state = build_training_state(cfg, model)
    loader = DataLoader(TensorDataset(images.contiguous(memory_format=torch.channels_last), labels), batch_size=BATCH,
                        sampler=RandomSampler(labels, replacement=True, num_samples=BATCH * (STEPS + 4)),
                        num_workers=2, pin_memory=device.type == "cuda", drop_last=True)
    trainer = build_trainer(cfg, model, DeviceInput(iter(loader), device), state, loss_fn=ClassificationLoss(10),
                            progress_bar=False)
    assert isinstance(trainer, StaticStepTrainer)
    trainer.train()
    assert trainer.iter == STEPS and trainer.capture == (device.type == "cuda")  # every step ran
    if device.type == "cuda":
        assert trainer._graph is not None  # captured while the loader's threads were copying batches
    loss = trainer.step_metrics["losses"]["loss_cls"]
    assert torch.isfinite(loss)
