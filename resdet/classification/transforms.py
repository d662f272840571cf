"""Per-image transforms for image-folder classification data (DataLoader workers, PIL in, uint8 out).

Training ("scale", the paper's ImageNet recipe): shorter side resized to a random integer in
[low, high], a random crop, a horizontal flip, colour augmentation; optionally timm's RandAugment.
"rrc" is torchvision/timm's RandomResizedCrop recipe; "pad_crop_flip" the CIFAR one.
Testing: shorter side resized, then the centre crop, or the ten crops stacked as [10, 3, s, s].
Outputs stay uint8 (a quarter of float's bytes through the worker queues and the host-to-device copy);
the model normalises.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torchvision.transforms import v2 as T

from .ten_crop import ten_crop

__all__ = ["PCALighting", "pca_lighting_batch", "build_train_transform", "build_test_transform"]

# Principal components of ImageNet's RGB pixel covariance (pixels in [0, 1]), as published with AlexNet
# and used by the MSRA/fb.resnet.torch recipes; the eigenvectors are the columns.
_IMAGENET_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
_IMAGENET_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                                 [-0.5808, -0.0045, -0.8140],
                                 [-0.5836, -0.6948, 0.4203]])


class PCALighting(torch.nn.Module):
    """AlexNet's colour augmentation: add sum_i a_i * lambda_i * v_i to every pixel, a_i ~ N(0, std).

    Neither torchvision nor timm ships it (ColorJitter is a different augmentation), hence ours.
    Works on uint8 or float tensors [..., 3, H, W] in the 0-255 range and returns the input dtype.
    """

    def __init__(self, std: float = 0.1, eigval: torch.Tensor = _IMAGENET_EIGVAL,
                 eigvec: torch.Tensor = _IMAGENET_EIGVEC):
        super().__init__()
        self.std = std
        self.register_buffer("eigval", eigval.clone(), persistent=False)
        self.register_buffer("eigvec", eigvec.clone(), persistent=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.std <= 0:
            return img
        if img.shape[-3] != 3:
            raise ValueError(f"PCALighting needs 3-channel images [..., 3, H, W]; got shape {tuple(img.shape)}")
        alpha = torch.randn(3) * self.std
        shift = 255.0 * (self.eigvec @ (alpha * self.eigval))   # per-channel offset, 0-255 scale
        out = img.float() + shift.view(3, 1, 1)
        if img.dtype == torch.uint8:
            return out.round_().clamp_(0, 255).to(torch.uint8)
        return out.to(img.dtype)


def build_train_transform(*, aug: str, crop_size: int, short_side: Sequence[int] = (256, 480), pad: int = 4,
                          hflip: bool = True, color_aug: str = "", pca_std: float = 0.1,
                          color_jitter: float = 0.4, randaugment: str = "",
                          pixel_mean: Sequence[float] = (124.0, 116.0, 104.0)) -> Callable:
    ops = []
    if aug == "scale":
        lo, hi = int(short_side[0]), int(short_side[-1])
        if not 0 < lo <= hi:
            raise ValueError(f"CLS.INPUT.TRAIN_SHORT_SIDE must be (low, high) with 0 < low <= high; got {tuple(short_side)}")
        ops += [T.RandomShortestSize(list(range(lo, hi + 1)), antialias=True),
                T.RandomCrop(crop_size, pad_if_needed=True)]
    elif aug == "rrc":
        ops += [T.RandomResizedCrop(crop_size, antialias=True)]
    elif aug == "pad_crop_flip":
        ops += [T.RandomCrop(crop_size, padding=pad, fill=tuple(int(round(m)) for m in pixel_mean))]
    else:
        raise ValueError(f"CLS.INPUT.TRAIN_AUG must be 'scale', 'rrc' or 'pad_crop_flip'; got {aug!r}")
    if hflip:
        ops.append(T.RandomHorizontalFlip())
    if randaugment:
        from timm.data.auto_augment import rand_augment_transform  # timm's RandAugment works on PIL images

        ops.append(rand_augment_transform(randaugment, {"img_mean": tuple(int(round(m)) for m in pixel_mean)}))
    if color_aug == "jitter":
        ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    ops.append(T.PILToTensor())
    if color_aug == "pca":
        ops.append(PCALighting(pca_std))
    elif color_aug not in ("", "jitter"):
        raise ValueError(f"CLS.INPUT.COLOR_AUG must be 'pca', 'jitter' or ''; got {color_aug!r}")
    return T.Compose(ops)


def pca_lighting_batch(images: torch.Tensor, alpha: torch.Tensor, eigval: torch.Tensor = _IMAGENET_EIGVAL,
                       eigvec: torch.Tensor = _IMAGENET_EIGVEC) -> torch.Tensor:
    """PCALighting for a whole batch at once (on the device): image i gets the per-channel offset
    255 * eigvec @ (alpha[i] * eigval); uint8 in, uint8 out (rounded and clamped, as PCALighting), float
    stays float. `alpha` is [B, 3], N(0, std) draws."""
    if images.dim() != 4 or images.shape[1] != 3 or alpha.shape != (images.shape[0], 3):
        raise ValueError(f"pca_lighting_batch needs images [B, 3, H, W] and alpha [B, 3]; got {tuple(images.shape)} "
                         f"and {tuple(alpha.shape)}")
    eigval, eigvec = eigval.to(images.device), eigvec.to(images.device)
    shift = 255.0 * (alpha.to(images.device, torch.float32) * eigval) @ eigvec.T          # [B, 3]
    out = images.float() + shift[:, :, None, None]
    if images.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(images.dtype)


class _TenCrop(torch.nn.Module):
    """[3, H, W] -> [10, 3, s, s] (a module, not a lambda, so DataLoader workers can pickle it)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return ten_crop(img, self.size)


def build_test_transform(*, crop_size: int, short_side: int = 256, ten_crops: bool = False) -> Callable:
    ops = []
    if short_side:
        ops.append(T.Resize(short_side, antialias=True))
    ops.append(T.PILToTensor())
    if ten_crops:
        ops.append(_TenCrop(crop_size))
    else:
        ops.append(T.CenterCrop(crop_size))
    return T.Compose(ops)


def transforms_from_config(cfg, train: bool, ten_crops: Optional[bool] = None) -> Callable:
    i = cfg.CLS.INPUT
    if train:
        return build_train_transform(aug=i.TRAIN_AUG, crop_size=i.CROP_SIZE, short_side=i.TRAIN_SHORT_SIDE,
                                     pad=i.PAD, hflip=i.HFLIP, color_aug=i.COLOR_AUG, pca_std=i.PCA_STD,
                                     color_jitter=i.COLOR_JITTER, randaugment=i.RANDAUGMENT,
                                     pixel_mean=cfg.MODEL.PIXEL_MEAN)
    return build_test_transform(crop_size=i.CROP_SIZE, short_side=i.TEST_SHORT_SIDE,
                                ten_crops=cfg.CLS.TEST.TEN_CROP if ten_crops is None else ten_crops)
