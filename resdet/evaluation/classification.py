"""Top-k classification error, accumulated over batches and summed over DDP processes.

    ev = ClassificationEvaluator(topk=(1, 5))
    for images, labels in loader:
        ev.process(model(images), labels)
    ev.evaluate()   # {"top1_err": 23.9, "top5_err": 7.1, "num_samples": 50000}, errors in percent

A sample counts as correct at k if its label is among the k highest scores (torch.topk; ties are broken
the way topk breaks them). k larger than the number of classes is clamped (top-5 of a 3-class problem is
0% error).
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.distributed as dist

__all__ = ["topk_correct", "ClassificationEvaluator"]


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, topk: Sequence[int] = (1, 5)) -> Dict[int, int]:
    """Number of samples whose label is in the top k scores, for each k."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be [N, num_classes]; got shape {tuple(scores.shape)}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels must be [N={scores.shape[0]}]; got shape {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must be in [0, {scores.shape[1]}); got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    maxk = min(max(topk), scores.shape[1])
    top = scores.topk(maxk, dim=1).indices                   # [N, maxk]
    hit = top == labels[:, None]                             # at most one True per row
    return {k: int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in topk}


class ClassificationEvaluator:
    """Accumulates top-k hits; `evaluate()` sums over processes when torch.distributed is initialised."""

    def __init__(self, topk: Sequence[int] = (1, 5)):
        self.topk = tuple(topk)
        self.reset()

    def reset(self) -> None:
        self._correct = {k: 0 for k in self.topk}
        self._count = 0

    def process(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        for k, c in topk_correct(scores.detach(), labels, self.topk).items():
            self._correct[k] += c
        self._count += len(labels)

    def evaluate(self) -> Dict[str, float]:
        counts = torch.tensor([self._count] + [self._correct[k] for k in self.topk], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            # gloo reduces CPU tensors; NCCL needs them on this process's GPU.
            dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            counts = counts.to(dev)
            dist.all_reduce(counts)
            counts = counts.cpu()
        n = int(counts[0])
        if n == 0:
            raise RuntimeError("ClassificationEvaluator.evaluate() called before any sample was processed")
        out = {f"top{k}_err": 100.0 * (1.0 - float(counts[i + 1]) / n) for i, k in enumerate(self.topk)}
        out["num_samples"] = n
        return out
