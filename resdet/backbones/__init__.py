"""Backbones: the paper's ResNets and plain nets (ImageNet and CIFAR-10), and timm models, by name."""
from .base import Backbone, ShapeSpec
from .norms import NORMS, freeze_norms, get_norm
from .registry import (BACKBONE_REGISTRY, VARIANTS, backbone_from_config, backbone_kwargs_from_config,
                       build_backbone, list_backbones)
from .resnet import SHORTCUTS, ResNet
from .weights import load_backbone_weights, load_state_dict_checked

__all__ = ["Backbone", "ShapeSpec", "NORMS", "freeze_norms", "get_norm", "BACKBONE_REGISTRY", "VARIANTS",
           "backbone_from_config", "backbone_kwargs_from_config", "build_backbone", "list_backbones",
           "SHORTCUTS", "ResNet", "load_backbone_weights", "load_state_dict_checked"]
