"""The CPU RoIAlign of resdet/detection/roi_align.py against torchvision.ops.roi_align: forward and
backward, aligned or not, fixed and adaptive sampling, boxes partly or wholly outside the map, empty and
inverted boxes, both memory formats; and the poolers and a training step built on it."""
import copy

import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

import resdet.detection.roi_align as roi_align_module
from resdet.config import load_config
from resdet.detection import build_detection_model
from resdet.detection.poolers import ROIPooler
from resdet.detection.roi_align import roi_align
from resdet.detection.roi_heads import StandardROIHeads

pytestmark = pytest.mark.usefixtures("one_thread")


def _rois(n, height, width, scale, g, dtype):
    """Boxes in image coordinates (the map is `scale` of the image): mostly inside, some reaching out of
    the map, one far outside, one empty, one inverted (x2 < x1), one a single point on the border."""
    h, w = height / scale, width / scale
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor([w * 1.2, h * 1.2], dtype=dtype) - torch.tensor(
        [w * 0.1, h * 0.1], dtype=dtype)
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor([w * 0.6, h * 0.6], dtype=dtype)
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[0] = torch.tensor([w * 0.3, h * 0.3, w * 0.3, h * 0.3], dtype=dtype)     # empty
    boxes[1] = torch.tensor([-3 * w, -3 * h, -2 * w, -2 * h], dtype=dtype)         # outside
    boxes[2] = torch.tensor([w * 0.8, h * 0.7, w * 1.9, h * 1.6], dtype=dtype)     # partly outside
    boxes[3] = torch.tensor([w * 0.6, h * 0.5, w * 0.2, h * 0.1], dtype=dtype)     # inverted
    boxes[4] = torch.tensor([w, h, w, h], dtype=dtype)                             # a point on the corner
    images = torch.randint(0, 2, (n, 1), generator=g).to(dtype)
    return torch.cat([images, boxes], 1)


def _both(features, rois, size, scale, sampling_ratio, aligned, grad):
    outs = []
    for fn in (tv_roi_align, roi_align):
        x = features.detach().clone().requires_grad_()
        out = fn(x, rois, size, scale, sampling_ratio, aligned)
        (g,) = torch.autograd.grad(out, x, grad)
        outs.append((out, g))
    return outs


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, -1, 2, 3])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_equals_torchvision_forward_and_backward(aligned, sampling_ratio, scale):
    g = torch.Generator().manual_seed(int(aligned) * 100 + sampling_ratio * 10 + int(scale * 4))
    features = torch.randn(2, 6, 19, 23, generator=g, dtype=torch.float64)
    rois = _rois(60, 19, 23, scale, g, torch.float64)
    size = (7, 5)
    grad = torch.randn(60, 6, *size, generator=g, dtype=torch.float64)
    (tv_out, tv_grad), (out, grad_in) = _both(features, rois, size, scale, sampling_ratio, aligned, grad)
    # float64: the same sums in another order
    torch.testing.assert_close(out, tv_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_in, tv_grad, rtol=1e-12, atol=1e-12)
    assert out[1].abs().max() == 0 and grad_in.abs().sum() > 0  # the box outside pools zeros


def test_float32_channels_last_and_square_sizes():
    g = torch.Generator().manual_seed(5)
    features = torch.randn(2, 16, 40, 52, generator=g)
    rois = _rois(200, 40, 52, 0.25, g, torch.float32)
    grad = torch.randn(200, 16, 14, 14, generator=g)
    (tv_out, tv_grad), (out, grad_in) = _both(features, rois, 14, 0.25, 0, True, grad)
    torch.testing.assert_close(out, tv_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_in, tv_grad, rtol=1e-5, atol=1e-5)
    assert grad_in.is_contiguous()
    x = features.contiguous(memory_format=torch.channels_last).requires_grad_()
    out_cl = roi_align(x, rois, 14, 0.25, 0, True)
    (grad_cl,) = torch.autograd.grad(out_cl, x, grad)
    torch.testing.assert_close(out_cl, tv_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_cl, tv_grad, rtol=1e-5, atol=1e-5)
    assert grad_cl.is_contiguous(memory_format=torch.channels_last)  # the input's layout


def test_planned_in_chunks(monkeypatch):
    """Many RoIs are planned a chunk at a time (bounded memory): the same result."""
    g = torch.Generator().manual_seed(6)
    features = torch.randn(2, 4, 21, 17, generator=g, dtype=torch.float64)
    rois = _rois(50, 21, 17, 0.5, g, torch.float64)
    grad = torch.randn(50, 4, 7, 7, generator=g, dtype=torch.float64)
    whole = _both(features, rois, 7, 0.5, 0, False, grad)[1]
    monkeypatch.setattr(roi_align_module, "_CHUNK_ENTRIES", 500)  # a few RoIs per chunk
    chunked = _both(features, rois, 7, 0.5, 0, False, grad)[1]
    torch.testing.assert_close(chunked[0], whole[0], rtol=0, atol=0)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-12, atol=1e-12)


