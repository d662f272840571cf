"""Grouped NMS (resdet/detection/nms.py): both branches equal torchvision's per-group NMS with its CUDA
kernel's float32 threshold, on random, COCO-scale and adversarial near-threshold inputs; the batched
branch makes no torchvision call and one declared host read per call."""
import numpy as np
import pytest
import torch
from torchvision.ops import nms

from resdet.detection.nms import force_packed_nms, grouped_nms, nms_threshold
from resdet.utils.counting import count_ops, sync_log

pytestmark = pytest.mark.usefixtures("one_thread")

BRANCHES = {"per_group": False, "batched": True}


def _boxes(n, size=100.0, g=None):
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 1
    return torch.cat([xy, xy + wh], 1)


def _reference(boxes, scores, groups, threshold):
    """torchvision's nms on each group alone, at the threshold its CUDA kernel applies (float32), kept
    indices sorted by decreasing score, ties by index."""
    kept = []
    for k in torch.unique(groups).tolist():
        members = torch.nonzero(groups == k).squeeze(1)
        kept.append(members[nms(boxes[members], scores[members], nms_threshold(threshold))])
    kept = torch.cat(kept).sort().values
    return kept[torch.argsort(scores[kept], descending=True, stable=True)]


def _run(branch, boxes, scores, groups, threshold, **kwargs):
    with count_ops() as c:
        kept = grouped_nms(boxes, scores, groups, threshold, packed=BRANCHES[branch], **kwargs)
    groups_present = len(torch.unique(groups))
    # the branch asked for is the branch that ran: torchvision once per group, or not at all
    assert c.nms_calls == (groups_present if branch == "per_group" else 0), (branch, c.nms_calls)
    return kept


@pytest.mark.parametrize("branch", list(BRANCHES))
@pytest.mark.parametrize("limit", [0, 50])
def test_grouped_nms_equals_per_group_nms(branch, limit):
    g = torch.Generator().manual_seed(4)
    boxes = _boxes(600, 60.0, g=g)
    scores = torch.rand(600, generator=g)
    groups = torch.randint(0, 37, (600,), generator=g)
    # limit 50: the batched branch cuts its matrices into many small pieces (50^2 elements each at most)
    kept = _run(branch, boxes, scores, groups, 0.5, max_boxes_per_call=limit)
    assert torch.equal(kept, _reference(boxes, scores, groups, 0.5))
    assert grouped_nms(boxes[:0], scores[:0], groups[:0], 0.5, packed=BRANCHES[branch]).numel() == 0


