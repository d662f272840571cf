"""AMP training steps and channels_last on the device (the R50-FPN Mask R-CNN preset: FrozenBN, as the
COCO configs). Rehearsal on the CPU: bf16 and fp16 CPU autocast, CPU channels_last kernels."""
import copy
import itertools

import pytest
import torch

from resdet.engine.trainer import Trainer

from .helpers import assert_same_detections, detector, photo_inputs

pytestmark = pytest.mark.gpu

# Tolerances, AMP against float32 on the same weights and inputs. The RPN losses sample anchors that do
# not depend on the model, so they match closely; the RoI losses sample among proposals that a changed
# objectness ranking can change, so they are compared loosely, and their sum tightly.
RPN_RTOL = 1e-2
ROI_TOL = dict(rtol=5e-2, atol=3e-2)
TOTAL_RTOL = 2e-2


def _one_step(model, batch, amp, device):
    """One step of the engine's Trainer (what train_det runs: autocast, GradScaler for fp16, SGD step)."""
    model = copy.deepcopy(model).to(device).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    trainer = Trainer(model, opt, itertools.repeat(batch), max_iter=1, amp=amp, device=device)
    torch.manual_seed(1)  # the same sampling of anchors and RoIs
    trainer.train()  # raises FloatingPointError on a non-finite loss
    return trainer.step_metrics["losses"], model


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_amp_training_step_is_finite_and_close_to_fp32(device, amp):
    if device.type == "cpu" and amp == "fp16":
        pytest.skip("fp16 autocast on the CPU runs slow reference kernels (over 10 minutes here); the CPU "
                    "rehearsal checks bf16")
    size = (512, 640) if device.type == "cuda" else (128, 192)
    model, _ = detector()
    images, targets = photo_inputs(2, *size, device)
    ref, _ = _one_step(model, (images, targets), "", device)
    losses, stepped = _one_step(model, (images, targets), amp, device)
    assert set(losses) == set(ref)
    # fp16: the GradScaler skips a step whose scaled gradients overflowed; weights never turn non-finite
    assert all(torch.isfinite(p).all() for p in stepped.parameters()), "non-finite weights after the step"
    for name in ("loss_objectness", "loss_rpn_box_reg"):
        assert losses[name] == pytest.approx(ref[name], rel=RPN_RTOL), name
    for name in ("loss_classifier", "loss_box_reg", "loss_mask"):
        assert losses[name] == pytest.approx(ref[name], **{"rel": ROI_TOL["rtol"], "abs": ROI_TOL["atol"]}), name
    assert sum(losses.values()) == pytest.approx(sum(ref.values()), rel=TOTAL_RTOL)


def test_channels_last_equals_contiguous(device):
    size = (320, 448) if device.type == "cuda" else (128, 192)
    model, _ = detector()
    model = model.to(device).eval()
    images, _ = photo_inputs(2, *size, device, masks=False)
    with torch.no_grad():
        plain = model(images)
        features_plain = model.fpn(model.backbone(model.preprocess(images).tensor))
        model.to(memory_format=torch.channels_last)
        batch = model.preprocess(images).tensor.contiguous(memory_format=torch.channels_last)
        features_cl = model.fpn(model.backbone(batch))
        last = model(images)
    for name, f in features_plain.items():
        scale = f.abs().max().item()
        torch.testing.assert_close(features_cl[name], f, rtol=0, atol=1e-4 * scale, msg=name)
    for a, b in zip(plain, last):  # boxes to 1e-3 px, scores to 1e-5, mask probabilities to 1e-4
        assert_same_detections(a, b, box_atol=1e-3, score_atol=1e-5, mask_atol=1e-4)
