"""Shared by the export tests: FPN detectors of the COCO configs with random weights whose class scores are spread out
(so detections are ranked, none tied), photographs at small sizes, and the eager model's outputs."""
import os

import numpy as np
import pytest
import torch

from resdet.config import load_config
from resdet.detection.rcnn import build_detection_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs")
DETECTOR_CONFIGS = {"faster": os.path.join(CONFIGS, "coco_r50_faster.yaml"), "mask": os.path.join(CONFIGS, "coco_r50.yaml")}
CLASS_NAMES = [f"class{i}" for i in range(1, 81)]

# (photo, height, width); "flat" is an image of the pixel mean: zero after normalisation, so with
# these random weights (no biases before the class logits) every class scores 1/81 < 0.05: no detections.
BATCHES = [
    [("astronaut", 128, 160), ("coffee", 150, 120), ("flat", 96, 128)],  # 3 sizes padded to 160x160
    [("chelsea", 192, 128)],  # another padded shape than the 160x160 the export traced
]
EXPORT_SIZE = (160, 160)


def onnx_or_skip():
    pytest.importorskip("onnx", reason="ONNX export needs onnx, onnxscript, onnxruntime: pip install -e \".[export]\"")
    pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript: pip install -e \".[export]\"")
    return pytest.importorskip("onnxruntime", reason="ONNX runs need onnxruntime: pip install -e \".[export]\"")


def photo(name: str, h: int, w: int, pixel_mean=None) -> torch.Tensor:
    """A scikit-image photograph scaled to h x w, as a [3, h, w] float tensor (0-255 RGB)."""
    if name == "flat":
        return pixel_mean.reshape(3, 1, 1).expand(3, h, w).clone()
    import cv2

    data = pytest.importorskip("skimage.data", reason="the test photographs come from scikit-image (the dev extra)")
    pixels = cv2.resize(getattr(data, name)()[..., :3], (w, h), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float()


def batch_images(model, spec):
    return [photo(n, h, w, model.pixel_mean) for n, h, w in spec]


def detector_config(arch: str, extra=()):
    # random weights: the COCO configs otherwise name the pretraining run's backbone file
    return load_config(DETECTOR_CONFIGS[arch], ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.WEIGHTS", "", *extra])


def peaked_detector(cfg, images, seed: int = 0):
    """An FPN detector with random weights, its class-logit layer redrawn so that logits have a spread of about 3
    on these images' proposals: softmax scores between ~0.05 and ~0.9, ranked without ties."""
    torch.manual_seed(seed)
    model = build_detection_model(cfg).eval()
    feats = {}
    hook = model.roi_heads.box_head.register_forward_hook(lambda m, a, out: feats.update(x=out))  # returns None
    with torch.no_grad():
        model(images)
        hook.remove()
        norm = float(feats["x"].norm(dim=1).median())
        g = torch.Generator().manual_seed(seed + 1)
        w = model.roi_heads.box_predictor.cls_score.weight
        w.copy_(torch.randn(w.shape, generator=g) * (3.0 / norm))
    return model


def eager_outputs(model, images):
    """The eager model's detections padded like the export's: per image boxes, scores, labels (all
    valid ones, best first) and the 28x28 mask probabilities the RoI heads computed."""
    captured = {}
    hook = model.roi_heads.register_forward_hook(lambda m, a, out: captured.update(result=out[0]))  # returns None
    with torch.no_grad():
        outs = model(images)
    hook.remove()
    result = captured["result"]
    if "mask_probs" in result:  # [R, 1, M, M]: every image's detections in order, `counts` per image
        counts = result.get("counts")
        counts = list(counts) if counts is not None else result["valid"].sum(1).tolist()
        for o, probs in zip(outs, result["mask_probs"].split(counts)):
            o["mask_probs"] = probs
    return outs


def padded(images, div: int = 32):
    """The batch tensor and sizes ExportedDetector builds (bottom/right zero padding to a multiple of 32)."""
    h = -(-max(im.shape[1] for im in images) // div) * div
    w = -(-max(im.shape[2] for im in images) // div) * div
    batch = torch.zeros(len(images), 3, h, w)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[1], : im.shape[2]] = im
    return batch, torch.tensor([[im.shape[1], im.shape[2]] for im in images])


def assert_boxes_close(got, want, rel: float = 1e-4, what: str = ""):
    """Boxes equal to `rel` relative to each box's scale (its largest coordinate): a coordinate near 0 comes
    from a difference of two values near the box's size and carries their float error, not its own."""
    scale = want.abs().amax(dim=-1, keepdim=True).clamp(min=1.0)
    worst = float(((got - want).abs() / scale).max()) if want.numel() else 0.0
    assert worst <= rel, f"{what}: boxes differ by {worst:.2e} of their scale (allowed {rel})"


def _tie_order(scores, labels, boxes, tol: float = 2e-5):
    """Row order that sorts each run of near-equal scores (within `tol`, the float noise between two
    runtimes) by label and box: two detections scoring 0.4212 in both runs may come in either order."""
    n = len(scores)
    group = torch.zeros(n, dtype=torch.int64)
    if n > 1:
        group[1:] = torch.cumsum((scores[:-1] - scores[1:]).abs() > tol, 0)
    return sorted(range(n), key=lambda j: (int(group[j]), int(labels[j]), *boxes[j].tolist()))


def assert_detections_equal(raw, eager, what: str, score_atol: float = 1e-5):
    """The exported file's fixed-shape outputs against the eager detections, image by image: same count and
    labels, boxes within 1e-4 relative, scores within `score_atol` (1e-5), mask probabilities within 1e-4
    (rows whose scores tie to within 2 score_atol are compared in label/box order, as their order is float
    noise)."""
    for i, e in enumerate(eager):
        n = int(raw["num_detections"][i])
        assert n == len(e["scores"]), f"{what} image {i}: {n} detections, eager {len(e['scores'])}"
        assert not raw["scores"][i, n:].any() and not raw["labels"][i, n:].any(), "padding rows must be zeros"
        got = {k: v[i, :n] for k, v in raw.items() if k != "num_detections"}
        tol = 2 * score_atol
        got = {k: v[_tie_order(got["scores"], got["labels"], got["boxes"], tol)] for k, v in got.items()}
        want = {k: v[_tie_order(e["scores"], e["labels"], e["boxes"], tol)] for k, v in e.items() if k != "masks"}
        assert torch.equal(got["labels"].to(torch.int64), want["labels"]), f"{what} image {i}: labels differ"
        assert_boxes_close(got["boxes"], want["boxes"], what=f"{what} image {i}")
        torch.testing.assert_close(got["scores"], want["scores"], rtol=0, atol=score_atol)
        if "mask_probs" in want:
            torch.testing.assert_close(got["mask_probs"], want["mask_probs"], rtol=0, atol=1e-4)
