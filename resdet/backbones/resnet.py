"""The ResNet family of He, Zhang, Ren and Sun (2015), ImageNet and CIFAR-10 variants, and plain nets.

Options the paper and its descendants vary, all as keyword arguments:
- block: "basic" (two 3x3 convs; ResNet-18/34, CIFAR nets) or "bottleneck" (1x1-3x3-1x1; ResNet-50+).
- stride_in_1x1: where a bottleneck stage's stride-2 sits. True is the paper's and MSRA's original
  ("v1"); False puts it in the 3x3 conv, as torchvision does ("v1.5", ~0.23 GFLOPs more, ~0.5% better).
- shortcut: the paper's Table 3 options. "A": identity, with zero-padded extra channels and stride-2
  subsampling where the shape changes (no parameters). "B": a projection (1x1 conv + norm) where the shape
  changes, identity elsewhere. "C": a projection on every block.
- residual=False gives the paper's "plain" counterpart: the same layers with no shortcut at all.

Parameter names follow torchvision's ResNet (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`,
`fc`), so torchvision and timm state dicts load without renaming. We do not subclass torchvision's ResNet:
it has no option A/C, no plain nets, no CIFAR stem and no multi-scale outputs.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Backbone, ShapeSpec
from .norms import freeze_norms, get_norm

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "ZeroPadShortcut", "SHORTCUTS"]

SHORTCUTS = ("A", "B", "C")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by the stride and append zero channels; no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A shortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads dimensions from the last backwards: (W, W, H, H, C_before, C_after)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


def _make_shortcut(cin, cout, stride, shortcut, residual, norm_layer) -> Optional[nn.Module]:
    """None means identity (or, for plain nets, no shortcut at all)."""
    if not residual:
        return None
    changes_shape = stride != 1 or cin != cout
    if shortcut == "C" or (shortcut == "B" and changes_shape):
        return nn.Sequential(_conv1x1(cin, cout, stride), norm_layer(cout))
    if shortcut == "A" and changes_shape:
        return ZeroPadShortcut(cin, cout, stride)
    return None


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets)."""

    def __init__(self, cin, width, stride, *, norm_layer, shortcut="B", residual=True, stride_in_1x1=False):
        super().__init__()
        cout = width
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = norm_layer(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = norm_layer(cout)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample = _make_shortcut(cin, cout, stride, shortcut, residual, norm_layer)
        self.out_channels = cout

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4); the stride sits in the first 1x1 (v1) or in the 3x3 (v1.5)."""

    expansion = 4

    def __init__(self, cin, width, stride, *, norm_layer, shortcut="B", residual=True, stride_in_1x1=False):
        super().__init__()
        cout = width * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv1x1(cin, width, s1)
        self.bn1 = norm_layer(width)
        self.conv2 = _conv3x3(width, width, s3)
        self.bn2 = norm_layer(width)
        self.conv3 = _conv1x1(width, cout)
        self.bn3 = norm_layer(cout)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample = _make_shortcut(cin, cout, stride, shortcut, residual, norm_layer)
        self.out_channels = cout

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(Backbone):
    """A ResNet (or plain net) that is a classifier (`out_features=None`) or a multi-scale backbone.

    Args:
        block: "basic" or "bottleneck".
        depths: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50 or (3, 3, 3) for CIFAR ResNet-20.
        widths: base width of each stage (a bottleneck stage outputs 4x this).
        stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool, stride 4) or "cifar" (one 3x3 conv, stride 1).
        stride_in_1x1: bottleneck stride position (True: v1, False: v1.5).
        shortcut: "A", "B" or "C" (see the module docstring).
        residual: False builds the plain counterpart.
        norm: "BN", "FrozenBN", "SyncBN" or "GN"; gn_groups for GN.
        num_classes: size of the linear head when used as a classifier.
        out_features: names ("stem", "res2", ...) to return as a dict instead of logits; stages after the
            last named one are not built.
        freeze_at: 0 freezes nothing, 1 the stem, k > 1 the stem and res2..res{k}; frozen parts get
            requires_grad=False and their BatchNorms become FrozenBatchNorm2d.
        zero_init_residual: start each block's last norm scale at 0 (each block begins as identity).
    """

    def __init__(
        self,
        block: str,
        depths: Sequence[int],
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: str = "imagenet",
        stride_in_1x1: bool = False,
        shortcut: str = "B",
        residual: bool = True,
        norm: str = "BN",
        gn_groups: int = 32,
        num_classes: Optional[int] = 1000,
        out_features: Optional[Sequence[str]] = None,
        freeze_at: int = 0,
        zero_init_residual: bool = False,
        in_channels: int = 3,
    ):
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"block must be one of {list(_BLOCKS)}; got '{block}'")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS} (the paper's Table 3); got '{shortcut}'")
        if len(depths) != len(widths):
            raise ValueError(f"depths {tuple(depths)} and widths {tuple(widths)} must have the same length")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar'; got '{stem}'")
        stage_names = [f"res{i + 2}" for i in range(len(depths))]
        valid = ["stem"] + stage_names
        if out_features is not None:
            bad = [n for n in out_features if n not in valid]
            if bad or not out_features:
                raise ValueError(f"out_features {list(out_features)} must be a non-empty subset of {valid}")
        if not 0 <= freeze_at <= len(depths) + 1:
            raise ValueError(f"freeze_at must be in [0, {len(depths) + 1}]; got {freeze_at}")
        norm_layer = get_norm(norm, gn_groups)
        block_cls = _BLOCKS[block]
        self.in_channels = in_channels
        self.out_features = list(out_features) if out_features is not None else None
        # what the backbone is, in the registry's terms (written into backbone exports)
        self.shortcut = shortcut
        self.variant = "v1" if stride_in_1x1 else "v1.5"

        stem_width = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            stride = 4
        else:
            self.conv1 = _conv3x3(in_channels, stem_width)
            self.maxpool = nn.Identity()
            stride = 1
        self.bn1 = norm_layer(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self._out_shapes["stem"] = ShapeSpec(stem_width, stride)

        # index in `valid` of the deepest stage to build (stage i is valid[i + 1])
        last = max(valid.index(n) for n in self.out_features) if self.out_features else len(valid) - 1
        cin = stem_width
        self.stage_names = []
        for i, (depth, width) in enumerate(zip(depths, widths)):
            if i + 1 > last:
                break
            first_stride = 1 if i == 0 else 2
            blocks = []
            for j in range(depth):
                b = block_cls(
                    cin, width, first_stride if j == 0 else 1, norm_layer=norm_layer, shortcut=shortcut,
                    residual=residual, stride_in_1x1=stride_in_1x1,
                )
                blocks.append(b)
                cin = b.out_channels
            stride *= first_stride
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.stage_names.append(stage_names[i])
            self._out_shapes[stage_names[i]] = ShapeSpec(cin, stride)

        if self.out_features is None:
            if not num_classes:
                raise ValueError("a classifier needs num_classes > 0 (or give out_features for a backbone)")
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, num_classes)
        self.num_classes = num_classes if self.out_features is None else None
        self._init_weights(zero_init_residual)
        self.freeze_at = freeze_at
        self._freeze(freeze_at)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # He et al. 2015 ("Delving deep into rectifiers") init, fan-out mode as in torchvision.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)) and m.residual:
                    nn.init.zeros_(m.last_norm().weight)

    def stages(self) -> Dict[str, nn.Module]:
        """Stage name -> module, in order ("stem" holds conv1 and bn1)."""
        out = {"stem": nn.ModuleList([self.conv1, self.bn1])}
        for i, name in enumerate(self.stage_names):
            out[name] = getattr(self, f"layer{i + 1}")
        return out

    def _freeze(self, freeze_at: int) -> None:
        if freeze_at <= 0:
            return
        if freeze_at >= 1:
            for p in list(self.conv1.parameters()) + list(self.bn1.parameters()):
                p.requires_grad_(False)
            self.bn1 = freeze_norms(self.bn1)
        for i in range(1, min(freeze_at, len(self.stage_names) + 1)):
            name = f"layer{i}"
            layer = freeze_norms(getattr(self, name))
            for p in layer.parameters():
                p.requires_grad_(False)
            setattr(self, name, layer)

    def forward(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape [N, {self.in_channels}, H, W]; got {tuple(x.shape)}")
        outputs = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        want = self.out_features
        if want is not None and "stem" in want:
            outputs["stem"] = x
        for i, name in enumerate(self.stage_names):
            x = getattr(self, f"layer{i + 1}")(x)
            if want is not None and name in want:
                outputs[name] = x
        if want is None:
            return self.fc(torch.flatten(self.avgpool(x), 1))
        return outputs
