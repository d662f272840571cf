"""An image classifier: input normalisation + a registry backbone built as a classifier (logits).

`ImageClassifier(backbone, pixel_mean, pixel_std)` takes images as float or uint8 [N, 3, H, W] in the
0-255 range (RGB) and returns logits [N, num_classes]. Normalising inside the model means every data
path (on-device CIFAR, DataLoader workers, ten-crop) feeds the same raw pixels, and an exported model
carries its own preprocessing. With `mean_image_size=(H, W)` it subtracts a per-pixel mean image (the
paper's CIFAR preprocessing) held in the persistent buffer `pixel_mean_image` [1, 3, H, W]: it starts as
pixel_mean everywhere, training sets it from the data (`set_mean_image`), checkpoints carry it.

`export_backbone(model, path, name, variant, shortcut, norm)` writes what `train_det` takes through
MODEL.BACKBONE.WEIGHTS: the backbone's state dict (torchvision parameter names, the classifier's `fc`
dropped) under "state_dict", and its registry name and options under "meta" (name, variant, shortcut,
norm), which `resdet.backbones.weights.load_backbone_weights` checks against the detection config.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from resdet import backbones as _backbones
from resdet.backbones.weights import BACKBONE_EXPORT_FORMAT, save_backbone_weights

__all__ = ["ImageClassifier", "build_classifier", "export_backbone", "load_backbone_export",
           "BACKBONE_EXPORT_FORMAT"]

class ImageClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, *, pixel_mean: Sequence[float], pixel_std: Sequence[float],
                 mean_image_size: Optional[Tuple[int, int]] = None):
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"pixel_mean {list(pixel_mean)} and pixel_std {list(pixel_std)} differ in length")
        self.backbone = backbone
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.pixel_mean_image: Optional[torch.Tensor]
        if mean_image_size is not None:
            h, w = (int(v) for v in mean_image_size)
            # persistent: it comes from the training data, so the checkpoint must carry it
            self.register_buffer("pixel_mean_image", self.pixel_mean.expand(1, -1, h, w).clone())
        else:
            self.pixel_mean_image = None

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        size = (cfg.CLS.INPUT.CROP_SIZE,) * 2 if cfg.CLS.DATA.PER_PIXEL_MEAN else None
        return {"pixel_mean": list(cfg.MODEL.PIXEL_MEAN), "pixel_std": list(cfg.MODEL.PIXEL_STD),
                "mean_image_size": size}

    @torch.no_grad()
    def set_mean_image(self, mean: torch.Tensor) -> None:
        """Set the per-pixel mean [C, H, W] (0-255) that forward() subtracts."""
        if self.pixel_mean_image is None:
            raise ValueError("this ImageClassifier subtracts a per-channel mean; build it with mean_image_size "
                             "(CLS.DATA.PER_PIXEL_MEAN True) to use a mean image")
        if tuple(mean.shape) != tuple(self.pixel_mean_image.shape[1:]):
            raise ValueError(f"mean image must be {list(self.pixel_mean_image.shape[1:])}; got {list(mean.shape)}")
        self.pixel_mean_image.copy_(mean.to(self.pixel_mean_image))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != self.pixel_mean.shape[1]:
            raise ValueError(f"ImageClassifier expects images [N, {self.pixel_mean.shape[1]}, H, W]; "
                             f"got shape {tuple(images.shape)}")
        mean = self.pixel_mean
        if self.pixel_mean_image is not None:
            mean = self.pixel_mean_image
            if images.shape[-2:] != mean.shape[-2:]:
                raise ValueError(f"this ImageClassifier subtracts a {tuple(mean.shape[-2:])} mean image; got images "
                                 f"of {tuple(images.shape[-2:])} (CLS.DATA.PER_PIXEL_MEAN needs fixed-size inputs)")
        x = (images.float() - mean) / self.pixel_std
        if images.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # keep the layout the trainer chose
        return self.backbone(x)


def build_classifier(cfg) -> ImageClassifier:
    """MODEL.BACKBONE.* (registry name, variant, shortcut, norm; MODEL.BACKBONE.WEIGHTS if set) and
    MODEL.CLASSIFIER.NUM_CLASSES -> an ImageClassifier."""
    backbone = _backbones.backbone_from_config(cfg, for_detection=False,
                                               num_classes=cfg.MODEL.CLASSIFIER.NUM_CLASSES)
    return ImageClassifier(backbone, **ImageClassifier.from_config(cfg))


def export_backbone(model: nn.Module, path: str, *, name: str, variant: str, shortcut: str, norm: str,
                    extra: Optional[Dict[str, Any]] = None) -> str:
    """Write the backbone's weights (without the classifier's fc) and its registry options, atomically."""
    model = getattr(model, "module", model)  # DDP
    model = getattr(model, "_orig_mod", model)  # torch.compile
    backbone = model.backbone if isinstance(model, ImageClassifier) else model
    meta = {"name": name, "variant": variant, "shortcut": shortcut, "norm": norm, **(extra or {})}
    return save_backbone_weights(backbone.state_dict(), path, meta)


def load_backbone_export(path: str) -> Dict[str, Any]:
    """Read an `export_backbone` file, checking its format; errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Backbone weights file '{path}' does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"Cannot read backbone weights '{path}': {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict) or obj.get("format") != BACKBONE_EXPORT_FORMAT:
        raise ValueError(f"'{path}' is not a resdet backbone export (expected format {BACKBONE_EXPORT_FORMAT!r})")
    return obj
