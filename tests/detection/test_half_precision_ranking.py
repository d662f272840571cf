"""Under bf16 autocast, proposals and detections are ranked in float32: the same as ranking the same
(half-precision) logits cast to float32 first, ties and all."""
import torch

from resdet.detection.anchors import AnchorGenerator
from resdet.detection.box_ops import BoxCoder
from resdet.detection.postprocess import select_detections
from resdet.detection.rpn import RPN, RPNHead


def _rpn():
    torch.manual_seed(0)
    anchors = AnchorGenerator(sizes=((32,), (64,)), aspect_ratios=((0.5, 1.0, 2.0),))
    rpn = RPN(in_features=["p2", "p3"], head=RPNHead(in_channels=8, num_anchors=3), anchor_generator=anchors,
              pre_nms_topk=(300, 300), post_nms_topk=(100, 100))
    for conv in (rpn.head.objectness_logits, rpn.head.anchor_deltas):
        torch.nn.init.normal_(conv.weight, std=0.3)
    return rpn.eval()


def test_rpn_ranks_half_precision_logits_in_float32():
    rpn = _rpn()
    feats = {"p2": torch.randn(2, 8, 32, 40), "p3": torch.randn(2, 8, 16, 20)}
    sizes = torch.tensor([[128, 160], [120, 150]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, deltas = rpn.head([feats["p2"], feats["p3"]])
    assert logits[0].dtype == torch.bfloat16
    n = 2
    flat_logits = [x.permute(0, 2, 3, 1).reshape(n, -1) for x in logits]
    flat_deltas = [x.view(n, -1, 4, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).reshape(n, -1, 4) for x in deltas]
    assert max(len(torch.unique(x)) / x.numel() for x in flat_logits) < 0.9  # bf16: many tied logits
    anchors = rpn.anchor_generator((128, 160), [(32, 40), (16, 20)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = rpn._select_proposals(flat_logits, flat_deltas, anchors, sizes)
    full = rpn._select_proposals([x.float() for x in flat_logits], [x.float() for x in flat_deltas], anchors, sizes)
    assert half[0].dtype == torch.float32
    for a, b in zip(half, full):
        assert torch.equal(a, b)


def test_detections_rank_half_precision_logits_in_float32():
    g = torch.Generator().manual_seed(0)
    r, c = 200, 6
    proposals = torch.rand(r, 2, generator=g) * 100
    proposals = torch.cat([proposals, proposals + torch.rand(r, 2, generator=g) * 50 + 5], 1)
    batch_idx = torch.arange(r) // 100
    logits = (torch.randn(r, c, generator=g) * 3).bfloat16()
    deltas = (torch.randn(r, 4 * c, generator=g) * 0.1).bfloat16()
    sizes = torch.tensor([[160, 160], [160, 160]])
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    half = select_detections(logits, deltas, proposals, batch_idx, sizes, coder, 0.05, 0.5, 30)
    full = select_detections(logits.float(), deltas.float(), proposals, batch_idx, sizes, coder, 0.05, 0.5, 30)
    assert half[1].dtype == torch.float32 and int(full[3].sum()) > 20
    for a, b in zip(half, full):
        assert torch.equal(a, b)
