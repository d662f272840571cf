"""The same results on the device as on the CPU: NMS, the predictor, and checkpoints that travel."""
import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms, nms

from resdet.detection.nms import grouped_nms, nms_threshold
from resdet.engine.checkpoint import Checkpointer, load_checkpoint
from resdet.predictor import DetectionPredictor

from .helpers import SHAPES, assert_same_detections, detector

pytestmark = pytest.mark.gpu


def _coco_scale_boxes(images=8, classes=80, per_group=40, seed=0):
    """Clustered boxes in 800x1333 images (so that NMS suppresses), one group per (image, class)."""
    g = torch.Generator().manual_seed(seed)
    n = images * classes * per_group
    centres = torch.rand(images * classes, 1, 2, generator=g) * torch.tensor([1333.0, 800.0])
    xy = (centres + torch.randn(images * classes, per_group, 2, generator=g) * 20).reshape(n, 2)
    wh = torch.rand(n, 2, generator=g) * 150 + 10
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1).clamp(min=0)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(max=1333)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(max=800)
    scores = (torch.randperm(n, generator=g).float() + 1) / n  # distinct: the order after NMS is defined
    groups = torch.arange(images * classes).repeat_interleave(per_group)
    return boxes, scores, groups


def test_nms_on_the_device_equals_the_cpu(device):
    boxes, scores, groups = _coco_scale_boxes()
    on = [t.to(device) for t in (boxes, scores, groups)]
    # torchvision's kernels
    assert torch.equal(nms(on[0], on[1], 0.5).cpu(), nms(boxes, scores, 0.5))
    exact = batched_nms(boxes, scores, groups, 0.5)  # per-group NMS on the CPU: the reference
    # ours, on the device's own branch (batched on CUDA), 640 groups at once, COCO coordinates
    kept = grouped_nms(*on, 0.5).cpu()
    assert torch.equal(kept.sort().values, exact.sort().values)
    assert torch.equal(kept, exact)  # both sorted by decreasing score


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.3])
def test_near_threshold_pairs_keep_the_same_boxes_on_the_device(device, threshold):
    """Adversarial pairs (IoU within 1e-6 of the threshold, coordinates up to 1e5, 600 groups) and the 0.3
    case float32 cannot hold: our batched branch on the device, and torchvision's own kernel there at the
    float32 threshold, keep exactly the boxes torchvision's CPU kernel keeps (tests/detection/test_nms.py
    builds the pairs)."""
    from tests.detection.test_nms import _adversarial_pairs, _reference

    boxes, scores, groups, _ = _adversarial_pairs(threshold)
    extra = torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 3.0, 1.0]])  # IoU exactly float32(0.3)
    boxes = torch.cat([boxes, extra])
    scores = torch.cat([scores, torch.tensor([2.0, 1.5])])
    groups = torch.cat([groups, torch.full((2,), int(groups.max()) + 1)])
    ref = _reference(boxes, scores, groups, threshold)
    on = [t.to(device) for t in (boxes, scores, groups)]
    assert torch.equal(grouped_nms(*on, threshold, packed=True).cpu(), ref)   # ours, the GPU's default
    assert torch.equal(grouped_nms(*on, threshold, packed=False).cpu(), ref)  # a torchvision call per group
    # torchvision's kernel on the device, group by group, at the threshold its CPU kernel is given here
    for k in (int(groups.max()), 0, 1):
        members = torch.nonzero(groups == k).squeeze(1)
        got = nms(on[0][members.to(device)], on[1][members.to(device)], nms_threshold(threshold)).cpu()
        assert torch.equal(got, nms(boxes[members], scores[members], nms_threshold(threshold)))


def test_predictor_on_the_device_equals_the_cpu(device):
    from resdet.benchmarks.photos import photo_batch

    model, cfg = detector(SHAPES, "INPUT.MIN_SIZE_TEST", 192, "INPUT.MAX_SIZE_TEST", 320)
    photo = photo_batch(1, 240, 360, seed=3)[0].permute(1, 2, 0).numpy()
    outputs = []
    for dev in (torch.device("cpu"), device):
        net, _ = detector(SHAPES, "INPUT.MIN_SIZE_TEST", 192, "INPUT.MAX_SIZE_TEST", 320)
        net.load_state_dict(model.state_dict())
        predictor = DetectionPredictor(net, ["a", "b", "c"], cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST,
                                       device=dev, score_threshold=0.0)
        outputs.append({k: v for k, v in predictor(np.ascontiguousarray(photo)).items() if k != "class_names"})
    # float32 on both (no TF32): boxes within 0.01 px, scores within 1e-5, mask probabilities within 1e-4
    assert_same_detections(outputs[0], outputs[1], box_atol=1e-2, score_atol=1e-5, mask_atol=1e-4)
    assert all(v.device.type == "cpu" for v in outputs[1].values())  # instances come back on the CPU


def test_checkpoint_saved_on_the_device_loads_on_the_cpu(device, tmp_path):
    model, _ = detector(SHAPES)
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type)
    images = [torch.rand(3, 96, 128, device=device) * 255]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]], device=device),
                "labels": torch.tensor([1], device=device),
                "masks": torch.zeros(1, 96, 128, dtype=torch.uint8, device=device)}]
    targets[0]["masks"][0, 10:70, 10:60] = 1
    model.train()
    scaler.scale(sum(model(images, targets).values())).backward()
    scaler.step(opt)  # momentum buffers now live on the device
    scaler.update()
    Checkpointer(str(tmp_path), model, opt, scaler=scaler).save("model_gpu", iteration=1)

    data = load_checkpoint(str(tmp_path / "model_gpu.pth"))  # what a CPU-only machine does (map_location cpu)

    def devices(obj):
        if isinstance(obj, torch.Tensor):
            yield obj.device.type
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from devices(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                yield from devices(v)

    assert set(devices(data)) == {"cpu"}
    cpu_model, _ = detector(SHAPES, seed=1)
    cpu_opt = torch.optim.SGD(cpu_model.parameters(), lr=0.01, momentum=0.9)
    resumed = Checkpointer(str(tmp_path / "elsewhere"), cpu_model, cpu_opt).load(str(tmp_path / "model_gpu.pth"))
    assert resumed["iteration"] == 1
    for name, value in model.state_dict().items():
        torch.testing.assert_close(cpu_model.state_dict()[name], value.cpu(), rtol=0, atol=0, msg=name)
    momentum = [s["momentum_buffer"] for s in cpu_opt.state.values()]
    assert momentum and all(m.device.type == "cpu" for m in momentum)
