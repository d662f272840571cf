"""COCO RLE masks straight from the model's box-sized mask probabilities, never building image-sized masks.

    rles = box_mask_rles(mask_probs, boxes, image_sizes, threshold=0.5)   # one compressed RLE per detection
    results = compact_instances_to_coco_results(instances, image_id, (h, w), contiguous_to_dataset_id)

`instances_to_coco_results` (coco.py) thresholds and encodes masks pasted at the image's size: for 100
detections of a 640x480 photo that is 30 million pixels per image, tenths of a second, and minutes for a
COCO-sized results file. Here each mask is pasted only over the pixels `paste_masks` can write
(`PastePlan.regions`: the expanded box; every pixel outside is exactly 0 there), detections of similar size in
one batched paste, and the RLE is assembled from the mask's transitions inside that window: a run in the
column-major order pycocotools uses starts or ends only where a window column changes value, or at the
window's top and bottom. pycocotools then compresses the counts (its C string encoder). The strings equal
`pycocotools.mask.encode` of the full paste thresholded the same way (tests/evaluation/test_rle.py), so a
results file written either way scores the same.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from resdet.detection.postprocess import PastePlan, paste_axes, paste_binary_windows

__all__ = ["box_mask_rles", "compact_instances_to_coco_results"]

# Detections pasted together share one window, as large as the largest of them. A batch costs a fixed
# number of tensor ops (worth about this many window pixels) plus its window pixels; detections join a
# batch while that costs less than a batch of their own. Detections larger than _ALONE_PIXELS are pasted
# one at a time, each in exactly its own region (no padding, nothing to mask).
_BATCH_COST_PIXELS = 32768
_ALONE_PIXELS = 65536


def _batches(heights: np.ndarray, widths: np.ndarray) -> List[np.ndarray]:
    """Detection indices in batches of similar window size (greedy, largest windows first)."""
    order = np.argsort(-(heights * widths), kind="stable")
    out, batch, bh, bw = [], [], 0, 0
    for k in order:
        h, w = int(heights[k]), int(widths[k])
        if h * w > _ALONE_PIXELS:
            out.append(np.asarray([k]))
            continue
        grown = (len(batch) + 1) * max(bh, h) * max(bw, w)
        if batch and grown > len(batch) * bh * bw + h * w + _BATCH_COST_PIXELS:
            out.append(np.asarray(batch))
            batch, bh, bw = [], 0, 0
        batch.append(k)
        bh, bw = max(bh, h), max(bw, w)
    if batch:
        out.append(np.asarray(batch))
    return out


def _transitions(framed: Tensor, y0: np.ndarray, x0: np.ndarray, heights: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Where each window's mask (column-major and framed, [G, w, h + 2]: paste_binary_windows) changes
    value, as positions in its image's column-major order: (detection index [T], position [T]), sorted
    by detection then position. numpy: its flatnonzero is ten times torch's nonzero on sparse masks."""
    b = framed.numpy()
    g_n, w, h2 = b.shape
    flat = np.flatnonzero(b[:, :, 1:] != b[:, :, :-1])  # [G, w, h + 1]: before window row r (h: after the last)
    r = flat % (h2 - 1)
    c = (flat // (h2 - 1)) % w
    g = flat // ((h2 - 1) * w)
    return g, (x0[g] + c) * heights[g] + y0[g] + r


def _counts(g: np.ndarray, pos: np.ndarray, num: int, areas: np.ndarray) -> List[np.ndarray]:
    """Uncompressed COCO counts (zeros first) per detection from its transition positions."""
    # a run that fills a column to the image's bottom and goes on at the next column's top ends and
    # starts at the same position: the two transitions cancel
    same = (pos[1:] == pos[:-1]) & (g[1:] == g[:-1])
    # and a run that reaches the image's last pixel has no (empty) run of zeros after it
    drop = pos == areas[g]
    if same.any() or drop.any():
        drop[1:] |= same
        drop[:-1] |= same
        g, pos = g[~drop], pos[~drop]
    per = np.bincount(g, minlength=num)
    # each detection's transitions framed by 0 and its image's size, then differenced within the frame
    framed = np.empty(len(pos) + 2 * num, dtype=np.int64)
    first = np.cumsum(per + 2) - (per + 2)
    framed[first] = 0
    framed[first + per + 1] = areas
    inner = np.ones(len(framed), dtype=bool)
    inner[first] = False
    inner[first + per + 1] = False
    framed[inner] = pos
    diffs = np.diff(framed)
    keep = np.ones(len(diffs), dtype=bool)
    keep[(first + per + 1)[:-1]] = False  # from one detection's end to the next one's start
    return np.split(diffs[keep], np.cumsum(per + 1)[:-1])


def box_mask_rles(mask_probs: Tensor, boxes: Tensor, image_sizes, threshold: float = 0.5) -> List[Dict]:
    """Compressed COCO RLEs ({"size": [h, w], "counts": str}) of `paste_masks(mask_probs, boxes, (h, w))
    > threshold` per detection, without pasting at the image's size.

    mask_probs [R, 1, M, M] (each detection's label's probabilities inside its box, as the model returns
    them with paste_masks=False), boxes [R, 4] xyxy in the image's frame, image_sizes: one (h, w) for all
    or [R, 2] per detection (several images at once). `threshold` >= 0: pixels outside a box are 0."""
    from pycocotools import mask as mask_util

    if threshold < 0:
        raise ValueError(f"the mask threshold must be >= 0 (a negative one marks every pixel); got {threshold}")
    n = boxes.shape[0]
    if n == 0:
        return []
    mask_probs, boxes = mask_probs.detach().cpu(), boxes.detach().cpu().float()
    sizes = torch.as_tensor(image_sizes, dtype=torch.int64).reshape(-1, 2).expand(n, 2)
    plan = PastePlan.of(mask_probs, boxes)
    regions = plan.regions(sizes)  # (y0, y1, x0, x1) per detection
    heights = (regions[:, 1] - regions[:, 0]).numpy()
    widths = (regions[:, 3] - regions[:, 2]).numpy()
    starts, image_h = regions[:, [0, 2]], sizes[:, 0].numpy()
    areas = (sizes[:, 0] * sizes[:, 1]).numpy()
    # the windows' sampling along x and y, for every detection at once (cropped per batch)
    axes = paste_axes(plan, sizes, starts, (max(int(heights.max()), 1), max(int(widths.max()), 1)))
    counts: List[Optional[np.ndarray]] = [None] * n
    for idx in _batches(heights, widths):
        sel = torch.from_numpy(idx)
        win = (max(int(heights[idx].max()), 1), max(int(widths[idx].max()), 1))
        framed = paste_binary_windows(PastePlan(plan.padded[sel], plan.ibox[sel], plan.dtype), axes.take(sel, win),
                                      threshold)
        g, pos = _transitions(framed, starts[sel, 0].numpy(), starts[sel, 1].numpy(), image_h[idx])
        for k, c in zip(idx, _counts(g, pos, len(idx), areas[idx])):
            counts[k] = c
    hw = sizes.tolist()
    rles = mask_util.frPyObjects([{"size": s, "counts": c} for s, c in zip(hw, counts)], hw[0][0], hw[0][1])
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def compact_instances_to_coco_results(output: Dict[str, Tensor], image_id: int, image_size: Sequence[int],
                                      contiguous_to_dataset_id: Optional[Dict[int, int]] = None,
                                      mask_threshold: float = 0.5) -> List[dict]:
    """`coco.instances_to_coco_results` for an output with `mask_probs` (GeneralizedRCNN(paste_masks=False))
    instead of image-sized `masks`: the same dicts (boxes xywh rounded to 3 decimals, dataset category
    ids, RLE), with the masks encoded by `box_mask_rles` in the frame of `image_size` (h, w)."""
    from .coco import instances_to_coco_results

    if "mask_probs" not in output:
        return instances_to_coco_results(output, image_id, contiguous_to_dataset_id, mask_threshold)
    boxes_only = {k: v for k, v in output.items() if k in ("boxes", "scores", "labels")}
    results = instances_to_coco_results(boxes_only, image_id, contiguous_to_dataset_id, mask_threshold)
    if results:
        for r, rle in zip(results, box_mask_rles(output["mask_probs"], output["boxes"], image_size, mask_threshold)):
            r["segmentation"] = rle
    return results
