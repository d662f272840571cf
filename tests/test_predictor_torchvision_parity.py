"""End to end with torchvision's pixels: the predictor under configs/torchvision/ (INPUT.RESIZE_BACKEND
"torch", RESIZE_ROUNDING "floor"), given torchvision's weights converted by tools/convert_weights.py's
function, returns torchvision's own detections for `model([image / 255])` on real photographs that
both resize (by a factor that is not a whole number, in their own code: no pre-resized tensor).

The weights are torchvision's random init with a livelier classifier (tests/detection/
test_torchvision_parity.py's recipe), so that there are detections to compare.
"""
import numpy as np
import pytest
import torch

from resdet.config import load_config
from resdet.predictor import DetectionPredictor
from tests.detection.test_torchvision_parity import K, TOPK, _torchvision_model

pytest.importorskip("skimage", reason="the photographs come from scikit-image (pip install -e '.[bench]')")

MIN_SIZE, MAX_SIZE = 160, 200  # small for the CPU; the photos below are upscaled by 1.2-1.7


def _photos():
    from resdet.benchmarks.photos import random_crop_resized, skimage_photos

    photos = dict(skimage_photos())
    rng = np.random.default_rng(3)
    return [random_crop_resized(photos["chelsea"], rng, 110, 130),
            random_crop_resized(photos["motorcycle_left"], rng, 120, 140)]


def test_predictor_equals_torchvision_on_photos(tmp_path):
    tv, sd = _torchvision_model(mask=True)
    tv.transform.min_size, tv.transform.max_size = (MIN_SIZE,), MAX_SIZE
    from tools.convert_weights import convert_torchvision_detection

    weights = str(tmp_path / "converted.pth")
    torch.save(convert_torchvision_detection(sd), weights)
    cfg = load_config("configs/torchvision/maskrcnn_resnet50_fpn.yaml",
                      ["MODEL.ROI_HEADS.NUM_CLASSES", K, "MODEL.RPN.PRE_NMS_TOPK_TEST", TOPK,
                       "MODEL.RPN.POST_NMS_TOPK_TEST", TOPK, "TEST.DETECTIONS_PER_IMAGE", 30, "MODEL.DEVICE", "cpu",
                       "INPUT.MIN_SIZE_TEST", MIN_SIZE, "INPUT.MAX_SIZE_TEST", MAX_SIZE])
    assert cfg.INPUT.RESIZE_BACKEND == "torch" and cfg.INPUT.RESIZE_ROUNDING == "floor"
    predictor = DetectionPredictor.from_config(cfg, weights=weights, class_names=[])

    for photo in _photos():
        h, w = photo.shape[:2]
        assert min(h, w) not in (MIN_SIZE, MAX_SIZE) and min(h, w) < MIN_SIZE  # a real, fractional resize
        with torch.no_grad():
            ref = tv([torch.from_numpy(photo).permute(2, 0, 1).float() / 255])[0]
        out = predictor(photo)
        assert len(ref["boxes"]) > 5, "the test needs torchvision to detect something"
        assert out["boxes"].shape == ref["boxes"].shape and torch.equal(out["labels"], ref["labels"])
        torch.testing.assert_close(out["boxes"], ref["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(out["scores"], ref["scores"], rtol=1e-4, atol=1e-6)
        assert out["masks"].shape == ref["masks"].shape == (len(ref["boxes"]), 1, h, w)
        assert ((out["masks"] > 0.5) != (ref["masks"] > 0.5)).float().mean() < 1e-3


def test_torch_backend_gives_torchvisions_resized_pixels_and_opencv_does_not():
    """What the model is fed: with the torch backend exactly torchvision's resized float image (x 255),
    not rounded to uint8; OpenCV's uint8 resize differs (by up to a few grey levels)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from resdet.data.transforms import build_augmentation

    tv = GeneralizedRCNNTransform(MIN_SIZE, MAX_SIZE, [0.0] * 3, [1.0] * 3).eval()
    for photo in _photos():
        theirs = tv.resize(torch.from_numpy(photo).permute(2, 0, 1).float() / 255, None)[0] * 255
        resized = {}
        for backend in ("torch", "opencv"):
            aug = build_augmentation(False, min_size_test=MIN_SIZE, max_size=MAX_SIZE, resize_rounding="floor",
                                     resize_backend=backend)
            img = aug(image=photo, bboxes=np.zeros((0, 4), np.float32), ann_index=[])["image"]
            resized[backend] = torch.from_numpy(np.ascontiguousarray(img)).float().permute(2, 0, 1)
        assert resized["torch"].dtype == torch.float32 and resized["torch"].shape == theirs.shape
        torch.testing.assert_close(resized["torch"], theirs, rtol=1e-6, atol=1e-4)
        assert not torch.equal(resized["torch"].round(), resized["torch"])  # fractions kept, not uint8
        assert resized["opencv"].shape == theirs.shape
        assert (resized["opencv"] - theirs).abs().max() > 0.5  # what the torch backend exists for
