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


@pytest.mark.parametrize("limit", [0, 50])
def test_grouped_nms_equals_per_group_nms(limit):
    from torchvision.ops import nms

    from resdet.detection.box_ops import grouped_nms

    g = torch.Generator().manual_seed(4)
    boxes = _boxes(600, 60.0, g=g)
    scores = torch.rand(600, generator=g)
    groups = torch.randint(0, 37, (600,), generator=g)
    kept = grouped_nms(boxes, scores, groups, 0.5, max_boxes_per_call=limit)  # 50: many packed calls
    ref = torch.cat([torch.nonzero(groups == c).squeeze(1)[nms(boxes[groups == c], scores[groups == c], 0.5)]
                     for c in range(37)])
    ref = ref[torch.argsort(scores[ref], descending=True)]
    assert torch.equal(kept, ref)
    assert grouped_nms(boxes[:0], scores[:0], groups[:0], 0.5).numel() == 0


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


def _coco_scale_groups(seed=0, images=8, classes=80, clusters=4, per_cluster=5):
    """Boxes in 1333 x 800 images, (image, class) groups of 4 clusters of 5 overlapping boxes each:
    640 groups, 12,800 boxes, many IoUs near the threshold."""
    g = torch.Generator().manual_seed(seed)
    n_groups = images * classes
    centre = torch.rand(n_groups, clusters, 1, 2, generator=g) * torch.tensor([1333.0, 800.0])
    size = torch.rand(n_groups, clusters, 1, 2, generator=g) * 250 + 20
    jitter = (torch.rand(n_groups, clusters, per_cluster, 4, generator=g) - 0.5) * 0.5 * size.repeat(1, 1, 1, 2)
    boxes = torch.cat([centre - size / 2, centre + size / 2], -1) + jitter
    boxes = torch.minimum(boxes.clamp(min=0), torch.tensor([1333.0, 800.0, 1333.0, 800.0])).reshape(-1, 4)
    groups = torch.arange(n_groups).repeat_interleave(clusters * per_cluster)
    perm = torch.randperm(len(groups), generator=g)
    scores = (torch.randperm(len(groups), generator=g) + 1).float() / len(groups)  # distinct: one order
    return boxes[perm], scores, groups[perm]


def test_grouped_nms_is_exact_at_coco_scale_on_every_branch():
    from torchvision.ops import nms
    from torchvision.ops.boxes import _batched_nms_coordinate_trick

    from resdet.detection.box_ops import force_packed_nms, grouped_nms

    boxes, scores, groups = _coco_scale_groups()
    ref = torch.cat([torch.nonzero(groups == k).squeeze(1)[nms(boxes[groups == k], scores[groups == k], 0.5)]
                     for k in range(int(groups.max()) + 1)])
    ref = ref[torch.argsort(scores[ref], descending=True)]
    # the data is sensitive: float32 offsets (torchvision's batched_nms trick, and what the packed
    # branch did before) move coordinates by up to 1/32 px here and keep other boxes
    assert not torch.equal(_batched_nms_coordinate_trick(boxes, scores, groups, 0.5), ref)
    for kwargs in (dict(packed=True),                            # one call for all 640 groups
                   dict(packed=True, max_boxes_per_call=3000),   # several packed calls
                   dict(packed=False)):                          # one call per group
        assert torch.equal(grouped_nms(boxes, scores, groups, 0.5, **kwargs), ref), kwargs
    with force_packed_nms(True):  # what the counts and the GPU path use, forced on the CPU
        by_group = torch.argsort(groups, stable=True)  # already sorted, sizes given: planned on the host
        sizes = torch.bincount(groups).tolist()
        kept = grouped_nms(boxes[by_group], scores[by_group], groups[by_group], 0.5, max_boxes_per_call=5000,
                           group_sizes=sizes)
        assert torch.equal(by_group[kept], ref)
