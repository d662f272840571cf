"""The backbone registry: every model of the paper under a name, plus timm models under "timm/<name>".

    build_backbone("resnet50")                                   # torchvision-equal classifier
    build_backbone("resnet50", variant="v1", out_features=("res2", "res3", "res4", "res5"))
    build_backbone("cifar_resnet110")                           # the paper's 6n+2 CIFAR net, option A
    build_backbone("timm/resnet50d", out_features=("res4", "res5"), norm="FrozenBN")
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from fvcore.common.registry import Registry

from .resnet import ResNet

__all__ = ["BACKBONE_REGISTRY", "build_backbone", "list_backbones", "backbone_kwargs_from_config",
           "backbone_from_config", "VARIANTS"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = "Backbone builders: name -> function(**kwargs) returning a Backbone."

VARIANTS = ("v1", "v1.5")
TIMM_PREFIX = "timm/"

# The paper's Table 1 (ImageNet) and Section 4.2 (CIFAR-10: 6n+2 layers, n blocks per stage).
_IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_CIFAR_RESNETS = (20, 32, 44, 56, 110, 1202)
_CIFAR_PLAINS = (20, 32, 44, 56, 110)


def _check_variant(variant: str) -> bool:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS} ('v1': stride in the 1x1 conv, as in the paper; "
                         f"'v1.5': stride in the 3x3 conv, as in torchvision); got '{variant}'")
    return variant == "v1"


def _imagenet_builder(depth: int, residual: bool):
    block, depths = _IMAGENET_DEPTHS[depth]

    def build(*, variant: str = "v1.5", shortcut: str = "", num_classes: Optional[int] = 1000, **kwargs):
        return ResNet(block, depths, stem="imagenet", stride_in_1x1=_check_variant(variant),
                      shortcut=shortcut or "B", residual=residual, num_classes=num_classes, **kwargs)

    kind = "ResNet" if residual else "plain net"
    build.__doc__ = f"The paper's {depth}-layer ImageNet {kind} ({block} blocks {depths})."
    return build


def _cifar_builder(depth: int, residual: bool):
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR nets have 6n+2 layers; got {depth}")
    n = (depth - 2) // 6

    def build(*, variant: str = "v1.5", shortcut: str = "", num_classes: Optional[int] = 10, **kwargs):
        _check_variant(variant)  # basic blocks only: the variant changes nothing, but must be valid
        return ResNet("basic", (n, n, n), widths=(16, 32, 64), stem="cifar", shortcut=shortcut or "A",
                      residual=residual, num_classes=num_classes, **kwargs)

    kind = "ResNet" if residual else "plain net"
    build.__doc__ = f"The paper's {depth}-layer CIFAR-10 {kind} (6n+2 with n={n}, 16-32-64 filters)."
    return build


for _d in _IMAGENET_DEPTHS:
    BACKBONE_REGISTRY._do_register(f"resnet{_d}", _imagenet_builder(_d, residual=True))
    BACKBONE_REGISTRY._do_register(f"plain{_d}", _imagenet_builder(_d, residual=False))
for _d in _CIFAR_RESNETS:
    BACKBONE_REGISTRY._do_register(f"cifar_resnet{_d}", _cifar_builder(_d, residual=True))
for _d in _CIFAR_PLAINS:
    BACKBONE_REGISTRY._do_register(f"cifar_plain{_d}", _cifar_builder(_d, residual=False))


def list_backbones() -> List[str]:
    """Registered names (timm models are reached as 'timm/<any timm model name>')."""
    return sorted(name for name, _ in BACKBONE_REGISTRY)


def build_backbone(name: str, **kwargs):
    """Build a registered backbone by name; keyword arguments go to its builder (see resnet.ResNet)."""
    if name.startswith(TIMM_PREFIX):
        from .timm_backbone import TimmBackbone

        return TimmBackbone(name[len(TIMM_PREFIX):], **kwargs)
    if name not in BACKBONE_REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list_backbones(), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise KeyError(f"No backbone named '{name}'.{hint} Known: {list_backbones()} and 'timm/<model>'.")
    return BACKBONE_REGISTRY.get(name)(**kwargs)


def backbone_kwargs_from_config(cfg, out_features: Optional[Sequence[str]] = None, num_classes=None) -> dict:
    """MODEL.BACKBONE.* as keyword arguments for build_backbone (name excluded)."""
    b = cfg.MODEL.BACKBONE
    kwargs = dict(variant=b.VARIANT, norm=b.NORM, freeze_at=b.FREEZE_AT)
    if b.SHORTCUT:
        kwargs["shortcut"] = b.SHORTCUT
    if b.NORM == "GN":
        kwargs["gn_groups"] = b.GN_GROUPS
    if out_features is not None:
        kwargs["out_features"] = tuple(out_features)
        kwargs["num_classes"] = None
    elif num_classes is not None:
        kwargs["num_classes"] = num_classes
    return kwargs


def backbone_from_config(cfg, for_detection: bool = True, num_classes: Optional[int] = None):
    """Build MODEL.BACKBONE.NAME: with OUT_FEATURES for detection, or as a classifier with num_classes.

    Weights named by MODEL.BACKBONE.WEIGHTS are loaded (see resdet.backbones.weights).
    """
    out = cfg.MODEL.BACKBONE.OUT_FEATURES if for_detection else None
    model = build_backbone(cfg.MODEL.BACKBONE.NAME, **backbone_kwargs_from_config(cfg, out, num_classes))
    if cfg.MODEL.BACKBONE.WEIGHTS:
        from .weights import load_backbone_weights

        load_backbone_weights(model, cfg.MODEL.BACKBONE.WEIGHTS, expected_name=cfg.MODEL.BACKBONE.NAME,
                              expected_variant=cfg.MODEL.BACKBONE.VARIANT)
    return model
