"""The host-read and kernel-launch budget of resdet/DESIGN.md ("Batched internals"), counted on the CPU
with the GPU branches forced (resdet.utils.counting; box_ops.force_packed_nms):
- a training step (Trainer.run_step: forward, backward, the optimizer train_det builds, the lr step and
  the read of the losses) makes the same number of host reads at batch 1 and batch 8, at most 8;
- an inference call makes at most 8 at any batch;
- the aten ops of a training step at batch 8 are at most half of torchvision's for the same
  architecture (R50-FPN Mask R-CNN, same weights, same inputs).
"""
import pytest
import torch

from resdet.config import load_config
from resdet.detection import build_detection_model
from resdet.detection.box_ops import force_packed_nms
from resdet.engine.schedules import build_lr_scheduler, build_optimizer
from resdet.benchmarks.counts import count_inference, count_rows, count_training_step
from resdet.benchmarks.detection import synthetic_batch

BUDGET = 8
# short CPU runs: a small backbone (it makes no reads), narrow heads, fewer proposals and samples; the
# reads do not depend on any of these
SMALL = ["MODEL.BACKBONE.NAME", "resnet18", "MODEL.MASK_ON", True, "MODEL.ROI_HEADS.NUM_CLASSES", 5,
         "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
         "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 300, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 100, "MODEL.RPN.PRE_NMS_TOPK_TEST", 300,
         "MODEL.RPN.POST_NMS_TOPK_TEST", 100, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64, "SOLVER.BASE_LR", 1e-4]


@pytest.fixture(scope="module")
def model_and_cfg():
    cfg = load_config("configs/Base-RCNN-FPN.yaml", SMALL)
    torch.manual_seed(0)
    return build_detection_model(cfg), cfg


def _counts(model_and_cfg, batch, mode, packed=True):
    model, cfg = model_and_cfg
    torch.manual_seed(0)
    images, targets = synthetic_batch(batch, 64, 96, 3, 6, True, "cpu", seed=batch)
    with force_packed_nms(packed):
        if mode == "train":  # no warm-up step: the first step reads no more than the others
            opt = build_optimizer(cfg, model)
            return count_training_step(model, opt, images, targets, scheduler=build_lr_scheduler(cfg, opt), warmup=0)
        return count_inference(model, images, warmup=0)


def test_training_step_reads_do_not_grow_with_the_batch(model_and_cfg):
    one, eight = _counts(model_and_cfg, 1, "train"), _counts(model_and_cfg, 8, "train")
    assert one.host_reads == eight.host_reads <= BUDGET, (one.summary(), eight.summary())
    assert eight.nms_calls == 1
    # only whole-batch reads: no boolean masks, nonzero or unique on the hot path
    assert set(eight.reads_by_kind) <= {"item", "tolist"}, eight.summary()


def test_inference_reads_within_budget(model_and_cfg):
    for batch, packed in ((1, True), (8, True), (8, False)):  # packed: the GPU's NMS branch; else the CPU's
        c = _counts(model_and_cfg, batch, "infer", packed)
        assert c.host_reads <= BUDGET, c.summary()


def test_training_step_aten_ops_half_of_torchvision():
    rows = count_rows("maskrcnn", 64, 64, batches=(8,), modes=("train",), boxes_per_image=3,
                      shrink=dict(pre_nms_topk=100, post_nms_topk=50, rpn_batch=32, roi_batch=4))
    ours, tv = (next(r for r in rows if r["model"] == m) for m in ("resdet", "torchvision"))
    assert ours["aten_ops"] <= 0.5 * tv["aten_ops"], (ours["aten_ops"], tv["aten_ops"], ours["summary"])
    assert ours["host_reads"] <= BUDGET < tv["host_reads"]
