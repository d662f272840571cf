"""The backbone registry: every model of the paper under a name, plus timm models under "timm/<name>".

    build_backbone("resnet50")                                   # torchvision-equal classifier
    build_backbone("resnet50", variant="v1", out_features=("res2", "res3", "res4", "res5"))
    build_backbone("cifar_resnet110")                           # the paper's 6n+2 CIFAR net, option A
    build_backbone("timm/resnet50d", out_features=("res4", "res5"), norm="FrozenBN")
"""
from __future__ import annotations

import logging
import os
import re
from typing import List, Optional, Sequence, Tuple

from fvcore.common.registry import Registry

from .resnet import ResNet
from .weights import backbone_meta, extract_state_dict, load_backbone_weights, read_weights_file

__all__ = ["BACKBONE_REGISTRY", "build_backbone", "list_backbones", "backbone_kwargs_from_config",
           "backbone_from_config", "describe_resnet_state_dict", "resolve_backbone_options",
           "resolve_backbone_config", "missing_backbone_weights_message", "VARIANTS", "AUTO"]

logger = logging.getLogger(__name__)

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = "Backbone builders: name -> function(**kwargs) returning a Backbone."

VARIANTS = ("v1", "v1.5")
AUTO = "auto"  # MODEL.BACKBONE.VARIANT: follow what the backbone weights record
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

    Weights named by MODEL.BACKBONE.WEIGHTS are loaded (see resdet.backbones.weights); VARIANT "auto" and
    SHORTCUT "" follow what those weights record (see `resolve_backbone_options`). A missing weights file
    is an error that says how to make it, unless MODEL.WEIGHTS (loaded over the whole model afterwards)
    makes it unnecessary.
    """
    out = cfg.MODEL.BACKBONE.OUT_FEATURES if for_detection else None
    weights = _backbone_weights(cfg)
    variant, shortcut, _ = resolve_backbone_options(cfg, weights)
    kwargs = backbone_kwargs_from_config(cfg, out, num_classes)
    kwargs.update(variant=variant, **({"shortcut": shortcut} if shortcut else {}))
    model = build_backbone(cfg.MODEL.BACKBONE.NAME, **kwargs)
    if weights is not None:
        b = cfg.MODEL.BACKBONE
        load_backbone_weights(model, weights, expected_name=b.NAME,
                              expected_variant=None if b.VARIANT == AUTO else b.VARIANT,
                              expected_shortcut=b.SHORTCUT or None)
    return model


def _backbone_weights(cfg):
    path = cfg.MODEL.BACKBONE.WEIGHTS
    if not path:
        return None
    if os.path.isfile(path):
        return read_weights_file(path)
    if cfg.MODEL.WEIGHTS:  # the whole model's weights replace the backbone's anyway
        logger.info("MODEL.BACKBONE.WEIGHTS '%s' does not exist; not needed, MODEL.WEIGHTS '%s' is loaded over "
                    "the whole model", path, cfg.MODEL.WEIGHTS)
        return None
    raise FileNotFoundError(missing_backbone_weights_message(cfg))


# torchvision's ImageNet classifiers (weights "IMAGENET1K_V1"), the files its model zoo serves
_TORCHVISION_FILES = {"resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth",
                      "resnet50": "resnet50-0676ba61.pth", "resnet101": "resnet101-63fe2227.pth",
                      "resnet152": "resnet152-394f9c45.pth"}


def missing_backbone_weights_message(cfg) -> str:
    """MODEL.BACKBONE.WEIGHTS names a file that is not there: the two ways to make it."""
    b = cfg.MODEL.BACKBONE
    depth = b.NAME[len("resnet"):] if b.NAME.startswith("resnet") else ""
    pretrain = f"configs/imagenet_r{depth}.yaml" if depth in ("50", "101", "152") else "configs/imagenet_r50.yaml"
    tv = _TORCHVISION_FILES.get(b.NAME, "resnet50-0676ba61.pth")
    return (f"MODEL.BACKBONE.WEIGHTS '{b.WEIGHTS}' does not exist. Make it one of two ways:\n"
            f"  1. pretrain on ImageNet (the paper's recipe; its backbone_final.pth is the file):\n"
            f"       python tools/train_cls.py {pretrain} OUTPUT_DIR {os.path.dirname(b.WEIGHTS) or '.'}\n"
            f"  2. convert torchvision's ImageNet classifier ({tv} from its model zoo):\n"
            f"       python tools/convert_weights.py {tv} {b.WEIGHTS} --backbone\n"
            f"or set MODEL.BACKBONE.WEIGHTS to a file you have (or to \"\" to start from random weights).")


def resolve_backbone_options(cfg, weights=None, checkpoint: str = "") -> Tuple[str, str, str]:
    """(variant, shortcut, where they came from) for MODEL.BACKBONE: explicit config values win; VARIANT
    "auto" and SHORTCUT "" follow the backbone weights' own description (a self-describing file's meta,
    or the blocks of a plain torchvision/timm state dict for the shortcut), then the config stored in
    MODEL.WEIGHTS' checkpoint; otherwise "v1.5" (torchvision's and timm's ResNets) and the family's
    shortcut ("" = B for ImageNet nets, A for CIFAR ones).

    `weights` is the already-read MODEL.BACKBONE.WEIGHTS object (read here when None and the file exists);
    `checkpoint` a whole-model checkpoint that will be loaded over the model (default MODEL.WEIGHTS), e.g.
    the one a resumed run continues from.
    """
    b = cfg.MODEL.BACKBONE
    if weights is None and b.WEIGHTS and os.path.isfile(b.WEIGHTS):
        weights = read_weights_file(b.WEIGHTS)
    variant = None if b.VARIANT == AUTO else b.VARIANT
    shortcut = b.SHORTCUT or None
    source = "config"
    if weights is not None and (variant is None or shortcut is None):
        meta = backbone_meta(weights)
        if not meta.get("shortcut") and not b.NAME.startswith(TIMM_PREFIX):
            try:
                meta["shortcut"] = describe_resnet_state_dict(weights)["shortcut"]
            except ValueError:
                pass  # not an ImageNet ResNet's keys: nothing to read (CIFAR nets, timm models)
        if variant is None and meta.get("variant"):
            variant, source = meta["variant"], f"MODEL.BACKBONE.WEIGHTS '{b.WEIGHTS}'"
        if shortcut is None and meta.get("shortcut"):
            shortcut = meta["shortcut"]
    checkpoint = checkpoint or cfg.MODEL.WEIGHTS
    if variant is None and checkpoint and os.path.isfile(checkpoint):
        saved = _checkpoint_backbone_config(checkpoint)
        if saved.get("VARIANT") in VARIANTS:
            variant, source = saved["VARIANT"], f"the config saved in checkpoint '{checkpoint}'"
            shortcut = shortcut or saved.get("SHORTCUT") or None
    if variant is None:
        variant, source = "v1.5", "default (no weights record a variant)"
    return variant, shortcut or "", source


def _checkpoint_backbone_config(path: str) -> dict:
    """MODEL.BACKBONE of the resolved config a resdet checkpoint carries (YAML text under "config")."""
    import yaml

    try:
        text = read_weights_file(path, "Checkpoint").get("config")
        node = yaml.safe_load(text) if isinstance(text, str) else {}
        return dict(node.get("MODEL", {}).get("BACKBONE", {}))
    except (ValueError, AttributeError, yaml.YAMLError):
        return {}


def resolve_backbone_config(cfg, checkpoint: str = ""):
    """(cfg, note): a copy of cfg with MODEL.BACKBONE.VARIANT and SHORTCUT resolved (see
    `resolve_backbone_options`), so that the saved config.yaml and checkpoints say which backbone was
    built, and a line saying what "auto" became and why ("" when nothing changed)."""
    variant, shortcut, source = resolve_backbone_options(cfg, checkpoint=checkpoint)
    b = cfg.MODEL.BACKBONE
    if (variant, shortcut) == (b.VARIANT, b.SHORTCUT):
        return cfg, ""
    note = (f"MODEL.BACKBONE.VARIANT {b.VARIANT} -> {variant} (from {source})"
            + (f", SHORTCUT '{b.SHORTCUT}' -> {shortcut}" if shortcut != b.SHORTCUT else ""))
    out = cfg.clone()
    out.defrost()
    out.MODEL.BACKBONE.VARIANT, out.MODEL.BACKBONE.SHORTCUT = variant, shortcut
    if cfg.is_frozen():
        out.freeze()
    return out, note


def describe_resnet_state_dict(sd) -> dict:
    """Registry name and shortcut option of a torchvision-named ImageNet ResNet state dict, from its keys.

    Blocks per stage and the presence of `conv3` give the depth (the paper's Table 1); projection shortcuts
    (`downsample`) on the first block of some stages only are option B, on every block option C, none
    option A. Where the stride sits (the variant) does not show in the shapes, so it is not returned.
    """
    sd = extract_state_dict(sd)
    blocks = {}
    for key in sd:
        m = re.match(r"layer(\d)\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    counts = tuple(len(blocks.get(i, ())) for i in (1, 2, 3, 4))
    block = "bottleneck" if any(".conv3." in k for k in sd) else "basic"
    depth = next((d for d, spec in _IMAGENET_DEPTHS.items() if spec == (block, counts)), None)
    if depth is None:
        raise ValueError(f"not one of the paper's ImageNet ResNets: {counts} {block} blocks per stage "
                         f"(known: {sorted(_IMAGENET_DEPTHS)})")
    every = {(s, b) for s, bs in blocks.items() for b in bs}
    projected = {(s, b) for s, b in every if f"layer{s}.{b}.downsample.0.weight" in sd}
    shortcut = "C" if projected == every else ("A" if not projected else "B")
    return {"name": f"resnet{depth}", "shortcut": shortcut}
