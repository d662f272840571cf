"""Synchronisations on CUDA: one training step and one inference call of the R50-FPN Mask R-CNN preset,
at batch 1 and 8 with the default RPN top-k (2000 per level: 50k boxes at batch 8), run under
`torch.cuda.set_sync_debug_mode("error")`: any synchronisation the code has not declared raises where it
happens (reads, blocking copies, NMS calls alike), and the declared ones (resdet.utils.counting.
declared_sync, lifted out of the error mode) are at most 8 per step and per call, the same at batch 1 and
8. Rehearsed on the CPU by tests/detection/test_host_reads.py (every counted sync there is declared)."""
import os

import pytest
import torch

from resdet.config import load_config
from resdet.detection.rcnn import build_detection_model
from resdet.engine.schedules import build_lr_scheduler, build_optimizer
from resdet.engine.trainer import Trainer
from resdet.utils.counting import sync_log

from .helpers import CONFIGS, photo_inputs

pytestmark = pytest.mark.gpu

BUDGET = 8


def _declared_syncs(fn, device):
    """Run fn under sync debug mode "error"; returns the declared synchronisations it made, by name."""
    torch.cuda.synchronize(device)
    with sync_log() as log:
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return list(log)


@pytest.fixture(scope="module")
def preset(device):
    if device.type != "cuda":
        pytest.skip("sync debug mode exists on CUDA only (the CPU rehearsal: tests/detection/test_host_reads.py)")
    cfg = load_config(os.path.join(CONFIGS, "torchvision", "maskrcnn_resnet50_fpn.yaml"),
                      ["MODEL.ROI_HEADS.NUM_CLASSES", 3, "SOLVER.BASE_LR", 1e-4, "MODEL.DEVICE", str(device)])
    assert cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN == 2000
    torch.manual_seed(0)
    return build_detection_model(cfg).to(device), cfg, device


def _step(model, cfg, device, images, targets):
    """Trainer.run_step as train_det runs it (its optimizer, lr schedule, fp16 autocast and GradScaler,
    the one read of the losses), after one uncounted warm-up step."""
    opt = build_optimizer(cfg, model)
    trainer = Trainer(model, opt, [(images, targets)], max_iter=1, scheduler=build_lr_scheduler(cfg, opt),
                      amp="fp16", device=device)
    model.train()
    trainer._data_iter = iter([(images, targets)])
    trainer.run_step()  # warm-up: cuDNN / cuBLAS handles, the caching allocators, the anchors' cache
    trainer._data_iter = iter([(images, targets)])
    return _declared_syncs(trainer.run_step, device)


@pytest.mark.parametrize("batch", [1, 8])
def test_training_step_and_inference_keep_the_sync_budget_under_error_mode(preset, batch):
    model, cfg, device = preset
    images, targets = photo_inputs(batch, 320, 448, device, num_classes=3)
    train = _step(model, cfg, device, images, targets)
    assert len(train) <= BUDGET, train
    model.eval()

    def infer():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            model(images)

    infer()  # warm-up
    inference = _declared_syncs(infer, device)
    assert len(inference) <= BUDGET, inference
    print(f"\nbatch {batch}: training step {len(train)} syncs {train}; inference {len(inference)} syncs {inference}")
    # the same at batch 1 and 8 (NMS included: one batched call for all images)
    assert "NMS call" not in train and train.count("NMS: converged, boxes kept") == 1
