"""Bringing weights into a backbone: torchvision and timm ResNet state dicts, and our own checkpoints.

Our ResNet uses torchvision's parameter names, so a torchvision (or architecture-matching timm) ResNet
state dict loads as it is; what this module adds is finding the state dict inside the various checkpoint
layouts, dropping the parts the target does not have (a classifier head, stages a backbone does not
build), and failing loudly, naming the file and the keys, when the architectures differ.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Mapping, Optional, Union

import torch
import torch.nn as nn

__all__ = ["extract_state_dict", "load_backbone_weights", "load_state_dict_checked", "BACKBONE_PREFIXES"]

# Prefixes under which a backbone's weights sit in detection checkpoints: ours, torchvision's
# (`backbone.body.`), Detectron2's (`backbone.bottom_up.`), and DDP's `module.`.
BACKBONE_PREFIXES = ("module.", "backbone.body.", "backbone.bottom_up.", "backbone.")


def extract_state_dict(obj, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The backbone state dict inside a raw state dict, a resdet checkpoint or a backbone export."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source}: expected a state dict (names -> tensors), or a checkpoint holding one "
                         f"under 'model' or 'state_dict'")
    sd = dict(obj)
    for prefix in BACKBONE_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def _droppable(key: str, model: nn.Module) -> bool:
    """Keys a checkpoint may carry that the target legitimately lacks."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    if key in own:
        return False
    if key.startswith("fc.") and not hasattr(model, "fc"):
        return True  # a classifier's head, loaded into a feature backbone
    m = re.match(r"layer(\d+)\.", key)
    if m and not hasattr(model, f"layer{m.group(1)}"):
        return True  # a stage the backbone does not build (out_features stops earlier)
    return False


def load_state_dict_checked(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Load strictly, except for droppable keys and BN's num_batches_tracked; errors name the keys."""
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if not _droppable(k, model)}
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    # BatchNorm's step counter is not a weight: FrozenBN has none, and fresh BN ones start at zero anyway
    unexpected = [k for k in sd if k not in own and not k.endswith("num_batches_tracked")]
    sd = {k: v for k, v in sd.items() if k in own}
    mismatched = [f"{k}: {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        def show(keys):
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = [f"{name}: {show(keys)}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if keys]
        raise ValueError(f"{source} does not fit {type(model).__name__} (different architecture or variant?) -- "
                         + "; ".join(parts))
    model.load_state_dict(sd, strict=False)


def load_backbone_weights(model: nn.Module, weights: Union[str, Mapping], expected_name: Optional[str] = None,
                          expected_variant: Optional[str] = None) -> nn.Module:
    """Load a file path or an in-memory checkpoint into `model` (a resdet ResNet or timm backbone).

    A backbone export from train_cls records the registry name and variant it was trained with; they must
    match `expected_name` / `expected_variant` when those are given.
    """
    source = weights if isinstance(weights, str) else "in-memory checkpoint"
    if isinstance(weights, str):
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"Backbone weights not found: '{weights}'")
        try:
            weights = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated file, not a torch file, pickled objects we refuse to run
            raise ValueError(f"Could not read backbone weights '{source}': {e}") from e
    meta = weights.get("meta", {}) if isinstance(weights, Mapping) else {}
    if isinstance(meta, Mapping):
        for key, expected in (("name", expected_name), ("variant", expected_variant)):
            got = meta.get(key)
            if expected is not None and got is not None and got != expected:
                raise ValueError(f"{source} holds a '{got}' backbone ({key}); the config asks for '{expected}'")
    target = getattr(model, "model", model)  # TimmBackbone wraps the timm module
    load_state_dict_checked(target, extract_state_dict(weights, source), source)
    return model
