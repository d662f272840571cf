"""Test-time augmentation: views mapped back to the original frame exactly, merged by NMS or box voting."""
import pytest
import torch
from torchvision.ops import batched_nms

from resdet.config import load_config
from resdet.detection.rcnn import build_detection_model
from resdet.detection.tta import TTADetector, with_test_time_augmentation

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = "configs/quickstart_shapes.yaml"


@pytest.fixture(scope="module")
def model():
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                               "TEST.DETECTIONS_PER_IMAGE", "20"])
    torch.manual_seed(0)
    return build_detection_model(cfg).eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    # resized test images (shorter side 96) and the original sizes they came from
    return [torch.rand(3, 96, 128, generator=g) * 255, torch.rand(3, 112, 96, generator=g) * 255], [(120, 160), (140, 120)]


def test_one_view_at_the_test_size_is_the_plain_model(model, images):
    imgs, orig = images
    with torch.no_grad():
        plain = model(imgs, original_sizes=orig)
    tta = TTADetector(model, min_sizes=[96], max_size=192, flip=False).eval()(imgs, original_sizes=orig)
    for a, b in zip(plain, tta):
        assert len(a["boxes"]) > 0
        for k in ("boxes", "scores", "labels"):
            assert torch.equal(a[k], b[k]), k
        # the mask head pools the boxes mapped to the original frame and back: a float rounding apart
        assert torch.allclose(a["masks"], b["masks"], atol=1e-6)


def test_a_mirrored_view_is_the_model_on_the_mirrored_image_mapped_back(model, images):
    imgs, orig = images
    tta = TTADetector(model, min_sizes=[96], max_size=192, flip=True).eval()
    tta.views = [(96, True)]  # the mirrored view alone
    got = tta(imgs, original_sizes=orig, paste_masks=False)
    with torch.no_grad():
        mirrored = model([im.flip(-1) for im in imgs], original_sizes=orig, paste_masks=False)
    for (h, w), a, b in zip(orig, mirrored, got):
        back = torch.stack((w - a["boxes"][:, 2], a["boxes"][:, 1], w - a["boxes"][:, 0], a["boxes"][:, 3]), 1)
        assert torch.allclose(back, b["boxes"], atol=1e-4)
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["scores"], b["scores"])
        # the mask head re-run on the boxes mirrored into the view, its probabilities flipped back
        assert torch.allclose(a["mask_probs"].flip(-1), b["mask_probs"], atol=1e-5)


def test_identical_views_merge_to_one(model, images):
    imgs, orig = images
    one = TTADetector(model, min_sizes=[96], max_size=192, flip=False).eval()
    two = TTADetector(model, min_sizes=[96, 96], max_size=192, flip=False).eval()
    for a, b in zip(one(imgs, original_sizes=orig), two(imgs, original_sizes=orig)):
        # NMS drops each exact duplicate; two equal mask probabilities average to themselves
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
        assert torch.allclose(a["masks"], b["masks"], atol=1e-6)


def test_several_scales_and_mirrors_run_and_stay_in_the_frame(model, images):
    imgs, orig = images
    tta = TTADetector(model, min_sizes=[80, 96, 112], max_size=192, flip=True).eval()
    assert len(tta.views) == 6
    for (h, w), out in zip(orig, tta(imgs, original_sizes=orig)):
        n = len(out["boxes"])
        assert 0 < n <= 20 and out["masks"].shape == (n, 1, h, w)
        assert float(out["boxes"][:, 2].max()) <= w and float(out["boxes"][:, 3].max()) <= h
        assert bool((out["scores"][1:] <= out["scores"][:-1]).all())


def _merge_inputs():
    # one image, class 1: two boxes overlapping by IoU 0.9 and one apart; class 2: a copy of the first box
    boxes = torch.tensor([[[10.0, 10, 50, 50], [10, 10, 50, 54.4], [80, 80, 100, 100], [10, 10, 50, 50]]])
    scores = torch.tensor([[0.9, 0.6, 0.5, 0.4]])
    labels = torch.tensor([[1, 1, 1, 2]])
    return boxes, scores, labels, torch.ones(1, 4, dtype=torch.bool)


def test_nms_merge_keeps_what_torchvision_batched_nms_keeps(model):
    boxes, scores, labels, ok = _merge_inputs()
    tta = TTADetector(model, min_sizes=[96], max_size=192, merge="nms").eval()
    got_boxes, got_scores, got_labels, valid = tta._merge(boxes, scores, labels, ok)
    keep = batched_nms(boxes[0], scores[0], labels[0], model.roi_heads.nms_thresh)
    n = int(valid.sum())
    assert torch.equal(got_boxes[0, :n], boxes[0, keep]) and torch.equal(got_scores[0, :n], scores[0, keep])
    assert torch.equal(got_labels[0, :n], labels[0, keep])


def test_box_voting_averages_the_overlapping_boxes_of_a_class(model):
    boxes, scores, labels, ok = _merge_inputs()
    tta = TTADetector(model, min_sizes=[96], max_size=192, merge="vote", vote_iou=0.8).eval()
    got_boxes, got_scores, _, valid = tta._merge(boxes, scores, labels, ok)
    assert int(valid.sum()) == 3 and torch.allclose(got_scores[0, :3], torch.tensor([0.9, 0.5, 0.4]))
    expected = (0.9 * boxes[0, 0] + 0.6 * boxes[0, 1]) / 1.5  # IoU 0.92 >= 0.8; the class-2 copy does not vote
    assert torch.allclose(got_boxes[0, 0], expected)
    assert torch.equal(got_boxes[0, 1], boxes[0, 2]) and torch.equal(got_boxes[0, 2], boxes[0, 3])


def test_config_defaults_follow_training_and_bad_values_are_named():
    cfg = load_config(CONFIG, ["TEST.AUG.ENABLED", "True"])
    wrapped = with_test_time_augmentation(cfg, build_detection_model(cfg))
    assert isinstance(wrapped, TTADetector)
    assert wrapped.views == [(s, f) for s in cfg.INPUT.MIN_SIZE_TRAIN for f in (False, True)]
    assert wrapped.max_size == cfg.INPUT.MAX_SIZE_TRAIN
    assert with_test_time_augmentation(load_config(CONFIG), "plain") == "plain"
    with pytest.raises(ValueError, match="TEST.AUG.MERGE"):
        TTADetector(wrapped.model, min_sizes=[96], max_size=192, merge="wbf")
