"""Cascade R-CNN (resdet/detection/cascade.py) against a direct per-image reference written here from the
paper's and Detectron2's description, with torchvision's box coder, IoU, clipping and NMS:
- training: each stage's boxes (stage k-1's regression of the same RoIs, clipped, empty ones dropped), its
  labels at its IoU threshold, its regression targets with its own weights, and its two losses;
- inference: every proposal through every stage, scores averaged over the stages, the last stage's boxes,
  per-class NMS, top-k;
plus the gradient scaling, a one-stage cascade equal to the standard heads with class-agnostic boxes, the
config checks and the host-read budget (the same reads at batch 1 and 3; 5 per step and per call).
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image

from resdet.config import load_config
from resdet.config.node import ConfigError
from resdet.detection import build_detection_model
from resdet.detection.nms import force_packed_nms
from resdet.detection.cascade import CascadeROIHeads, scale_gradient
from resdet.detection.structures import GroundTruth
from resdet.benchmarks.counts import count_inference, count_training_step
from resdet.benchmarks.detection import synthetic_batch
from resdet.engine.schedules import build_lr_scheduler, build_optimizer

from .test_rcnn_training import _target

# one intra-op thread (tests/conftest.py): two spin-waiting threads on two shared cores cost CPU for nothing
pytestmark = pytest.mark.usefixtures("one_thread")

K = 3
SMALL = ["MODEL.BACKBONE.NAME", "resnet18", "MODEL.MASK_ON", True, "MODEL.ROI_HEADS.NUM_CLASSES", K,
         "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
         "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 300, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 100, "MODEL.RPN.PRE_NMS_TOPK_TEST", 300,
         "MODEL.RPN.POST_NMS_TOPK_TEST", 100, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64, "SOLVER.BASE_LR", 1e-4]
CASCADE = ["MODEL.ROI_HEADS.NAME", "CascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True]


def _cfg(*extra):
    return load_config("configs/Base-RCNN-FPN.yaml", SMALL + CASCADE + list(extra))


@pytest.fixture(scope="module")
def cascade():
    torch.manual_seed(0)
    return build_detection_model(_cfg())


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 128, 160, generator=g) * 255, torch.rand(3, 160, 128, generator=g) * 255]
    targets = [_target(128, 160, [[10, 20, 70, 90], [80, 30, 150, 120]], [1, 3]),
               _target(160, 128, [[5, 5, 60, 100], [40, 90, 120, 150]], [2, 2])]
    return images, targets


def _livelier(model, shift_dx: float = 0.0, seed: int = 1):
    """Random weights whose stages really move the boxes (and spread the class scores): box deltas with a
    spread of a few % of the box sides, optionally every box shifted right by `shift_dx` widths at stage 0 (boxes
    near the right edge then leave the image: empty after clipping)."""
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    heads = model.roi_heads
    with torch.no_grad():
        for k, (pred, coder) in enumerate(zip(heads.box_predictors, heads.box_coders)):
            w = pred.bbox_pred.weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.01 / w.shape[1] ** 0.5 * torch.tensor(coder.weights)[:, None])
            if k == 0 and shift_dx:
                pred.bbox_pred.bias.copy_(torch.tensor([shift_dx * coder.weights[0], 0.0, 0.0, 0.0]))
            c = pred.cls_score.weight
            c.copy_(torch.randn(c.shape, generator=g) * 3.0 / c.shape[1] ** 0.5)
    return model


def _inputs(model, images, targets):
    """Features, proposals (valid mask) and ground truth as the RoI heads receive them in training."""
    model.train()
    gt = GroundTruth.from_targets(targets, "cpu")
    with torch.no_grad():
        b = model.preprocess(images)
        features = model.fpn(model.backbone(b.tensor))
        torch.manual_seed(3)
        proposals, valid, _ = model.rpn(features, b.padded_size, b.image_sizes, gt)
        # a random RPN's proposals rarely touch an object: the first 40 slots of each image become the
        # ground truth jittered by up to 15% of its sides, so every stage has foreground at its IoU
        g = torch.Generator().manual_seed(4)
        n = proposals.shape[0]
        src = gt.boxes[:, torch.arange(40) % gt.boxes.shape[1]]
        side = torch.cat([src[..., 2:] - src[..., :2]] * 2, -1)
        jittered = src + (torch.rand(src.shape, generator=g) - 0.5) * 0.3 * side
        proposals = proposals.clone()
        proposals[:, :40] = clip_boxes_to_image(jittered.reshape(-1, 4), (128, 128)).reshape(n, 40, 4)
        valid = valid.clone()
        valid[:, :40] = True
    return features, proposals, valid, b.image_sizes, gt


def _stage_outputs(heads, k, feats_i, boxes):
    """Stage k on one image's boxes (pooled alone): class logits and class-agnostic deltas."""
    pooled = heads.box_pooler(feats_i, boxes, torch.zeros(len(boxes), dtype=torch.int64))
    return heads.box_predictors[k](heads.box_heads[k](pooled))


