"""Our Faster / Mask R-CNN under the torchvision preset, given torchvision's (random) weights through
tools/convert_weights.py's function, must return torchvision's detections on the same images.

Sizes: torchvision resizes inside its model; here min_size/max_size are set so that its scale factor
is exactly 1 for both images (128x160 and 160x128), so both models see identical pixels. Images are
0-255 for ours and 0-1 for torchvision's (ImageNet mean/std in the two ranges).
Weights: torchvision's random init gives no box above 0.05 for 91 classes, so the models have 4
classes and a livelier classifier; BN statistics are randomised so FrozenBN is really exercised.
"""
import pytest
import torch
import torchvision

from resdet.config import load_config
from resdet.detection import build_detection_model
from tools.convert_weights import convert_torchvision_detection
from tests.detection.backbones_for_tests import make_backbone

K = 4
TOPK = 200  # RPN proposals (both models), fewer than the preset's 1000 to keep the CPU test short


def _torchvision_model(mask: bool):
    fn = torchvision.models.detection.maskrcnn_resnet50_fpn if mask else torchvision.models.detection.fasterrcnn_resnet50_fpn
    torch.manual_seed(0)
    tv = fn(weights=None, weights_backbone=None, num_classes=K + 1, min_size=128, max_size=160,
            rpn_pre_nms_top_n_test=TOPK, rpn_post_nms_top_n_test=TOPK, box_detections_per_img=30).eval()
    sd = tv.state_dict()
    g = torch.Generator().manual_seed(1)
    for k, v in sd.items():
        if k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=g) * 1.5 + 0.5)
        elif k.endswith("running_mean"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        elif k.endswith("bn3.weight"):
            v.mul_(0.3)  # keep the random ResNet's activations in a sane range
    sd["roi_heads.box_predictor.cls_score.weight"].copy_(torch.randn(K + 1, 1024, generator=g) * 0.05)
    tv.load_state_dict(sd)
    return tv, sd


def _our_model(mask: bool, sd):
    name = "maskrcnn" if mask else "fasterrcnn"
    cfg = load_config(f"configs/torchvision/{name}_resnet50_fpn.yaml",
                      ["MODEL.ROI_HEADS.NUM_CLASSES", K, "MODEL.RPN.PRE_NMS_TOPK_TEST", TOPK,
                       "MODEL.RPN.POST_NMS_TOPK_TEST", TOPK, "TEST.DETECTIONS_PER_IMAGE", 30])
    model = build_detection_model(cfg, backbone=make_backbone()).eval()
    model.load_state_dict(convert_torchvision_detection(sd), strict=True)
    return model


def _images():
    g = torch.Generator().manual_seed(2)
    # smooth-ish content (blurred noise) so that features vary over the image
    ims = [torch.rand(3, 32, 40, generator=g), torch.rand(3, 40, 32, generator=g)]
    return [torch.nn.functional.interpolate(im[None], scale_factor=4, mode="bilinear")[0] * 255 for im in ims]


@pytest.mark.parametrize("mask", [False, True], ids=["faster", "mask"])
def test_same_detections_as_torchvision(mask):
    tv, sd = _torchvision_model(mask)
    ours = _our_model(mask, sd)
    images = _images()
    with torch.no_grad():
        ref = tv([im / 255 for im in images])
        out = ours(images)
    assert len(out) == len(ref) == 2
    for r, o in zip(ref, out):
        assert len(r["boxes"]) > 5, "the test needs torchvision to detect something"
        assert torch.equal(o["labels"], r["labels"])
        torch.testing.assert_close(o["boxes"], r["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(o["scores"], r["scores"], rtol=1e-4, atol=1e-6)
        if mask:
            assert o["masks"].shape == r["masks"].shape
            # Mask probabilities agree everywhere to float rounding when boxes agree; a box corner
            # within rounding of a whole pixel could move a pasted edge by one pixel, so allow
            # differences on at most 0.1% of the pixels (at edges) and none in the binarised interior.
            diff = (o["masks"] - r["masks"]).abs()
            assert (diff > 1e-4).float().mean() < 1e-3
            assert ((o["masks"] > 0.5) != (r["masks"] > 0.5)).float().mean() < 1e-3
        else:
            assert "masks" not in o
