"""timm models as resdet backbones, with the same output contract as our ResNets.

timm's `features_only=True` already exposes each reduction level with its channels and stride; we only
name the levels the way our ResNets do (stride 4 -> "res2", 8 -> "res3", 16 -> "res4", 32 -> "res5",
stride 2 -> "res1"), apply our norm and freezing options, and check the arguments.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import timm
import torch
import torch.nn as nn

from .base import Backbone, ShapeSpec
from .norms import freeze_norms

__all__ = ["TimmBackbone"]


def _level_name(stride: int) -> str:
    return f"res{int(round(math.log2(stride)))}"


class TimmBackbone(Backbone):
    """`timm.create_model(model_name, features_only=True)` under our names, or a timm classifier.

    Args:
        model_name: any timm model name (no "timm/" prefix); never downloads weights.
        out_features: level names to return; None builds the classifier (logits) instead.
        num_classes: classifier classes when out_features is None.
        norm: "BN" (the model's own), "FrozenBN" or "SyncBN"; GN is not offered (timm models fix it).
        freeze_at: as for ResNet: 1 freezes what comes before res2, k > 1 freezes up to res{k}.
        variant, shortcut: accepted for a uniform call signature; timm models fix their architecture, so
            anything but the defaults is an error.
    """

    def __init__(self, model_name: str, *, out_features: Optional[Sequence[str]] = None,
                 num_classes: Optional[int] = 1000, norm: str = "BN", freeze_at: int = 0, variant: str = "v1.5",
                 shortcut: str = "", gn_groups: int = 32, in_channels: int = 3):
        super().__init__()
        if shortcut:
            raise ValueError(f"timm/{model_name}: the shortcut option is fixed by the timm model; got '{shortcut}'")
        if norm not in ("BN", "FrozenBN", "SyncBN"):
            raise ValueError(f"timm/{model_name}: norm must be 'BN', 'FrozenBN' or 'SyncBN'; got '{norm}'")
        if model_name not in timm.list_models():
            raise KeyError(f"timm has no model named '{model_name}'")
        self.in_channels = in_channels
        self.out_features = list(out_features) if out_features is not None else None
        if self.out_features is None:
            self.model = timm.create_model(model_name, pretrained=False, num_classes=num_classes,
                                           in_chans=in_channels)
        else:
            probe = timm.create_model(model_name, pretrained=False, features_only=True, in_chans=in_channels)
            names = [_level_name(r) for r in probe.feature_info.reduction()]
            # the top-level module producing every level (not only the returned ones), for freezing
            self._level_module = {n: m.split(".")[0] for n, m in zip(names, probe.feature_info.module_name())}
            bad = [n for n in self.out_features if n not in names]
            if bad:
                raise ValueError(f"timm/{model_name} offers levels {names}; out_features {bad} are not among them")
            indices = [names.index(n) for n in self.out_features]
            self.model = timm.create_model(model_name, pretrained=False, features_only=True,
                                           out_indices=indices, in_chans=in_channels)
            info = self.model.feature_info
            for name, ch, red in zip(self.out_features, info.channels(), info.reduction()):
                self._out_shapes[name] = ShapeSpec(ch, red)
        if norm == "SyncBN":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if freeze_at > 0:
            self._freeze(freeze_at, norm)
        elif norm == "FrozenBN":
            self.model = freeze_norms(self.model)
        self.num_classes = num_classes if self.out_features is None else None

    def _freeze(self, freeze_at: int, norm: str) -> None:
        if self.out_features is None:
            raise ValueError("freeze_at applies to feature backbones (out_features), not timm classifiers")
        # Children of timm's feature wrapper run in order; find the module that produces each level.
        children = list(self.model.named_children())
        target = "res2" if freeze_at == 1 else f"res{freeze_at}"
        child_names = [n for n, _ in children]
        if self._level_module.get(target) not in child_names:
            raise ValueError(f"freeze_at={freeze_at}: this timm model has no level {target} among its stages "
                             f"(and the backbone must build it to freeze it)")
        stop = child_names.index(self._level_module[target]) + (0 if freeze_at == 1 else 1)
        for name, child in children[:stop]:
            for p in child.parameters():
                p.requires_grad_(False)
            setattr(self.model, name, freeze_norms(child))
        if norm == "FrozenBN":
            self.model = freeze_norms(self.model)

    def forward(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape [N, {self.in_channels}, H, W]; got {tuple(x.shape)}")
        if self.out_features is None:
            return self.model(x)
        return dict(zip(self.out_features, self.model(x)))