def _reference_training(heads, feats, sampled, gt, image_sizes):
    """Per image and per stage, as Detectron2's CascadeROIHeads: (stages: [{boxes, cls, fg, targets} per image],
    losses)."""
    n = len(sampled)
    stages, losses = [], {}
    boxes = [s["boxes"] for s in sampled]
    deltas = None
    for k in range(heads.num_stages):
        coder = TorchvisionBoxCoder(heads.box_coders[k].weights)
        per_image = []
        for i in range(n):
            h, w = (int(v) for v in image_sizes[i])
            if k > 0:
                prev = TorchvisionBoxCoder(heads.box_coders[k - 1].weights)
                b = clip_boxes_to_image(prev.decode_single(deltas[i].detach(), boxes[i]), (h, w))
                boxes[i] = b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]  # Boxes.nonempty()
            g = gt.boxes[i][gt.valid[i]]
            iou = box_iou(g, boxes[i])  # [G, R]
            best, matched = iou.max(0)
            fg = best >= heads.stage_ious[k]
            cls = torch.where(fg, gt.labels[i][gt.valid[i]][matched], 0)
            targets = coder.encode_single(g[matched], boxes[i])
            per_image.append({"boxes": boxes[i], "cls": cls, "fg": fg, "targets": targets})
        stages.append(per_image)
        outs = [_stage_outputs(heads, k, [f[i:i + 1] for f in feats], boxes[i]) for i in range(n)]
        deltas = [d for _, d in outs]
        logits, d = torch.cat([l for l, _ in outs]), torch.cat(deltas)
        cls = torch.cat([p["cls"] for p in per_image])
        fg = torch.cat([p["fg"] for p in per_image])
        targets = torch.cat([p["targets"] for p in per_image])
        losses[f"loss_classifier_stage{k}"] = F.cross_entropy(logits, cls)
        losses[f"loss_box_reg_stage{k}"] = (d[fg] - targets[fg]).abs().sum() / max(len(cls), 1)  # L1 (beta 0)
    return stages, losses