def test_no_boxes_and_tiny_maps():
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    out = roi_align(x, torch.zeros(0, 5), 7, 1.0, 0, True)
    assert out.shape == (0, 3, 7, 7)
    out.sum().backward()
    assert x.grad.shape == x.shape and x.grad.abs().sum() == 0
    # a 1x1 map: every sample clamps to the one pixel
    one = torch.randn(1, 2, 1, 1, dtype=torch.float64)
    rois = torch.tensor([[0, -0.4, -0.4, 1.6, 1.2], [0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    grad = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    (tv_out, tv_grad), (ours, grad_in) = _both(one, rois, 3, 1.0, 0, False, grad)
    torch.testing.assert_close(ours, tv_out)
    torch.testing.assert_close(grad_in, tv_grad)


def test_rejects_bad_arguments():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="kernel must be one of"):
        roi_align(x, torch.zeros(1, 5), 7, kernel="fast")
    with pytest.raises(ValueError, match=r"boxes \[K, 5\]"):
        roi_align(x, torch.zeros(1, 4), 7)
    with pytest.raises(TypeError, match="share a floating dtype"):
        roi_align(x, torch.zeros(1, 5, dtype=torch.float64), 7)
    with pytest.raises(ValueError, match="POOLER_CPU_KERNEL must be one of"):
        StandardROIHeads.from_config(load_config("configs/Base-RCNN-FPN.yaml", ["MODEL.POOLER_CPU_KERNEL", "fast"]),
                                     64, {"p2": 4, "p3": 8, "p4": 16, "p5": 32})


def test_pooler_kernels_agree():
    """ROIPooler over four levels pools the same with either kernel, gradients included."""
    g = torch.Generator().manual_seed(7)
    feats = [torch.randn(2, 8, 64 // s, 96 // s, generator=g) for s in (4, 8, 16, 32)]
    boxes = _rois(120, 64, 96, 1.0, g, torch.float32)
    assert len(set(ROIPooler(output_size=7, strides=(4, 8, 16, 32), canonical_box_size=20).levels(
        boxes[:, 1:]).tolist())) == 4
    results = []
    for kernel in ("torchvision", "resdet"):
        # a small canonical size spreads these boxes over all four levels
        pooler = ROIPooler(output_size=7, strides=(4, 8, 16, 32), sampling_ratio=0, aligned=True,
                           canonical_box_size=20, kernel=kernel)
        xs = [f.clone().requires_grad_() for f in feats]
        out = pooler(xs, boxes[:, 1:], boxes[:, 0].long())
        grads = torch.autograd.grad((out * torch.arange(out.numel()).view_as(out).sin()).sum(), xs)
        results.append((out, grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="kernel must be one of"):
        ROIPooler(output_size=7, strides=(4, 8), kernel="fast")


def test_training_step_with_either_kernel(monkeypatch):
    """A Mask R-CNN training step gives the same losses and gradients with either CPU kernel."""
    from resdet.benchmarks.detection import synthetic_batch

    small = ["MODEL.BACKBONE.NAME", "resnet18", "MODEL.BACKBONE.NORM", "GN", "MODEL.BACKBONE.FREEZE_AT", 0,
             "MODEL.MASK_ON", True, "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.FPN.OUT_CHANNELS", 32,
             "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16, "MODEL.ROI_MASK_HEAD.NUM_CONV", 1,
             "MODEL.RPN.POST_NMS_TOPK_TRAIN", 100, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64]
    images, targets = synthetic_batch(2, 96, 128, 3, 4, True, "cpu", seed=3)
    torch.manual_seed(0)
    tv_model = build_detection_model(load_config("configs/Base-RCNN-FPN.yaml", small + ["MODEL.POOLER_CPU_KERNEL",
                                                                                        "torchvision"])).train()
    # one build (the slow part of this test): the other model is its copy with the default kernel
    model = copy.deepcopy(tv_model)
    poolers = [(model.roi_heads.box_pooler, tv_model.roi_heads.box_pooler),
               (model.roi_heads.mask_pooler, tv_model.roi_heads.mask_pooler)]
    default = load_config("configs/Base-RCNN-FPN.yaml").MODEL.POOLER_CPU_KERNEL
    for ours, theirs in poolers:
        assert theirs.kernel == "torchvision"  # the config key reaches both poolers
        ours.kernel = default
    assert default == "resdet"
    plans = []  # resdet's kernel plans its sparse product per call: it ran where it should, and only there
    plan = roi_align_module._plan
    monkeypatch.setattr(roi_align_module, "_plan", lambda *a, **k: plans.append(1) or plan(*a, **k))
    runs, calls = [], []
    for model in (tv_model, model):
        torch.manual_seed(1)
        losses = model(images, targets)
        sum(losses.values()).backward()
        calls.append(len(plans))
        runs.append((losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    assert calls[0] == 0 < calls[1]
    (tv_losses, tv_grads), (losses, grads) = runs
    assert losses.keys() == tv_losses.keys() and grads.keys() == tv_grads.keys()
    for k in losses:
        torch.testing.assert_close(losses[k], tv_losses[k], rtol=1e-5, atol=1e-6)
    for n in grads:
        torch.testing.assert_close(grads[n], tv_grads[n], rtol=1e-3, atol=1e-5, msg=n)
