"""Training mode: the five losses, a step that lowers them, gradients only where the backbone is not
frozen, images without annotations, and reproducible sampling."""
import copy

import pytest
import torch

from resdet.config import load_config
from resdet.detection import build_detection_model

LOSS_NAMES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}


def _target(h, w, boxes, labels):
    b = torch.tensor(boxes, dtype=torch.float32)
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes):  # an ellipse inside each box
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        masks[i] = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).to(torch.uint8)
    return {"boxes": b, "labels": torch.tensor(labels, dtype=torch.int64), "masks": masks}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # built from the config alone (backbone from the registry); ResNet-18 keeps the CPU test short
    cfg = load_config("configs/Base-RCNN-FPN.yaml", [
        "MODEL.BACKBONE.NAME", "resnet18", "MODEL.MASK_ON", True, "MODEL.ROI_HEADS.NUM_CLASSES", 3,
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 500, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 200,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64])
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2 and cfg.MODEL.BACKBONE.NORM == "FrozenBN"
    return build_detection_model(cfg).train()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 128, 160, generator=g) * 255, torch.rand(3, 160, 128, generator=g) * 255]
    targets = [_target(128, 160, [[10, 20, 70, 90], [80, 30, 150, 120]], [1, 3]), _target(160, 128, [[5, 5, 60, 100]], [2])]
    return images, targets


def test_losses_step_and_gradients(model, batch):
    model = copy.deepcopy(model)
    images, targets = batch
    torch.manual_seed(1)
    losses = model(images, targets)
    assert set(losses) == LOSS_NAMES
    assert all(v.dim() == 0 and torch.isfinite(v) and v > 0 for v in losses.values()), losses
    total = sum(losses.values())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4)
    opt.zero_grad()
    total.backward()
    bb = model.backbone
    # FREEZE_AT 2: stem and res2 frozen (no grad), res3..res5 train
    assert all(p.grad is None for n, p in bb.named_parameters() if n.startswith(("conv1", "bn1", "layer1")))
    assert not any(p.requires_grad for n, p in bb.named_parameters() if n.startswith(("conv1", "layer1")))
    for stage in ("layer2", "layer3", "layer4"):
        grads = [p.grad for n, p in bb.named_parameters() if n.startswith(stage)]
        assert grads and all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, stage
    for name in ("fpn", "rpn", "roi_heads"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, name).parameters()), name
    opt.step()
    torch.manual_seed(1)  # the same anchors and RoIs are sampled again
    with torch.no_grad():
        after = sum(model(images, targets).values())
    assert after < total.detach(), (float(total), float(after))


def test_sampling_is_reproducible_under_a_seed(model, batch):
    images, targets = batch
    with torch.no_grad():
        torch.manual_seed(7)
        a = model(images, targets)
        torch.manual_seed(7)
        b = model(images, targets)
        c = model(images, targets)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in ("loss_objectness", "loss_classifier"))


def test_images_without_annotations_train(model, batch):
    images, targets = batch
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
              "masks": torch.zeros(0, *im.shape[-2:], dtype=torch.uint8)} for im in images]
    with torch.no_grad():
        losses = model(images, empty)  # a whole batch of background
        assert set(losses) == LOSS_NAMES
        assert float(losses["loss_rpn_box_reg"]) == 0 and float(losses["loss_box_reg"]) == 0
        assert float(losses["loss_mask"]) == 0 and float(losses["loss_classifier"]) > 0
        mixed = model(images, [empty[0], targets[1]])  # one image with objects, one without
        assert all(torch.isfinite(v) for v in mixed.values()) and float(mixed["loss_box_reg"]) > 0


def test_eval_output_format(model, batch):
    images, _ = batch
    m = copy.deepcopy(model).eval()
    m.roi_heads.score_thresh = 0.0  # random weights: keep every candidate so there is output to check
    m.rpn.pre_nms_topk[False], m.rpn.post_nms_topk[False] = 300, 100  # fewer RoIs: a shorter CPU test
    m.roi_heads.detections_per_image = 20
    with torch.no_grad():
        out = m(images)
        rescaled = m(images, original_sizes=[(256, 320), (80, 64)])
    assert len(out) == 2
    for o, im in zip(out, images):
        n = len(o["boxes"])
        assert 0 < n <= 20
        assert o["boxes"].shape == (n, 4) and o["scores"].shape == (n,) and o["labels"].dtype == torch.int64
        assert o["masks"].shape == (n, 1) + tuple(im.shape[-2:])
        assert (o["labels"] >= 1).all() and (o["labels"] <= 3).all()
        assert (o["scores"][:-1] >= o["scores"][1:]).all()
    # original_sizes: boxes scaled to the original frame, masks pasted at the original size
    torch.testing.assert_close(rescaled[0]["boxes"], out[0]["boxes"] * 2)
    torch.testing.assert_close(rescaled[1]["boxes"], out[1]["boxes"] / 2)
    assert rescaled[0]["masks"].shape[-2:] == (256, 320) and rescaled[1]["masks"].shape[-2:] == (80, 64)

