"""Bad inputs give messages that say what was expected (checked before any computation)."""
import pytest
import torch

from resdet.detection.checks import check_images, check_targets


def _ok(h=32, w=48, n=2):
    return {"boxes": torch.tensor([[1.0, 2.0, 10.0, 12.0], [5.0, 5.0, 30.0, 20.0]])[:n],
            "labels": torch.tensor([1, 3])[:n], "masks": torch.zeros(n, h, w, dtype=torch.uint8)}


IMAGES = [torch.zeros(3, 32, 48)]


def test_valid_inputs_pass():
    check_images(IMAGES)
    check_targets([_ok()], IMAGES, num_classes=3, mask_on=True)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 32, 48, dtype=torch.uint8)}
    check_targets([empty], IMAGES, num_classes=3, mask_on=True)  # no annotations is valid


def _with(**changes):
    t = _ok()
    t.update(changes)
    return t


@pytest.mark.parametrize("targets,message", [
    ([], r"one target dict per image \(1 images\); got 0"),
    (None, r"needs targets"),
    ([_with(boxes=torch.zeros(2, 5))], r"\['boxes'\] must be a float tensor of shape \[N, 4\].*got \(2, 5\)"),
    ([_with(boxes=torch.zeros(4))], r"shape \[N, 4\].*got \(4,\)"),
    ([_with(boxes=torch.tensor([[1, 2, 10, 12], [5, 5, 30, 20]]))], r"must be a float tensor; got dtype torch.int64"),
    ([_with(boxes=torch.tensor([[10.0, 2.0, 1.0, 12.0], [5.0, 5.0, 30.0, 20.0]]))], r"\['boxes'\]\[0\].*x2 > x1"),
    ([_with(labels=torch.tensor([1, 4]))], r"labels'\] must lie in 1..3 \(0 is background\); got values from 1 to 4"),
    ([_with(labels=torch.tensor([0, 1]))], r"must lie in 1..3"),
    ([_with(labels=torch.tensor([1.0, 2.0]))], r"int64 tensor of shape \[2\]"),
    ([_with(labels=torch.tensor([1]))], r"int64 tensor of shape \[2\] \(one per box\)"),
    ([_with(masks=torch.zeros(2, 48, 32, dtype=torch.uint8))], r"masks'\] must have shape \[2, 32, 48\].*got \(2, 48, 32\)"),
    ([_with(masks=torch.zeros(1, 32, 48, dtype=torch.uint8))], r"must have shape \[2, 32, 48\]"),
    ([_with(masks=torch.zeros(2, 32, 48))], r"must be uint8 or bool; got torch.float32"),
    ([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}], r"has no 'masks'"),
])
def test_bad_targets(targets, message):
    with pytest.raises(ValueError, match=message):
        check_targets(targets, IMAGES, num_classes=3, mask_on=True)


@pytest.mark.parametrize("images,message", [
    ([], r"non-empty list"),
    ([torch.zeros(32, 48)], r"images\[0\] must be a \[3, H, W\] RGB tensor"),
    ([torch.zeros(3, 32, 48, dtype=torch.uint8)], r"float tensor.*got dtype torch.uint8"),
])
def test_bad_images(images, message):
    with pytest.raises(ValueError, match=message):
        check_images(images)


def test_model_checks_before_running():
    from resdet.config import load_config
    from resdet.detection import build_detection_model

    cfg = load_config("configs/Base-RCNN-FPN.yaml", ["MODEL.BACKBONE.NAME", "resnet18", "MODEL.ROI_HEADS.NUM_CLASSES", 3])
    model = build_detection_model(cfg).train()
    with pytest.raises(ValueError, match="one target dict per image"):
        model([torch.zeros(3, 64, 64)], [])
    with pytest.raises(ValueError, match="must lie in 1..3"):
        model([torch.zeros(3, 64, 64)], [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([7])}])