@pytest.mark.parametrize("shift_dx", [0.0, 2.0], ids=["refine", "some-boxes-leave-the-image"])
def test_training_stages_and_losses_match_a_per_image_reference(cascade, batch, shift_dx):
    model = _livelier(cascade, shift_dx)
    heads = model.roi_heads
    features, proposals, valid, image_sizes, gt = _inputs(model, *batch)
    feats = [features[f] for f in heads.in_features]
    seen = {}
    own_losses = heads._stage_losses

    def record(k, logits, deltas, boxes, img, cls, gt_idx, fg, live, gt_):
        live = torch.ones_like(fg) if live is None else live
        targets = heads.box_coders[k].encode(gt_.boxes[img, gt_idx], boxes)
        seen[k] = dict(boxes=boxes, img=img, cls=cls, fg=fg, live=live, targets=targets)
        return own_losses(k, logits, deltas, boxes, img, cls, gt_idx, fg, None if k == 0 else live, gt_)

    heads._stage_losses = record  # a spy: the heads' own losses, with their inputs kept for the comparison
    torch.manual_seed(5)
    _, losses = heads(features, proposals, valid, image_sizes, gt)
    torch.manual_seed(5)  # the same stage-0 sample, drawn again for the reference
    boxes, cls, _, fg, ok = heads._sample(proposals, valid, gt)
    sampled = [{"boxes": boxes[i][ok[i]]} for i in range(len(ok))]
    stages, ref_losses = _reference_training(heads, feats, sampled, gt, image_sizes)

    assert set(losses) == {f"loss_{n}_stage{k}" for k in range(3) for n in ("classifier", "box_reg")} | {"loss_mask"}
    for k, per_image in enumerate(stages):
        s = seen[k]
        for i, ref in enumerate(per_image):
            rows = (s["img"] == i) & s["live"]
            torch.testing.assert_close(s["boxes"][rows], ref["boxes"], rtol=0, atol=1e-4)
            assert torch.equal(s["cls"][rows], ref["cls"]) and torch.equal(s["fg"][rows], ref["fg"]), (k, i)
            f = ref["fg"]
            torch.testing.assert_close(s["targets"][rows][f], ref["targets"][f], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(losses[f"loss_classifier_stage{k}"], ref_losses[f"loss_classifier_stage{k}"],
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(losses[f"loss_box_reg_stage{k}"], ref_losses[f"loss_box_reg_stage{k}"],
                                   rtol=1e-5, atol=1e-6)
    # the set-up means something: later stages see other boxes with foreground at their IoU (unshifted),
    # and the shifted case really has boxes that left the image
    fg_per_stage = [int(seen[k]["fg"].sum()) for k in range(3)]
    assert fg_per_stage[0] > 0 and not torch.equal(seen[0]["boxes"], seen[1]["boxes"]), fg_per_stage
    assert all(float(losses[f"loss_box_reg_stage{k}"]) > 0 for k in range(1 if shift_dx else 3)), fg_per_stage
    b0 = seen[0]["boxes"]
    empty_before = int(((b0[:, 2] <= b0[:, 0]) | (b0[:, 3] <= b0[:, 1])).sum())  # a random RPN's empty proposals
    empty = int((~seen[1]["live"]).sum())
    assert (empty_before + 10 < empty < len(b0)) if shift_dx else empty == empty_before, (empty, empty_before)


def test_inference_matches_a_per_image_reference(cascade, batch):
    model = _livelier(cascade)
    heads = model.roi_heads
    features, proposals, valid, image_sizes, _ = _inputs(model, *batch)
    feats = [features[f] for f in heads.in_features]
    heads.eval()
    with torch.no_grad():
        result, _ = heads(features, proposals, valid, image_sizes)
        for i in range(len(valid)):
            h, w = (int(v) for v in image_sizes[i])
            boxes = proposals[i][valid[i]]
            probs = []
            for k in range(heads.num_stages):
                if k > 0:  # no filtering at inference: the stages' scores must stay aligned
                    boxes = clip_boxes_to_image(
                        TorchvisionBoxCoder(heads.box_coders[k - 1].weights).decode_single(deltas, boxes), (h, w))
                logits, deltas = _stage_outputs(heads, k, [f[i:i + 1] for f in feats], boxes)
                probs.append(F.softmax(logits, -1))
            scores = sum(probs) / len(probs)
            final = clip_boxes_to_image(TorchvisionBoxCoder(heads.box_coders[-1].weights).decode_single(deltas, boxes),
                                        (h, w))
            cand_scores, cand_boxes, cand_labels = [], [], []
            for c in range(1, K + 1):
                keep = (scores[:, c] > heads.score_thresh) & ((final[:, 2] - final[:, 0]) >= 1e-2) & (
                    (final[:, 3] - final[:, 1]) >= 1e-2)
                cand_scores.append(scores[keep, c])
                cand_boxes.append(final[keep])
                cand_labels.append(torch.full((int(keep.sum()),), c))
            cs, cb, cl = torch.cat(cand_scores), torch.cat(cand_boxes), torch.cat(cand_labels)
            kept = batched_nms(cb, cs, cl, heads.nms_thresh)[: heads.detections_per_image]
            n = result["counts"][i]
            assert n == len(kept) > 10, (n, len(kept))
            torch.testing.assert_close(result["scores"][i, :n], cs[kept], rtol=0, atol=1e-5)
            assert torch.equal(result["labels"][i, :n], cl[kept])
            torch.testing.assert_close(result["boxes"][i, :n], cb[kept], rtol=0, atol=1e-3)
    assert result["mask_probs"].shape == (sum(result["counts"]), 1, 28, 28)


def test_scale_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    y = scale_gradient(x, 1.0 / 3)
    assert torch.equal(y, x)
    (y * 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0 / 3))


def test_one_stage_cascade_is_the_standard_heads_with_class_agnostic_boxes(batch):
    """With one stage (IoU 0.5, weights (10, 10, 5, 5)) the cascade computes what StandardROIHeads computes
    with CLS_AGNOSTIC_BBOX_REG: the same losses (under their stage name) and the same detections."""
    one = ["MODEL.ROI_BOX_CASCADE_HEAD.IOUS", (0.5,), "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS", ((10, 10, 5, 5),)]
    torch.manual_seed(0)
    cascade = build_detection_model(_cfg(*one))
    torch.manual_seed(0)
    standard = build_detection_model(load_config("configs/Base-RCNN-FPN.yaml", SMALL + [
        "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True]))
    lively = _livelier(cascade).state_dict()
    sd = {k.replace("box_heads.0", "box_head").replace("box_predictors.0", "box_predictor"): v for k, v in lively.items()}
    standard.load_state_dict(sd)
    cascade.load_state_dict(lively)
    images, targets = batch
    with torch.no_grad():
        torch.manual_seed(9)
        a = cascade.train()(images, targets)
        torch.manual_seed(9)
        b = standard.train()(images, targets)
        assert {k.replace("_stage0", ""): float(v) for k, v in a.items()} == pytest.approx(
            {k: float(v) for k, v in b.items()}, rel=1e-6)
        da, db = cascade.eval()(images), standard.eval()(images)
    for x, y in zip(da, db):
        assert len(x["scores"]) > 0 and all(torch.equal(x[k], y[k]) for k in ("boxes", "scores", "labels", "masks"))


@pytest.mark.parametrize("override,match", [
    (["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", False], "CLS_AGNOSTIC_BBOX_REG True"),
    (["MODEL.ROI_BOX_CASCADE_HEAD.IOUS", (0.4, 0.6, 0.7)], r"IOUS\[0\] \(0.4\) must equal"),
    (["MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS", ((10, 10, 5, 5),)], "one \\(wx, wy, ww, wh\\) per stage"),
    (["MODEL.ROI_HEADS.NAME", "Cascade"], "MODEL.ROI_HEADS.NAME must be one of"),
])
def test_config_errors_name_the_key(override, match):
    with pytest.raises(ValueError, match=match) as e:
        build_detection_model(_cfg(*override))
    assert override[0].split(".")[-1] == "NAME" or isinstance(e.value, ConfigError)


def _counts(model, cfg, n, mode):
    torch.manual_seed(0)
    images, targets = synthetic_batch(n, 64, 96, 3, K + 1, True, "cpu", seed=n)
    with force_packed_nms(True):
        if mode == "train":
            opt = build_optimizer(cfg, model)
            return count_training_step(model, opt, images, targets, scheduler=build_lr_scheduler(cfg, opt), warmup=0)
        return count_inference(model, images, warmup=0)


def test_host_reads_within_budget(cascade):
    """Standard heads' reads (4 in a training step, 5 in an inference call: resdet/DESIGN.md's budget) plus
    one per extra stage (its RoIs per level), the same at batch 1 and 3 (a read per image or per stage and
    image would differ), and no other kind of sync."""
    model, cfg = copy.deepcopy(cascade), _cfg()
    one, three = _counts(model, cfg, 1, "train"), _counts(model, cfg, 3, "train")
    assert one.host_reads == three.host_reads == 4 + 2, (one.summary(), three.summary())
    assert one.syncs == one.host_reads and three.syncs == three.host_reads and not three.undeclared, three.summary()
    assert set(three.reads_by_kind) <= {"item", "tolist"}, three.summary()
    for n in (1, 3):
        c = _counts(model, cfg, n, "infer")
        assert c.host_reads == c.syncs == 5 + 2 and not c.undeclared, c.summary()


def test_trains_and_infers_under_bf16_autocast_in_channels_last(cascade):
    """Half-precision logits and deltas (the stages decode and score in float32) and a channels_last model:
    finite losses, gradients in every stage, and ranked detections (small images: bf16 is slow on a CPU)."""
    model = _livelier(cascade).to(memory_format=torch.channels_last).train()
    images = [torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0)) * 255]
    targets = [_target(64, 80, [[10, 10, 50, 40], [40, 20, 75, 60]], [1, 2])]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    for k in range(3):
        g = model.roi_heads.box_predictors[k].bbox_pred.weight.grad
        assert g is not None and g.abs().sum() > 0, k
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images)
    assert all(len(o["scores"]) > 0 and o["boxes"].dtype == torch.float32 for o in out)
    assert all((o["scores"][:-1] >= o["scores"][1:]).all() for o in out)