def _adversarial_pairs(threshold, pairs=300, seed=0):
    """Pairs of boxes sharing three sides, at coordinates up to 1e5, whose IoU is within a few float32
    steps of the threshold (within 1e-6 of it); one pair per group, and every pair repeated in a second
    group (the same coordinates, other scores). Returns boxes, scores, groups and how many pairs
    float64 arithmetic decides otherwise than float32 (the old packed branch's error)."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    boxes, flips, k = [], 0, 0
    while len(boxes) < 2 * pairs:
        k += 1
        x, y = rng.uniform(0, 1e5, 2).astype(f32)
        w, h = rng.uniform(10, 5000, 2).astype(f32)
        right = f32(x + f32(threshold) * w)
        for _ in range(abs(k % 7 - 3)):  # a few float32 steps either side
            right = np.nextafter(right, f32(np.inf) if k % 7 > 3 else f32(-np.inf))
        a32, b32 = np.array([x, y, x + w, y + h], f32), np.array([x, y, right, y + h], f32)
        # the kernel's float32 operations (b lies inside a: the intersection is b)
        inter = (b32[2] - b32[0]) * (b32[3] - b32[1])
        iou32 = inter / (((a32[2] - a32[0]) * (a32[3] - a32[1]) + inter) - inter)
        a64, b64 = a32.astype(np.float64), b32.astype(np.float64)
        iou64 = (b64[2] - b64[0]) * (b64[3] - b64[1]) / ((a64[2] - a64[0]) * (a64[3] - a64[1]))
        if abs(iou64 - threshold) >= 1e-6:
            continue
        flips += bool(iou32 > f32(threshold)) != bool(iou64 > threshold)
        boxes += [a32, b32]
    boxes = torch.tensor(np.array(boxes, f32))
    boxes = torch.cat([boxes, boxes])
    n = len(boxes) // 2
    # distinct scores (one order after NMS), in random order: either box of a pair may rank first
    scores = (torch.randperm(2 * n, generator=torch.Generator().manual_seed(seed)) + 1).float() / (2 * n)
    groups = torch.arange(2 * pairs).repeat_interleave(2)
    perm = torch.randperm(2 * n, generator=torch.Generator().manual_seed(seed))
    return boxes[perm], scores[perm], groups[perm], flips


@pytest.mark.parametrize("threshold", [0.5, 0.7])
@pytest.mark.parametrize("branch", list(BRANCHES))
def test_near_threshold_pairs_decided_as_torchvision_kernels_decide(branch, threshold):
    boxes, scores, groups, flips = _adversarial_pairs(threshold)
    assert flips >= 5  # adversarial: float64 arithmetic (the old packed branch) decides these otherwise
    ref = _reference(boxes, scores, groups, threshold)
    assert 0 < len(ref) < len(boxes)  # some pairs suppressed, some kept
    assert torch.equal(_run(branch, boxes, scores, groups, threshold), ref)
    # sorted by group, sizes given (how the RPN and the box head call it): the same boxes
    by_group = torch.argsort(groups, stable=True)
    kept = grouped_nms(boxes[by_group], scores[by_group], groups[by_group], threshold, packed=BRANCHES[branch],
                       group_sizes=torch.bincount(groups).tolist())
    assert torch.equal(by_group[kept], ref)


@pytest.mark.parametrize("branch", list(BRANCHES))
def test_threshold_float32_cannot_hold_is_applied_as_the_cuda_kernel_applies_it(branch):
    # a 10 px box and a 3 px box sharing three sides: IoU 0.3 exactly in float32, i.e. float32(0.3), which
    # is above 0.3. torchvision's CPU kernel compares with the double 0.3 and suppresses; its CUDA kernel
    # compares with float32(0.3) and keeps. Both of our branches keep, on every device.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 3.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.3).tolist() == [0]                  # the CPU kernel, threshold as given
    assert nms(boxes, scores, nms_threshold(0.3)).tolist() == [0, 1]  # the CUDA kernel's comparison
    assert _run(branch, boxes, scores, torch.zeros(2, dtype=torch.int64), 0.3).tolist() == [0, 1]


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
    from torchvision.ops.boxes import _batched_nms_coordinate_trick

    boxes, scores, groups = _coco_scale_groups()
    ref = _reference(boxes, scores, groups, 0.5)
    # the data is sensitive: float32 offsets (torchvision's batched_nms trick) move coordinates by up to
    # 1/32 px here and keep other boxes
    assert not torch.equal(_batched_nms_coordinate_trick(boxes, scores, groups, 0.5), ref)
    for kwargs in (dict(packed=True),                            # all 640 groups at once
                   dict(packed=True, max_boxes_per_call=256),    # in pieces of 64 groups
                   dict(packed=False)):                          # one call per group
        assert torch.equal(grouped_nms(boxes, scores, groups, 0.5, **kwargs), ref), kwargs
    with force_packed_nms(True):  # what the counts and the GPU path use, forced on the CPU
        by_group = torch.argsort(groups, stable=True)  # already sorted, sizes given: planned on the host
        sizes = torch.bincount(groups).tolist()
        with sync_log() as log, count_ops() as c:
            kept = grouped_nms(boxes[by_group], scores[by_group], groups[by_group], 0.5, group_sizes=sizes)
        assert torch.equal(by_group[kept], ref)
        # one host read, declared (converged?, how many kept); no torchvision call, no blocking copy
        assert c.host_reads == 1 and c.nms_calls == 0 and c.h2d_copies == 0 and not c.undeclared, c.summary()
        assert log == ["NMS: converged, boxes kept"]


def test_long_chains_of_suppressors_take_more_rounds_and_stay_exact():
    # boxes in a row, each overlapping its neighbours at IoU 0.82 and the next-but-one at 0.67, scores
    # falling along the row: box 0 suppresses 1, which then cannot suppress 2, ... the greedy answer
    # (every other box) needs as many iterations as there are boxes
    n = 100
    x = torch.arange(n, dtype=torch.float32) * 2
    boxes = torch.stack([x, torch.zeros(n), x + 20, torch.full((n,), 10.0)], 1)
    scores = torch.linspace(1, 0.01, n)
    groups = torch.zeros(n, dtype=torch.int64)
    with sync_log() as log:
        kept = grouped_nms(boxes, scores, groups, 0.7, packed=True, group_sizes=[n])
    assert torch.equal(kept, _reference(boxes, scores, groups, 0.7))
    assert kept.tolist() == list(range(0, n, 2))
    assert len(log) == 3  # rounds of 16, 32 and 64 iterations (112 in all, the first total over the
    #                       chain's 100), one read each


def test_a_group_too_large_for_the_matrix_budget_goes_to_torchvision_alone():
    g = torch.Generator().manual_seed(8)
    boxes, scores = _boxes(300, 60.0, g=g), torch.rand(300, generator=g)
    groups = torch.cat([torch.zeros(200, dtype=torch.int64), torch.ones(60, dtype=torch.int64),
                        torch.full((40,), 2)])
    with count_ops() as c:
        kept = grouped_nms(boxes, scores, groups, 0.5, packed=True, max_boxes_per_call=100,
                           group_sizes=[200, 60, 40])
    assert torch.equal(kept, _reference(boxes, scores, groups, 0.5))
    assert c.nms_calls == 1  # the group of 200 alone; the others batched
    with count_ops() as c:
        alone = grouped_nms(boxes[:200], scores[:200], groups[:200], 0.5, packed=True, max_boxes_per_call=100,
                            group_sizes=[200])
    assert torch.equal(alone, _reference(boxes[:200], scores[:200], groups[:200], 0.5))
    assert c.nms_calls == 1 and c.host_reads == 0


def test_large_pieces_iterate_on_bits_and_keep_the_same_boxes(monkeypatch):
    # pieces above _DENSE_ELEMENTS keep S packed as int64 words (8x less memory than bools); forced here
    import resdet.detection.nms as nms_module

    monkeypatch.setattr(nms_module, "_DENSE_ELEMENTS", 0)
    boxes, scores, groups = _coco_scale_groups()
    assert torch.equal(grouped_nms(boxes, scores, groups, 0.5, packed=True), _reference(boxes, scores, groups, 0.5))
    boxes, scores, groups, _ = _adversarial_pairs(0.7)
    assert torch.equal(grouped_nms(boxes, scores, groups, 0.7, packed=True), _reference(boxes, scores, groups, 0.7))
    n = 100  # the chain of test_long_chains...: widths padded to 64s, bit 63 of a word used
    x = torch.arange(n, dtype=torch.float32) * 2
    chain = torch.stack([x, torch.zeros(n), x + 20, torch.full((n,), 10.0)], 1)
    kept = grouped_nms(chain, torch.linspace(1, 0.01, n), torch.zeros(n, dtype=torch.int64), 0.7, packed=True,
                       group_sizes=[n])
    assert kept.tolist() == list(range(0, n, 2))
