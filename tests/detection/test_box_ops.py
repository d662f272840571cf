"""The batched building blocks against torchvision's per-image references."""
import pytest
import torch
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign, box_iou

from resdet.detection.anchors import AnchorGenerator
from resdet.detection.box_ops import BoxCoder, aligned_iou, match_boxes, sample_balanced
from resdet.detection.poolers import ROIPooler
from resdet.detection.structures import top_k_per_image


def _boxes(n, size=100.0, g=None):
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 1
    return torch.cat([xy, xy + wh], 1)


def test_box_coder_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    refs, targets = _boxes(50, g=g), _boxes(50, g=g)
    ours, tv = BoxCoder((10.0, 10.0, 5.0, 5.0)), tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(ours.encode(targets, refs), tv.encode_single(targets, refs), rtol=0, atol=0)
    deltas = torch.randn(50, 12, generator=g)
    # class-specific deltas: each class's box equals torchvision's decode of that class's deltas
    for c in range(3):
        torch.testing.assert_close(ours.decode(deltas, refs)[:, c], tv.decode_single(deltas[:, 4 * c: 4 * c + 4], refs),
                                   rtol=0, atol=0)
    # decode of a single class equals torchvision's, bit for bit; and decode inverts encode
    torch.testing.assert_close(ours.decode(deltas[:, :4], refs)[:, 0], tv.decode_single(deltas[:, :4], refs), rtol=0, atol=0)
    torch.testing.assert_close(ours.decode(ours.encode(targets, refs), refs)[:, 0], targets, rtol=1e-5, atol=1e-4)


def test_aligned_iou_is_box_iou_on_the_diagonal_block():
    g = torch.Generator().manual_seed(1)
    a, b = _boxes(7, g=g), _boxes(5, g=g)
    torch.testing.assert_close(aligned_iou(a[None, :], b[:, None]), box_iou(b, a))


@pytest.mark.parametrize("low_quality", [False, True])
def test_matcher_matches_torchvision_per_image(low_quality):
    g = torch.Generator().manual_seed(2)
    preds = _boxes(300, g=g)
    gts = [_boxes(4, g=g), _boxes(1, g=g), torch.zeros(0, 4)]
    padded = torch.zeros(3, 4, 4)
    valid = torch.zeros(3, 4, dtype=torch.bool)
    for i, gt in enumerate(gts):
        padded[i, : len(gt)] = gt
        valid[i, : len(gt)] = True
    matched, labels = match_boxes(aligned_iou(preds[None, None], padded[:, :, None]), valid, 0.7, 0.3, low_quality)
    tv = tv_utils.Matcher(0.7, 0.3, allow_low_quality_matches=low_quality)
    for i, gt in enumerate(gts):
        if len(gt) == 0:
            assert (labels[i] == 0).all()
            continue
        ref = tv(box_iou(gt, preds))
        assert torch.equal(labels[i], torch.where(ref >= 0, 1, torch.where(ref == -1, 0, -1)))
        assert torch.equal(matched[i][ref >= 0], ref[ref >= 0])


def test_sampler_counts_and_seed():
    labels = torch.full((3, 1000), -1)
    labels[0, :10] = 1
    labels[0, 10:600] = 0
    labels[1, :500] = 1
    labels[1, 500:520] = 0
    labels[2, :5] = 0  # no foreground
    torch.manual_seed(0)
    pos, neg = sample_balanced(labels, 256, 0.5)
    assert pos.sum(1).tolist() == [10, 128, 0]
    assert neg.sum(1).tolist() == [246, 20, 5]
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    torch.manual_seed(0)
    pos2, neg2 = sample_balanced(labels, 256, 0.5)
    assert torch.equal(pos, pos2) and torch.equal(neg, neg2)
    pos3, _ = sample_balanced(labels, 256, 0.5)
    assert not torch.equal(pos, pos3)  # a different draw without re-seeding


def test_anchors_match_torchvision():
    sizes, ratios = ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5
    ours = AnchorGenerator(sizes=sizes, aspect_ratios=ratios)
    tv = TVAnchorGenerator(sizes, ratios)
    padded, grids = (288, 320), [(72, 80), (36, 40), (18, 20), (9, 10), (5, 5)]  # odd P5: P6 stride 57
    feats = [torch.zeros(1, 1, *g) for g in grids]
    ref = tv(ImageList(torch.zeros(1, 3, *padded), [padded]), feats)[0]
    torch.testing.assert_close(torch.cat(ours(padded, grids)), ref, rtol=0, atol=0)


@pytest.mark.parametrize("n_boxes", [0, 40])
def test_pooler_matches_multiscale_roi_align(n_boxes):
    g = torch.Generator().manual_seed(3)
    feats = {f"p{i}": torch.randn(2, 8, 128 // 2 ** i, 96 // 2 ** i, generator=g) for i in range(2, 6)}
    boxes = [_boxes(n_boxes, 80.0, g=g), _boxes(n_boxes // 2, 80.0, g=g)]
    tv = MultiScaleRoIAlign(list(feats), 7, 2)
    ref = tv(feats, boxes, [(128, 96), (128, 96)])
    ours = ROIPooler(output_size=7, strides=[4, 8, 16, 32], sampling_ratio=2, aligned=False)
    idx = torch.cat([torch.full((len(b),), i) for i, b in enumerate(boxes)])
    torch.testing.assert_close(ours(list(feats.values()), torch.cat(boxes), idx), ref)


def test_top_k_per_image_keeps_score_order():
    boxes = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 4)
    img = torch.tensor([1, 0, 1, 1, 0, 1, 2, 1, 0, 0])  # rows already sorted by score
    out, valid = top_k_per_image(boxes, img, 4, 3)
    assert valid.sum(1).tolist() == [3, 3, 1, 0]
    assert out[0, :, 0].tolist() == [1, 4, 8]
    assert out[1, :, 0].tolist() == [0, 2, 3]
    assert out[2, 0, 0].item() == 6


def test_pooler_keeps_float32_coordinates_for_half_features():
    # AMP: features arrive in bf16; boxes must not be rounded to bf16 (8 bits of mantissa: +-2 px at 500)
    g = torch.Generator().manual_seed(6)
    feats = [torch.randn(1, 4, 160 // 2 ** i, 160 // 2 ** i, generator=g).to(torch.bfloat16) for i in range(2, 6)]
    boxes = torch.tensor([[501.3, 400.7, 601.9, 520.2]]) / 4  # coordinates bf16 cannot hold
    pooler = ROIPooler(output_size=7, strides=[4, 8, 16, 32], sampling_ratio=2, aligned=True)
    out = pooler(feats, boxes, torch.zeros(1, dtype=torch.int64))
    ref = pooler([f.float() for f in feats], boxes, torch.zeros(1, dtype=torch.int64))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
