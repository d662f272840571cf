"""Ten-crop testing (the paper's Table 3, after AlexNet): the four corner crops and the centre crop of
the image and of its mirror; the prediction is the mean of the ten softmax outputs.

The crops come from torchvision (`transforms.v2.functional.ten_crop`); what is ours is running all ten
crops of a batch through the model as one [B*10, C, h, w] batch and averaging per image.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

__all__ = ["ten_crop", "predict_ten_crop", "predict"]


def ten_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] (or [C, H, W]) -> [B, 10, C, size, size] (or [10, C, size, size])."""
    if images.shape[-1] < size or images.shape[-2] < size:
        raise ValueError(f"ten_crop of size {size} needs images at least that large; got {tuple(images.shape[-2:])}")
    return torch.stack(TF.ten_crop(images, [size, size]), dim=-4)


@torch.no_grad()
def predict_ten_crop(model: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    """crops [B, 10, C, h, w] -> mean softmax probabilities [B, num_classes]."""
    if crops.dim() != 5:
        raise ValueError(f"predict_ten_crop expects crops [B, n_crops, C, h, w]; got shape {tuple(crops.shape)}")
    b, n = crops.shape[:2]
    logits = model(crops.flatten(0, 1))
    return logits.float().softmax(dim=1).view(b, n, -1).mean(dim=1)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class scores for a batch: softmax of a single crop [B, C, h, w], or ten-crop mean for [B, 10, C, h, w]."""
    if images.dim() == 5:
        return predict_ten_crop(model, images)
    return model(images).float().softmax(dim=1)
