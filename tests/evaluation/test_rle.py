"""RLEs from box-sized mask probabilities equal pycocotools' encoding of the full paste, string for string."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from resdet.detection.postprocess import paste_masks
from resdet.evaluation.coco import instances_to_coco_results
from resdet.evaluation.rle import box_mask_rles, compact_instances_to_coco_results


def _detections(h, w, n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 1.2, h * 1.2]) - 10
    wh = torch.rand(n, 2, generator=g) * torch.tensor([float(w), float(h)]) + 0.5
    boxes = torch.cat([xy, xy + wh], 1)
    # the whole image, beyond every edge (runs cross from one column to the next), outside it, a sliver
    boxes[:4] = torch.tensor([[0, 0, w, h], [-5, -5, w + 5, h + 5], [w + 10, h + 10, w + 30, h + 30],
                              [1.0, 1.0, 1.4, h - 1.0]])
    probs = torch.rand(n, 1, 28, 28, generator=g)
    probs[1] = 1.0  # every pixel of the image inside: one run to the last pixel
    probs[4] = 0.0  # an empty mask
    return probs, boxes


def _reference(probs, boxes, size, threshold):
    binary = (paste_masks(probs, boxes, size)[:, 0] > threshold).numpy().astype(np.uint8)
    rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    return [{"size": list(r["size"]), "counts": r["counts"].decode("ascii")} for r in rles]


@pytest.mark.parametrize("size", [(61, 47), (5, 6), (1, 1), (120, 96)])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9])
def test_rles_equal_pycocotools_on_the_full_paste(size, threshold):
    probs, boxes = _detections(*size, n=60, seed=size[0])
    ours = [{"size": list(r["size"]), "counts": r["counts"]} for r in box_mask_rles(probs, boxes, size, threshold)]
    assert ours == _reference(probs, boxes, size, threshold)


def test_detections_of_several_images_in_one_call():
    p1, b1 = _detections(40, 70, 30, 1)
    p2, b2 = _detections(90, 33, 30, 2)
    sizes = torch.tensor([[40, 70]] * 30 + [[90, 33]] * 30)
    ours = box_mask_rles(torch.cat([p1, p2]), torch.cat([b1, b2]), sizes)
    ref = _reference(p1, b1, (40, 70), 0.5) + _reference(p2, b2, (90, 33), 0.5)
    assert [r["counts"] for r in ours] == [r["counts"] for r in ref]
    assert [list(r["size"]) for r in ours] == [r["size"] for r in ref]


def test_compact_results_are_the_evaluators_results():
    probs, boxes = _detections(50, 64, 25, 3)
    out = {"boxes": boxes.clamp(min=0), "scores": torch.rand(25), "labels": torch.randint(1, 4, (25,)),
           "mask_probs": probs}
    pasted = dict(out, masks=paste_masks(probs, out["boxes"], (50, 64)))
    del pasted["mask_probs"]
    ids = {1: 7, 2: 9, 3: 11}
    assert compact_instances_to_coco_results(out, 5, (50, 64), ids) == instances_to_coco_results(pasted, 5, ids)


def test_a_negative_threshold_is_refused():
    probs, boxes = _detections(8, 8, 5, 4)
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        box_mask_rles(probs, boxes, (8, 8), -0.1)
