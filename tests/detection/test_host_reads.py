"""The synchronisation budget of resdet/DESIGN.md ("Batched internals"), counted on the CPU with the GPU
branches forced (resdet.utils.counting; nms.force_packed_nms): host reads, blocking host-to-device copies
and NMS calls together ("syncs"),
- a training step (Trainer.run_step: forward, backward, the optimizer train_det builds, the lr step and
  the read of the losses) makes the same number at batch 1 and batch 8, at most 8, with the RPN's default
  pre-NMS top-k (2000 per level: 30k boxes at batch 8, where a call per 20,000 boxes made 2 against 1);
- an inference call makes at most 8 at any batch;
- every one is declared (counting.declared_sync), so the GPU check under sync debug mode "error" stops at
  none of them (tests/gpu/test_host_reads.py);
- the aten ops of a training step at batch 8 are at most half of torchvision's for the same
  architecture (R50-FPN Mask R-CNN, same weights, same inputs).
"""
import pytest
import torch

from resdet.config import load_config
from resdet.detection import build_detection_model
from resdet.detection.nms import force_packed_nms
from resdet.engine.schedules import build_lr_scheduler, build_optimizer
from resdet.benchmarks.counts import count_inference, count_rows, count_training_step
from resdet.benchmarks.detection import synthetic_batch

pytestmark = pytest.mark.usefixtures("one_thread")

BUDGET = 8
# short CPU runs: a small backbone (it makes no reads), narrow heads, fewer RoI samples; the RPN keeps its
# default top-k (2000 before NMS, 1000 after), so that the batch of 8 sends 29k boxes to NMS
SMALL = ["MODEL.BACKBONE.NAME", "resnet18", "MODEL.MASK_ON", True, "MODEL.ROI_HEADS.NUM_CLASSES", 5,
         "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64, "SOLVER.BASE_LR", 1e-4]
SIZE = (160, 160)  # 3,600 RPN boxes per image at the default top-k


@pytest.fixture(scope="module")
def model_and_cfg():
    cfg = load_config("configs/Base-RCNN-FPN.yaml", SMALL)
    assert cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN == 2000
    torch.manual_seed(0)
    return build_detection_model(cfg), cfg


def _counts(model_and_cfg, batch, mode, packed=True, size=SIZE):
    model, cfg = model_and_cfg
    torch.manual_seed(0)
    images, targets = synthetic_batch(batch, *size, 3, 6, True, "cpu", seed=batch)
    with force_packed_nms(packed):
        if mode == "train":  # no warm-up step: the first step reads no more than the others
            opt = build_optimizer(cfg, model)
            return count_training_step(model, opt, images, targets, scheduler=build_lr_scheduler(cfg, opt), warmup=0)
        return count_inference(model, images, warmup=0)


def test_training_step_syncs_do_not_grow_with_the_batch(model_and_cfg):
    one, eight = _counts(model_and_cfg, 1, "train"), _counts(model_and_cfg, 8, "train")
    assert one.syncs == eight.syncs <= BUDGET, (one.summary(), eight.summary())
    # the RPN's NMS: no torchvision call (each is a sync on CUDA), one declared read for all images
    assert eight.nms_calls == 0 and eight.h2d_copies == 0, eight.summary()
    assert not eight.undeclared, eight.summary()
    # only whole-batch reads: no boolean masks, nonzero or unique on the hot path
    assert set(eight.reads_by_kind) <= {"item", "tolist"}, eight.summary()


def test_inference_syncs_within_budget(model_and_cfg):
    for batch in (1, 8):  # the GPU's NMS branch (the batch of 8 smaller: inference has no top-k question)
        c = _counts(model_and_cfg, batch, "infer", size=SIZE if batch == 1 else (64, 96))
        assert c.syncs <= BUDGET and c.nms_calls == 0, c.summary()
        assert c.h2d_copies == 0 and not c.undeclared, c.summary()
    # the CPU's branch: one torchvision call per (image, level) and (image, class) group, which are no
    # synchronisations on a CPU; the reads keep the budget
    c = _counts(model_and_cfg, 2, "infer", packed=False, size=(64, 96))
    assert c.host_reads <= BUDGET and c.nms_calls > 2 and not c.undeclared, c.summary()


def test_training_step_aten_ops_half_of_torchvision():
    rows = count_rows("maskrcnn", 64, 64, batches=(8,), modes=("train",), boxes_per_image=3,
                      shrink=dict(pre_nms_topk=100, post_nms_topk=50, rpn_batch=32, roi_batch=4))
    ours, tv = (next(r for r in rows if r["model"] == m) for m in ("resdet", "torchvision"))
    assert ours["aten_ops"] <= 0.5 * tv["aten_ops"], (ours["aten_ops"], tv["aten_ops"], ours["summary"])
    assert ours["syncs"] <= BUDGET < tv["syncs"]
